"""Import the `clip` package without its pkg_resources deprecation warning on stderr."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch


def tokenizer() -> Callable[..., torch.Tensor]:
    """`clip.tokenize`, imported quietly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pkg_resources")
        import clip

    return clip.tokenize  # type: ignore[no-any-return]
