"""Engine test fixtures: one torch thread, the tiny preset on the CPU, small images as inputs, and a model
server on 127.0.0.1 with a private model cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import VQGAN_CLIP_Config
from engine.renderer import Renderer
from tests.engine.model_server import ModelServer


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def renderer() -> Renderer:
    """One CPU renderer for the whole session: the tiny models load once."""
    return Renderer("cpu")


@pytest.fixture
def tiny_config() -> VQGAN_CLIP_Config:
    """A seed-style config on the tiny preset, small and fast."""
    return VQGAN_CLIP_Config(
        vqgan_model_name="tiny", clip_model="tiny", output_image_size=[64, 64], num_cuts=4, cuda_device="cpu", seed=1
    )


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    """A 96×48 (2:1) PNG with some structure."""
    y, x = np.mgrid[0:48, 0:96]
    array = np.stack([x * 2, y * 4, (x + y) % 256], axis=-1).astype(np.uint8)
    path = tmp_path / "picture.png"
    Image.fromarray(array, "RGB").save(path)
    return path


@pytest.fixture
def picture2(tmp_path: Path) -> Path:
    """A second, square picture."""
    array = np.full((40, 40, 3), (200, 30, 90), dtype=np.uint8)
    path = tmp_path / "second picture.jpg"
    Image.fromarray(array, "RGB").save(path)
    return path


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
