"""The speed-ups are used where they say, and compute what the models they replace compute, forward and backward."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import taming.modules.diffusionmodules.model as taming_model
import torch
import torch.nn.functional as F

from engine.models import speedups
from engine.models.clip_import import QuickGELU
from engine.models.loading import build_vqgan_architecture
from engine.models.tiny import build_tiny_clip


def _value_and_input_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    (grad,) = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), x)
    return out.detach(), grad


def _assert_close(
    got: tuple[torch.Tensor, torch.Tensor], expected: tuple[torch.Tensor, torch.Tensor], rtol: float
) -> None:
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        assert (g - e).abs().max() <= rtol * e.abs().max()


def test_fast_quick_gelu_matches_clips() -> None:
    x = torch.linspace(-8, 8, 1001)
    _assert_close(_value_and_input_grad(speedups.FastQuickGELU(), x), _value_and_input_grad(QuickGELU(), x), 1e-5)


def _count_nnpack_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap NNPACK's convolution so a test sees each call; returns the list it appends to."""
    calls: list[int] = []
    original: Callable[..., torch.Tensor] = torch._nnpack_spatial_convolution

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", counted)
    return calls


def test_taming_swish_becomes_silu_with_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    def swish(x: torch.Tensor) -> torch.Tensor:  # taming's own nonlinearity
        return x * torch.sigmoid(x)

    monkeypatch.setattr(taming_model, "nonlinearity", swish)  # as before any fuse in this process
    speedups.fuse_vqgan_activations()
    assert taming_model.nonlinearity is F.silu  # the swap happened ...
    x = torch.randn(2, 8, 5, 5)
    assert torch.allclose(taming_model.nonlinearity(x), swish(x), atol=1e-6)  # ... and computes the same


@pytest.mark.parametrize("size", [(5, 7), (16, 16)])
def test_subpixel_upsample_equals_nearest_upsample_then_conv(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    upsample = taming_model.Upsample(6, with_conv=True).requires_grad_(False)
    x = torch.randn(2, 6, *size)
    _assert_close(
        _value_and_input_grad(speedups.SubpixelUpsample(upsample.conv), x), _value_and_input_grad(upsample, x), 1e-5
    )


@pytest.mark.skipif(not torch._nnpack_available(), reason="this torch build has no NNPACK")
def test_winograd_conv_runs_nnpack_above_its_size_threshold_only_and_matches_the_direct_convolution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 5, 3, padding=1).requires_grad_(False)
    winograd = speedups._as_winograd(conv)
    assert winograd.weight is conv.weight
    assert winograd.bias is conv.bias
    calls = _count_nnpack_calls(monkeypatch)
    for side, nnpack_calls in ((8, 0), (130, 2)):  # below and above WINOGRAD_MIN_PIXELS: forward + input grad
        x = torch.randn(1, 8, side, side + 3)
        calls.clear()
        got = _value_and_input_grad(winograd, x)
        assert len(calls) == nnpack_calls
        _assert_close(got, _value_and_input_grad(conv, x), 1e-4)


def test_a_fused_vqgan_decodes_and_encodes_the_same_and_keeps_its_state_dict_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = build_vqgan_architecture("tiny").requires_grad_(False)
    fused = speedups.fuse_vqgan(copy.deepcopy(original))
    assert not any(isinstance(m, taming_model.Upsample) for m in fused.modules())
    assert any(isinstance(m, speedups.SubpixelUpsample) for m in fused.modules())
    assert fused.state_dict().keys() == original.state_dict().keys()
    z = torch.randn(1, original.codebook.shape[1], 33, 34)  # decodes to 132×136 pixels: above the Winograd size
    calls = _count_nnpack_calls(monkeypatch)
    got = _value_and_input_grad(fused.decode, z)
    if torch._nnpack_available():
        assert any(isinstance(m, speedups.WinogradConv2d) for m in fused.modules())
        assert calls, "the decoder's large convolutions no longer go through NNPACK"
    _assert_close(got, _value_and_input_grad(original.decode, z), 1e-4)
    pixels = torch.rand(1, 3, 132, 136) * 2 - 1
    with torch.no_grad():  # the encoder's features before quantisation (a near-tie may pick another code)
        got, expected = fused.quant_conv(fused.encoder(pixels)), original.quant_conv(original.encoder(pixels))
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_a_fused_clip_embeds_images_the_same_and_keeps_its_state_dict_keys() -> None:
    original = build_tiny_clip()
    fused = speedups.fuse_clip(copy.deepcopy(original))
    assert not any(isinstance(m, QuickGELU) for m in fused.modules())
    assert isinstance(fused.visual.conv1, speedups.PatchEmbedding)
    assert isinstance(fused.visual.transformer, speedups.ClassTokenTransformer)
    assert fused.state_dict().keys() == original.state_dict().keys()
    images = torch.rand(3, 3, 64, 64)
    _assert_close(
        _value_and_input_grad(fused.encode_image, images), _value_and_input_grad(original.encode_image, images), 1e-5
    )
    tokens = torch.randint(1, 400, (2, 77))
    with torch.no_grad():
        assert torch.allclose(fused.encode_text(tokens), original.encode_text(tokens), atol=1e-5)


def test_fusing_a_clip_twice_changes_nothing_more() -> None:
    original = build_tiny_clip()
    once = speedups.fuse_clip(copy.deepcopy(original))
    transformer = once.visual.transformer
    twice = speedups.fuse_clip(once)  # the MLP scales are folded once, not twice
    assert twice.visual.transformer is transformer
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(twice.encode_image(images), original.encode_image(images), atol=1e-5)
