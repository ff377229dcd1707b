"""The VQGAN+CLIP engine. `from engine import generate, VQGAN_CLIP_Config` works as in the seed package.

Attributes load lazily, so importing `engine` (or `engine.prompts`, `engine.jobs`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["VQGAN_CLIP_Config", "generate"]


def __getattr__(name: str) -> Any:
    if name == "generate":
        return importlib.import_module("engine.generate")
    if name == "VQGAN_CLIP_Config":
        return importlib.import_module("engine.config").VQGAN_CLIP_Config
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
