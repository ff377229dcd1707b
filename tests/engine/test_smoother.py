"""The z smoother is a true, causal EWMA (docs/engine.md, "The smoother"), windowed or not."""

from __future__ import annotations

import pytest
import torch

from engine.optim.smoother import EWMASmoother


@pytest.mark.parametrize("window", [None, 3])
def test_constant_input_stays_constant(window: int | None) -> None:
    smoother = EWMASmoother(0.4, window)
    z = torch.full((1, 2, 3, 3), 1.5)
    for _ in range(6):
        assert torch.allclose(smoother.update(z), z)


@pytest.mark.parametrize("window", [None, 5])
def test_alpha_one_returns_the_newest_latent(window: int | None) -> None:
    smoother = EWMASmoother(1.0, window)
    for k in range(4):
        z = torch.randn(2, 3, generator=torch.Generator().manual_seed(k))
        assert torch.allclose(smoother.update(z), z)


@pytest.mark.parametrize("alpha", [0.3, 0.7])
def test_a_step_decays_geometrically_without_lag(alpha: float) -> None:
    a, b = torch.zeros(4), torch.ones(4)
    smoother = EWMASmoother(alpha)
    smoother.update(a)
    for k in range(1, 6):
        expected = b - (1 - alpha) ** k * (b - a)
        assert torch.allclose(smoother.update(b), expected)


def test_windowed_step_matches_renormalised_weights() -> None:
    alpha, window = 0.5, 4
    smoother = EWMASmoother(alpha, window)
    for _ in range(window):
        smoother.update(torch.zeros(1))
    q = 1 - alpha
    for k in range(1, window + 1):
        expected = sum(q**j for j in range(k)) / sum(q**j for j in range(window))
        assert smoother.update(torch.ones(1)).item() == pytest.approx(expected)


@pytest.mark.parametrize(("alpha", "window", "count"), [(0.2, None, 1), (0.2, None, 7), (0.9, 3, 2), (0.6, 5, 9)])
def test_weights_sum_to_one(alpha: float, window: int | None, count: int) -> None:
    weights = EWMASmoother(alpha, window).weights(count)
    assert sum(weights) == pytest.approx(1.0)
    assert weights == sorted(weights, reverse=True) or window is None


def test_the_input_is_not_changed_and_state_survives_a_checkpoint() -> None:
    first, second = EWMASmoother(0.5, 3), EWMASmoother(0.5, 3)
    latents = [torch.randn(2, generator=torch.Generator().manual_seed(k)) for k in range(5)]
    for z in latents[:3]:
        copy = z.clone()
        first.update(z)
        assert torch.equal(z, copy)
    second.load_state_dict(first.state_dict())
    for z in latents[3:]:
        assert torch.allclose(first.update(z), second.update(z))


@pytest.mark.parametrize(("alpha", "window"), [(0.0, None), (1.5, None), (0.5, 0)])
def test_bad_settings_are_refused(alpha: float, window: int | None) -> None:
    with pytest.raises(ValueError, match="z_smoother"):
        EWMASmoother(alpha, window)
