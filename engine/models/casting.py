"""Frozen towers in a low-precision compute type, cast once when loaded; CLIP's text path kept in fp32.

Autocast alone would re-cast every frozen weight on every call: it caches only casts of leaf tensors
that require grad, and frozen weights do not. So a bf16 renderer casts the VQGAN decoder and CLIP's
image tower once, after the speed-ups are applied, keeping the normalisation layers' parameters in
fp32 (their statistics are accumulated in fp32 anyway, and fp32 inputs with bf16 parameters are
refused by the CPU kernels). Autocast stays on around them as a net for stray fp32 inputs
(docs/engine.md, "Precision").
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from engine.models.clip_import import CLIP

ModuleT = TypeVar("ModuleT", bound=nn.Module)

NORMS = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)  # BatchNorm: the ResNet CLIPs


def cast_frozen(module: ModuleT, dtype: torch.dtype) -> ModuleT:
    """Every floating parameter and buffer of `module` in `dtype`, except those of normalisation layers; in place."""
    for sub in module.modules():
        if isinstance(sub, NORMS):
            continue
        for param in sub.parameters(recurse=False):
            if param.is_floating_point():
                param.data = param.data.to(dtype)  # the same Parameter object: shared weights stay shared
        for name, buffer in list(sub.named_buffers(recurse=False)):
            if buffer.is_floating_point():
                setattr(sub, name, buffer.to(dtype))
    return module


def encode_text(clip: CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's `encode_text` in the text tower's own dtype.

    `CLIP.encode_text` casts to `CLIP.dtype`, the image tower's; a bf16 image tower would drag the
    text path, which runs once per prompt, into bf16 with fp32 weights.
    """
    dtype = clip.token_embedding.weight.dtype
    x = clip.token_embedding(tokens).to(dtype) + clip.positional_embedding[: tokens.shape[-1]].to(dtype)
    x = clip.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)  # NLD -> LND -> NLD
    x = clip.ln_final(x).to(dtype)
    # the features of the end-of-text token, the highest id of each sequence
    features: torch.Tensor = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ clip.text_projection
    return features
