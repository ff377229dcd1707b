"""Speed-ups that keep the models' maths: fused activations in place of two- and three-op ones.

taming's swish is `x * sigmoid(x)` and CLIP's QuickGELU is `x * sigmoid(1.702 x)`; both are SiLU
(`silu(1.702 x) / 1.702` for the latter), which PyTorch runs as one kernel forward and one backward
instead of several, with fewer saved tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_QUICK_GELU_SCALE = 1.702


class FastQuickGELU(nn.Module):
    """CLIP's QuickGELU, x·sigmoid(1.702x), computed as silu(1.702x)/1.702."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x * _QUICK_GELU_SCALE) / _QUICK_GELU_SCALE


def fuse_vqgan_activations() -> None:
    """Make taming's decoder use F.silu for its swish (the same function; taming looks it up at call time)."""
    import taming.modules.diffusionmodules.model as taming_model

    taming_model.nonlinearity = F.silu


def fuse_clip_activations(clip: nn.Module) -> nn.Module:
    """Swap every QuickGELU module of a CLIP model for FastQuickGELU, in place; returns the model."""
    from clip.model import QuickGELU

    for parent in list(clip.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QuickGELU):
                setattr(parent, name, FastQuickGELU())
    return clip
