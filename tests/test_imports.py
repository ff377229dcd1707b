"""The product packages (bot, engine, storage) are built of small modules that import on their own, in any order,
without cycles or each other's private names; tests share helpers through tests/support only."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "engine", "storage")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60  # longer needs its reason in a comment on the line above the def (or its decorators)
# modules whose private API the engine uses on purpose: torch (NNPACK's convolution, engine.models.speedups;
# tensor rebuilding, engine.models.inert_pickle) and pickle (its Python unpickler, whose opcodes inert_pickle checks)
PRIVATE_API_ALLOWED = {"torch", "pickle", "os"}  # os._exit is public, documented API


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))
MODULES = [_module_name(p) for p in SOURCES if p.name != "__main__.py"]  # __main__ runs its program when imported

# Each module imported after every product module was dropped from sys.modules: what a fresh interpreter
# would see of them, without paying for torch's import once per module.
_IMPORT_EACH_ALONE = """
import importlib, sys, traceback, warnings
warnings.simplefilter("ignore")
packages = ("bot", "engine", "storage")
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in packages]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc(limit=-1).strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-B", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_every_module_imports_on_its_own() -> None:
    result = _python("-c", _IMPORT_EACH_ALONE, *MODULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_seed_video_api_imports_first_in_a_fresh_interpreter() -> None:
    # it used to work only when engine.generate happened to be imported before it
    result = _python("-c", "import engine.generate.video; from engine.generate import video_frames")
    assert result.returncode == 0, result.stderr


def test_no_import_cycle_between_product_modules_lazy_imports_included() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)  # imports inside functions count too
    cycles = [
        (importer, imported)
        for importer in sorted(graph.modules)
        for imported in sorted(graph.find_modules_directly_imported_by(importer))
        if graph.chain_exists(importer=imported, imported=importer)
    ]
    assert not cycles


def test_no_module_uses_another_modules_private_names() -> None:
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
                found += [f"{path}:{node.lineno}: {alias.name}" for alias in node.names if alias.name.startswith("_")]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value.id if isinstance(node.value, ast.Name) else None
                if owner not in {"self", "cls", *PRIVATE_API_ALLOWED}:
                    found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert not found


def test_no_module_is_over_500_lines() -> None:
    sizes = {_module_name(p): len(p.read_text(encoding="utf-8").splitlines()) for p in SOURCES}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES} == {}


def test_a_long_function_says_why_in_a_comment() -> None:
    unexplained = []
    for path in SOURCES:
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            assert node.end_lineno is not None
            if node.end_lineno - node.lineno + 1 <= MAX_FUNCTION_LINES:
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if not lines[first - 2].strip().startswith("#"):
                unexplained.append(f"{_module_name(path)}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert unexplained == []


_TEST_IMPORT = re.compile(r"^\s*(?:from|import)\s+tests\.(?:[\w.]*\.)?(?:test_\w+|conftest)\b", re.MULTILINE)


def test_tests_share_helpers_through_support_never_through_conftest_or_test_modules() -> None:
    found = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if _TEST_IMPORT.search(path.read_text(encoding="utf-8"))
    ]
    assert found == []
