"""The process's renderers behind the seed API: one per device (and model cache), created on first use.

Importing this module does not import torch; the first render does.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.renderer import Renderer

_renderers: dict[tuple[str, str | None, str], Renderer] = {}
_renderers_lock = threading.Lock()


def renderer_for(device: str, model_dir: str | Path | None = None, precision: str = "auto") -> Renderer:
    """The process's renderer for `device` and `precision` (CUDA falls back to the CPU with a warning), created
    once: its models stay loaded per (model, precision)."""
    from engine.devices import resolve_device  # torch: only once something renders
    from engine.renderer import Renderer

    resolved = str(resolve_device(device))
    key = (resolved, None if model_dir is None else str(model_dir), precision)
    with _renderers_lock:
        if key not in _renderers:
            _renderers[key] = Renderer(
                resolved, model_dir=None if model_dir is None else Path(model_dir), precision=precision
            )
        return _renderers[key]


def set_cudnn_determinism() -> None:
    """The seed's `cudnn_determinism`: cuDNN picks deterministic algorithms from now on, process-wide."""
    import torch

    torch.backends.cudnn.deterministic = True
