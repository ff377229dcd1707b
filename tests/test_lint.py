"""The suite runs the linters: ruff (style, bugbear, the taming.models ban, formatting), mypy --strict and the
import contracts. To hold more of the repository to one of them, add its folder or package to the list."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# what `ruff format --check` and `mypy --strict` (pyproject.toml's [tool.mypy]) hold to their rules so far
FORMATTED = ["."]
TYPED_PACKAGES = ["bot", "engine", "storage"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing() -> None:
    result = _run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_changes_nothing() -> None:
    result = _run(str(BIN / "ruff"), "format", "--check", *FORMATTED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    # its cache (.mypy_cache, git-ignored) makes a second run take seconds instead of about a minute (all three packages)
    packages = [arg for package in TYPED_PACKAGES for arg in ("-p", package)]
    result = _run(sys.executable, "-m", "mypy", *packages)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts_hold() -> None:
    result = _run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
