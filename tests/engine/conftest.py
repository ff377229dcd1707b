"""Engine test fixtures: one torch thread, and a model server on 127.0.0.1 with a private model cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.engine.model_server import ModelServer


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    torch.set_num_threads(1)  # two cores shared by everyone; steadier timings


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh model cache under tmp_path, named by ENGINE_MODEL_DIR, so nothing lands in the user's cache."""
    directory = tmp_path / "models"
    monkeypatch.setenv("ENGINE_MODEL_DIR", str(directory))
    return directory


@pytest.fixture
def model_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelServer]:
    """A real HTTP server on 127.0.0.1; proxies are bypassed so requests never leave the machine."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    with ModelServer() as server:
        yield server
