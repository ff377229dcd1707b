"""bf16 against fp32 on the same job: how far the numbers may drift, what must stay fp32, and bitwise repeats.

The bounds come from measuring the tiny preset at 64×64 with 8 cutouts (Adam, lr 0.1, one thread), 8 seeds
and 20 steps; each is about 4-10× the worst value seen (docs/engine.md, "Precision"):

| quantity, bf16 against fp32                  | worst measured | bound  |
|----------------------------------------------|----------------|--------|
| loss at the same z, relative                 | 7.9e-4         | 3e-3   |
| gradient at the same z: 1 − cosine           | 1.1e-3         | 1e-2   |
| gradient at the same z: relative error       | 0.048          | 0.2    |
| picture at the same z: max, mean abs (0..1)  | 0.023, 0.0027  | 0.1, 0.01 |
| loss per step: max, median relative          | 5.0e-3, 5.0e-4 | 2.5e-2, 2.5e-3 |
| picture after the steps: mean abs            | 0.022          | 0.1    |
| picture after the steps: mean, std           | 2.3e-4, 9.0e-4 | 2e-3, 5e-3 |

Codes are compared through pictures: one code picked in bf16 instead of fp32 moves pixels by up to 0.7,
so the near-tie latent below fails the picture bound when the quantiser is not fp32. Nothing is asserted
on z or codes after several steps beyond what the pictures show: trajectories may part.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.jobs import JobSpec
from engine.models.casting import NORMS
from engine.optim.state import OptimisationState
from engine.pipelines.context import RenderContext
from engine.pipelines.still import start_still
from engine.precision import bf16_support
from engine.prompts import parse_all
from engine.renderer import Renderer
from tests.support.images import pixels
from tests.support.specs import tiny_spec

CPU = torch.device("cpu")
SUPPORT = bf16_support(CPU)
pytestmark = pytest.mark.skipif(not SUPPORT.runs, reason=f"bf16 cannot run here: {SUPPORT.reason}")
# emulated bf16 (no bf16 instructions, or oneDNN capped below them) is tens of times slower: a smaller job
SIZE, CUTS, STEPS, SEEDS = (64, 8, 12, (0, 1)) if SUPPORT.native else (32, 2, 3, (0,))
PROMPT = "a red apple | blurry:-0.5"


@pytest.fixture(scope="module")
def contexts() -> dict[str, RenderContext]:
    return {name: RenderContext.create(CPU, precision=name) for name in ("fp32", "bf16")}


def started(contexts: dict[str, RenderContext], seed: int, size: int = SIZE) -> dict[str, OptimisationState]:
    """The same job, from the same seed, in both precisions."""
    spec = JobSpec(text_prompts=PROMPT, width=size, height=size, num_cuts=CUTS, seed=seed, vqgan_model="tiny",
                   clip_model="tiny")  # fmt: skip
    return {name: start_still(ctx, spec, parse_all(PROMPT)).state for name, ctx in contexts.items()}


def at_same_z(
    states: dict[str, OptimisationState], z: torch.Tensor
) -> dict[str, tuple[float, torch.Tensor, torch.Tensor]]:
    """Loss, gradient and decoded picture of `z` in each precision, with the same cutout draws."""
    rng = states["fp32"].rng.state()
    out = {}
    for name, state in states.items():
        state.set_z(z)
        state.rng.load(rng)
        loss = state.loss()
        torch.autograd.backward(loss)
        assert state.z.grad is not None
        assert state.decoded is not None
        out[name] = (float(loss.detach()), state.z.grad.clone(), state.decoded.clone())
    return out


def near_tie_latent(state: OptimisationState, seed: int) -> torch.Tensor:
    """A latent whose every position sits a hair nearer one code than another: bf16 scores cannot tell them apart."""
    codes = state.codebook.weight
    w, h = state.latent_size
    gen = torch.Generator().manual_seed(seed)
    a, b = (codes[torch.randint(codes.shape[0], (h * w,), generator=gen)] for _ in range(2))
    return ((a + b) / 2 + 1e-3 * (a - b)).T.reshape(1, -1, h, w).contiguous()


@pytest.mark.parametrize("seed", SEEDS)
def test_at_the_same_z_bf16_gives_nearly_the_same_loss_gradient_and_picture(
    contexts: dict[str, RenderContext], seed: int
) -> None:
    states = started(contexts, seed)
    for z in (states["fp32"].z.detach().clone(), near_tie_latent(states["fp32"], seed)):
        (loss32, grad32, pic32), (loss16, grad16, pic16) = at_same_z(states, z).values()
        assert abs(loss16 - loss32) / abs(loss32) <= 3e-3
        assert F.cosine_similarity(grad32.flatten(), grad16.flatten(), dim=0) >= 0.99
        assert (grad16 - grad32).norm() / grad32.norm() <= 0.2
        assert (pic16 - pic32).abs().max() <= 0.1  # also: the same codes (a different one moves pixels ~0.7)
        assert (pic16 - pic32).abs().mean() <= 0.01


def test_over_several_steps_bf16_follows_the_fp32_loss_and_picture(contexts: dict[str, RenderContext]) -> None:
    states = started(contexts, SEEDS[0])
    losses = {name: np.array([float(state.step()) for _ in range(STEPS)]) for name, state in states.items()}
    relative = np.abs(losses["bf16"] - losses["fp32"]) / np.abs(losses["fp32"])
    assert relative.max() <= 2.5e-2
    assert np.median(relative) <= 2.5e-3
    with torch.no_grad():
        pic32, pic16 = (state.synth(state.z) for state in states.values())
    assert (pic16 - pic32).abs().mean() <= 0.1
    assert abs(float(pic16.mean() - pic32.mean())) <= 2e-3
    assert abs(float(pic16.std() - pic32.std())) <= 5e-3


def test_only_the_frozen_towers_compute_in_bf16(contexts: dict[str, RenderContext]) -> None:
    # 128×128: past the size from which fp32 3×3 convolutions take NNPACK, which computes fp32 only
    state = started(contexts, 0, size=128)["bf16"]
    models = state.models
    towers = {"decoder": models.vqgan.decoder, "image tower": models.clip.visual}
    for name, tower in towers.items():
        for module in tower.modules():
            for param in module.parameters(recurse=False):
                assert param.dtype == (torch.float32 if isinstance(module, NORMS) else torch.bfloat16), (name, module)
    frozen_fp32 = [models.vqgan.encoder, models.vqgan.quantize, models.clip.transformer, models.clip.token_embedding]
    assert all(p.dtype == torch.float32 for part in frozen_fp32 for p in part.parameters())
    fp32_inputs: list[str] = []

    def watch(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if args[0].dtype != torch.bfloat16:
                fp32_inputs.append(name)

        return hook

    hooks = [
        module.register_forward_pre_hook(watch(f"{tower_name}.{name}"))
        for tower_name, tower in towers.items()
        for name, module in tower.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear | nn.MultiheadAttention)
    ]
    try:
        with torch.profiler.profile() as profile:
            loss = state.step()
    finally:
        for hook in hooks:
            hook.remove()
    assert fp32_inputs == []  # no fp32 leaks into the towers (autocast would cast each one again)
    assert not any("nnpack_spatial_convolution" in event.key for event in profile.key_averages())
    assert state.z.grad is not None
    assert state.decoded is not None
    assert state.optimizer is not None
    assert {state.z.dtype, state.z.grad.dtype, loss.dtype, state.decoded.dtype} == {torch.float32}
    assert all(t.dtype == torch.float32 for t in state.optimizer.state[state.z].values())
    assert all(target.embeds.dtype == torch.float32 for target in state.targets)


def test_bf16_repeats_to_the_bit_and_differs_from_fp32(tmp_path: Path) -> None:
    bf16 = Renderer("cpu", precision="bf16")
    spec = tiny_spec(seed=4)
    bf16.render(spec, tmp_path / "a.png")
    bf16.render(spec, tmp_path / "b.png")
    Renderer("cpu", precision="fp32").render(spec, tmp_path / "fp32.png")
    assert np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))
    assert not np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "fp32.png"))
