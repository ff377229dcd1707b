"""Vector quantisation against the VQGAN's codebook, and the two gradient rules the step needs.

Straight-through quantisation and the clamp that keeps useful gradients are Katherine Crowson's,
from her VQGAN+CLIP notebook (docs/engine.md, "Quantise, synthesise, clamp").
"""

from __future__ import annotations

from typing import Any

import torch


class _ClampWithGrad(torch.autograd.Function):
    """Clamp forward; backward keeps a pixel's gradient only if following it moves the pixel back into range."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        ctx.low, ctx.high = low, high
        ctx.save_for_backward(x)
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        # descent moves x by -grad: keep the gradient when that does not push x further outside
        keep = grad * (x - x.clamp(ctx.low, ctx.high)) >= 0
        return grad * keep, None, None


def clamp_with_grad(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Clamp to [low, high] in the forward pass; backward keeps a gradient only where it leads back into range."""
    clamped: torch.Tensor = _ClampWithGrad.apply(x, low, high)
    return clamped


def straight_through(shown: torch.Tensor, through: torch.Tensor) -> torch.Tensor:
    """`shown` in the forward pass; the gradient goes to `through` unchanged (same shape)."""
    return through + (shown - through).detach()


class Codebook:
    """A VQGAN codebook with its squared norms cached (they never change during a job)."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight.detach()  # (n_e, e)
        self.sq_norms = self.weight.pow(2).sum(dim=1)  # (n_e,)
        self.low = self.weight.min(dim=0).values[None, :, None, None]  # per-channel bounds for z
        self.high = self.weight.max(dim=0).values[None, :, None, None]

    @property
    def size(self) -> int:
        return int(self.weight.shape[0])

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Indices of the nearest code for each position of `z` (B, e, h, w) -> (B, h, w)."""
        b, e, h, w = z.shape
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, e)
        # |z|² is constant per row, so the argmin needs only |c|² - 2 z·c
        scores = torch.addmm(self.sq_norms, flat, self.weight.T, alpha=-2.0)
        return scores.argmin(dim=1).view(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for `indices` (B, h, w) as a latent (B, e, h, w), gathered by index."""
        return self.weight[indices].permute(0, 3, 1, 2).contiguous()

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Straight-through vector quantisation: nearest codes forward, identity gradient to `z`."""
        return straight_through(self.lookup(self.nearest(z)), z)

    def clamp_(self, z: torch.Tensor) -> None:
        """Clamp `z` per channel to the codebook's range, in place, outside autograd."""
        with torch.no_grad():
            torch.maximum(z, self.low, out=z)
            torch.minimum(z, self.high, out=z)
