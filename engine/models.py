"""Model loading: a VQGAN and a CLIP by registry name, on a device.

FOUNDATION NOTE (to be replaced by the registry/download work): only `tiny` is wired up here.
The public functions below are the interface the renderer codes against; keep their signatures.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engine.errors import ModelLoadError
from engine.tiny import TINY, build_tiny_clip, build_tiny_vqgan
from engine.vqgan import VQGAN


def load_vqgan(
    name: str,
    *,
    device: torch.device,
    model_dir: Path | None = None,
    yaml_url: str | None = None,
    ckpt_url: str | None = None,
    progress: bool = True,
) -> VQGAN:
    """The VQGAN called `name` (a registry key, `tiny`, or a custom name with URLs), eval and frozen, on `device`."""
    if name == TINY:
        return build_tiny_vqgan().to(device)
    raise ModelLoadError(f"unknown VQGAN model {name!r}")


def load_clip(name: str, *, device: torch.device, model_dir: Path | None = None, progress: bool = True) -> nn.Module:
    """The CLIP model called `name` (`ViT-B/32`, …, or `tiny`), fp32, eval and frozen, on `device`."""
    if name == TINY:
        return build_tiny_clip().to(device)
    raise ModelLoadError(f"unknown CLIP model {name!r}")
