"""The fused activations compute what the originals compute."""

from __future__ import annotations

import copy

import taming.modules.diffusionmodules.model as taming_model
import torch
from clip.model import QuickGELU

from engine import fast
from engine.tiny import build_tiny_clip


def test_fast_quick_gelu_matches_clips() -> None:
    x = torch.linspace(-8, 8, 1001, requires_grad=True)
    expected = QuickGELU()(x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    got = fast.FastQuickGELU()(x)
    (got_grad,) = torch.autograd.grad(got.sum(), x)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got_grad, expected_grad, atol=1e-5)


def test_clip_with_fused_activations_encodes_the_same() -> None:
    original = build_tiny_clip()
    fused = fast.fuse_clip_activations(copy.deepcopy(original))
    assert not any(isinstance(m, QuickGELU) for m in fused.modules())
    images = torch.rand(3, 3, 64, 64)
    assert torch.allclose(fused.encode_image(images), original.encode_image(images), atol=1e-5)


def test_taming_swish_becomes_silu_with_the_same_values() -> None:
    x = torch.randn(2, 8, 5, 5)
    before = x * torch.sigmoid(x)  # taming's swish
    fast.fuse_vqgan_activations()
    assert torch.allclose(taming_model.nonlinearity(x), before, atol=1e-6)
