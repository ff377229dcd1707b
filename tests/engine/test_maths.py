"""The step's maths: quantisation, clamp, distance, init-weight terms, optimizers, cutouts."""

from __future__ import annotations

import math

import pytest
import torch

from engine.config import OPTIMIZERS
from engine.optim.cutouts import Cutouts
from engine.optim.losses import PromptTarget, init_weight_loss, normalise, spherical_distance
from engine.optim.optimizers import make_optimizer
from engine.optim.quantize import Codebook, clamp_with_grad


def test_quantize_picks_the_nearest_code_and_passes_the_gradient_straight_through() -> None:
    weight = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 3.0]])
    book = Codebook(weight)
    z = torch.tensor([[[[0.9, -1.9]], [[1.2, 2.5]]]], requires_grad=True)  # (1, 2, 1, 2): points (0.9,1.2), (-1.9,2.5)
    q = book.quantize(z)
    assert torch.equal(q.detach()[0, :, 0, 0], weight[1])
    assert torch.equal(q.detach()[0, :, 0, 1], weight[2])
    grad = torch.randn_like(q)
    q.backward(grad)
    assert torch.equal(z.grad, grad)


def test_codebook_clamp_keeps_z_inside_each_channels_range() -> None:
    book = Codebook(torch.tensor([[0.0, -1.0], [2.0, 1.0]]))
    z = torch.tensor([[[[5.0]], [[-5.0]]]])
    book.clamp_(z)
    assert z.flatten().tolist() == [2.0, -1.0]


def test_clamp_with_grad_keeps_only_gradients_that_lead_back_into_range() -> None:
    x = torch.tensor([-0.5, 0.5, 1.5, 1.5], requires_grad=True)
    y = clamp_with_grad(x, 0.0, 1.0)
    assert y.tolist() == [0.0, 0.5, 1.0, 1.0]
    # descent moves by -grad: at 1.5 a positive grad moves it back down (kept), a negative one would push it up
    y.backward(torch.tensor([1.0, 1.0, 1.0, -1.0]))
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_spherical_distance_is_half_the_squared_angle() -> None:
    a = normalise(torch.tensor([[1.0, 0.0]]))
    b = normalise(torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]]))
    d = spherical_distance(a, b)
    assert d.shape == (1, 3)
    assert d[0].tolist() == pytest.approx([(math.pi / 2) ** 2 / 2, 0.0, math.pi**2 / 2], abs=1e-5)


def test_prompt_weight_sign_and_stop() -> None:
    feats = normalise(torch.tensor([[1.0, 0.2]])).requires_grad_(True)
    target = normalise(torch.tensor([[0.0, 1.0]]))
    pull = PromptTarget(target, 2.0, float("-inf")).loss(feats)
    push = PromptTarget(target, -2.0, float("-inf")).loss(feats)
    assert float(pull.detach()) > 0
    assert float(push.detach()) == pytest.approx(-float(pull.detach()))
    stopped = PromptTarget(target, 1.0, 4.0).loss(feats)  # distance < stop: no pull
    (grad,) = torch.autograd.grad(stopped, feats)
    assert torch.count_nonzero(grad) == 0
    (grad,) = torch.autograd.grad(PromptTarget(target, 1.0, 0.1).loss(feats), feats)
    assert torch.count_nonzero(grad) > 0


@pytest.mark.parametrize(
    ("method", "expected"),
    [("original", 0.5), ("decay", 1 / 5 / 2 * 4), ("alternate_img_target", 0.5), ("alternate_img_target_decay", 1)],
)
def test_init_weight_methods(method: str, expected: float) -> None:
    z, anchor = torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), 1.0)
    # weight 1, iteration 2: MSE(z, anchor) = 1, MSE(z, 0) = 4
    assert float(init_weight_loss(method, z, anchor, 1.0, 2)) == pytest.approx(expected)


def test_unknown_init_weight_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="init_image_method"):
        init_weight_loss("sideways", torch.zeros(1), torch.zeros(1), 1.0, 1)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_lowers_a_simple_loss(name: str) -> None:
    z = torch.full((4,), 3.0, requires_grad=True)
    optimizer = make_optimizer(name.lower(), [z], 0.1)  # names are case-insensitive
    for _ in range(5):
        optimizer.zero_grad()
        loss = z.pow(2).sum()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(z).all()
    assert float(z.detach().pow(2).sum()) < 36.0


def test_unknown_optimizer_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'SGDX'"):
        make_optimizer("SGDX", [torch.zeros(1, requires_grad=True)], 0.1)


@pytest.mark.parametrize("method", ["original", "kornia", "sg3"])
def test_cutouts_have_the_cut_size_are_finite_and_repeat_with_the_seed(method: str) -> None:
    img = torch.rand(1, 3, 40, 72, requires_grad=True)
    cut = Cutouts(32, 6, 1.5, method)
    first = cut(img, torch.Generator().manual_seed(3), torch.Generator().manual_seed(3))
    again = cut(img, torch.Generator().manual_seed(3), torch.Generator().manual_seed(3))
    other = cut(img, torch.Generator().manual_seed(4), torch.Generator().manual_seed(4))
    assert first.shape == (6, 3, 32, 32)
    assert torch.isfinite(first).all()
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    first.sum().backward()
    assert img.grad is not None
    assert torch.count_nonzero(img.grad) > 0


def test_original_cutouts_of_a_whole_image_reproduce_it() -> None:
    img = torch.rand(1, 3, 16, 16)
    cuts = Cutouts(16, 3, 1.0, "original")(img, torch.Generator(), torch.Generator())
    for cut in cuts:
        assert torch.allclose(cut, img[0], atol=1e-5)


def test_unknown_cut_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown cut_method 'fancy'"):
        Cutouts(32, 4, 1.0, "fancy")
