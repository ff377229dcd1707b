"""The `clip` package, imported once without its pkg_resources deprecation warning on stderr.

Every engine module takes clip's names from here, so whichever imports it first, it is quiet.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="pkg_resources")
    import clip
    from clip.model import CLIP, QuickGELU, VisionTransformer

__all__ = ["CLIP", "QuickGELU", "VisionTransformer", "clip", "tokenizer"]


def tokenizer() -> Callable[..., torch.Tensor]:
    """`clip.tokenize`: text -> (1, 77) token ids."""
    tokenize: Callable[..., torch.Tensor] = clip.tokenize
    return tokenize
