"""The long-lived renderer: determinism, seeds, progress, previews, cancel, resume, sizes, errors."""

from __future__ import annotations

import dataclasses
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import InvalidJob
from engine.jobs import JobKind, Progress
from engine.optim.pixels import noise_pixels
from engine.renderer import Renderer
from tests.support.images import pixels
from tests.support.specs import tiny_spec


def test_same_seed_same_pixels_other_seed_other_pixels(renderer: Renderer, tmp_path: Path) -> None:
    a = renderer.render(tiny_spec(seed=0), tmp_path / "a.png")
    renderer.render(tiny_spec(seed=0), tmp_path / "b.png")
    renderer.render(tiny_spec(seed=1), tmp_path / "c.png")
    assert a.seed == 0
    assert not a.partial
    assert a.steps_done == 3
    assert np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))
    assert not np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "c.png"))


def test_no_seed_draws_one_and_reports_it(renderer: Renderer, tmp_path: Path) -> None:
    first = renderer.render(tiny_spec(seed=None, iterations=1), tmp_path / "a.png")
    again = renderer.render(tiny_spec(seed=first.seed, iterations=1), tmp_path / "b.png")
    assert 0 <= first.seed < 2**64
    assert np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))
    assert again.seed == first.seed


def test_largest_seed_is_accepted_and_out_of_range_is_refused(renderer: Renderer, tmp_path: Path) -> None:
    assert renderer.render(tiny_spec(seed=2**64 - 1, iterations=1), tmp_path / "a.png").seed == 2**64 - 1
    for bad in (-1, 2**64):
        with pytest.raises(InvalidJob, match="seed"):
            renderer.render(tiny_spec(seed=bad), tmp_path / "b.png")


def test_progress_once_per_iteration_and_preview_only_when_asked(renderer: Renderer, tmp_path: Path) -> None:
    seen: list[Progress] = []
    previews: list[bytes] = []

    def on_progress(p: Progress) -> None:
        seen.append(p)
        if p.iteration == 2:
            previews.append(p.preview())

    renderer.render(tiny_spec(iterations=4, width=128, height=64), tmp_path / "a.png", on_progress=on_progress)
    assert [p.iteration for p in seen] == [1, 2, 3, 4]
    assert all(p.total == 4 and np.isfinite(p.loss) for p in seen)
    assert len(previews) == 1
    with Image.open(io.BytesIO(previews[0])) as img:
        assert img.format == "WEBP"
        assert img.size == (128, 64)


def test_a_preview_shows_the_picture_its_iteration_decoded_without_decoding_again(
    renderer: Renderer, tmp_path: Path
) -> None:
    spec = tiny_spec(iterations=3, learning_rate=1.0)
    decoder = renderer.models(spec).vqgan.decoder
    calls: list[int] = []
    hook = decoder.register_forward_hook(lambda *_: calls.append(1))
    last: list[bytes] = []

    def on_progress(p: Progress) -> None:
        if p.iteration == 3:
            before = len(calls)
            last.append(p.preview())
            assert len(calls) == before  # free: the step's own decoded picture

    try:
        renderer.render(spec, tmp_path / "three.webp", on_progress=on_progress)
    finally:
        hook.remove()
    renderer.render(dataclasses.replace(spec, iterations=2), tmp_path / "two.webp")

    def webp(data: bytes | Path) -> np.ndarray:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            return np.asarray(img.convert("RGB")).astype(int)

    preview = webp(last[0])
    # iteration 3 decoded z as two steps left it: the 2-iteration result, one step behind the 3-iteration one
    assert np.abs(preview - webp(tmp_path / "two.webp")).mean() < 4  # both lossy WebPs of the same picture
    assert np.abs(preview - webp(tmp_path / "three.webp")).mean() > 8


def test_cancel_returns_the_partial_result(renderer: Renderer, tmp_path: Path) -> None:
    cancel = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.iteration == 2:
            cancel.set()

    artifact = renderer.render(tiny_spec(iterations=10), tmp_path / "a.png", on_progress=on_progress, cancel=cancel)
    assert artifact.partial
    assert artifact.steps_done == 2
    assert pixels(tmp_path / "a.png").shape == (64, 64, 3)


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(renderer: Renderer, tmp_path: Path) -> None:
    spec = tiny_spec(
        iterations=5, seed=None, text_prompts="a fish:1|rocks:-0.3:-1", noise_prompts="9:0.2", optimizer="DiffGrad",
        adaptive_lr=True, learning_rate=0.5, init_noise="pixels", init_weight=0.3,
    )  # fmt: skip
    first = renderer.render(spec, tmp_path / "whole.png")
    spec = dataclasses.replace(spec, seed=first.seed)
    saved: list[bytes] = []
    cancel = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.iteration == 2:
            saved.append(p.checkpoint())
            cancel.set()

    part = renderer.render(spec, tmp_path / "part.png", on_progress=on_progress, cancel=cancel)
    assert part.partial
    assert part.steps_done == 2
    torch.rand(10)  # the global RNG moves on, as it would in another process
    state = torch.load(io.BytesIO(saved[0]), weights_only=True)  # the restricted unpickler accepts it
    assert state["seed"] == first.seed
    assert state["state"]["iteration"] == 2
    iterations: list[int] = []
    resumed = renderer.render(spec, tmp_path / "resumed.png", resume=saved[0],
                              on_progress=lambda p: iterations.append(p.iteration))  # fmt: skip
    assert iterations == [3, 4, 5]
    assert resumed.steps_done == 5
    assert not resumed.partial
    assert np.array_equal(pixels(tmp_path / "whole.png"), pixels(tmp_path / "resumed.png"))


def test_resume_refuses_another_jobs_state(renderer: Renderer, tmp_path: Path) -> None:
    saved: list[bytes] = []
    renderer.render(tiny_spec(iterations=1), tmp_path / "a.png", on_progress=lambda p: saved.append(p.checkpoint()))
    with pytest.raises(InvalidJob, match="different job"):
        renderer.render(tiny_spec(iterations=1, text_prompts="a cat"), tmp_path / "b.png", resume=saved[0])
    with pytest.raises(InvalidJob, match="cannot be read"):
        renderer.render(tiny_spec(iterations=1), tmp_path / "b.png", resume=b"not a checkpoint")


def test_sizes_floor_to_the_stride_and_a_side_below_it_is_refused(renderer: Renderer, tmp_path: Path) -> None:
    artifact = renderer.render(tiny_spec(width=70, height=33, iterations=1), tmp_path / "a.png")
    assert (artifact.width, artifact.height) == (68, 32)
    assert pixels(tmp_path / "a.png").shape == (32, 68, 3)
    with pytest.raises(InvalidJob, match="too small"):
        renderer.render(tiny_spec(width=3, height=64), tmp_path / "b.png")


@pytest.mark.parametrize("kind", ["pixels", "gradient"])
def test_init_noise_keeps_a_non_square_orientation(renderer: Renderer, tmp_path: Path, kind: str) -> None:
    noise = noise_pixels(kind, 48, 20, torch.Generator().manual_seed(1))
    assert noise.shape == (1, 3, 20, 48)
    assert float(noise.min()) >= 0
    assert float(noise.max()) <= 1
    artifact = renderer.render(tiny_spec(width=96, height=40, init_noise=kind, iterations=1), tmp_path / "a.png")
    assert pixels(tmp_path / "a.png").shape == (40, 96, 3)
    assert (artifact.width, artifact.height) == (96, 40)


def test_gradient_noise_runs_red_across_and_green_down() -> None:
    noise = noise_pixels("gradient", 30, 10, torch.Generator().manual_seed(2))[0]
    assert float(noise[0, 0, 0]) == 0
    assert float(noise[0, 0, -1]) > 0
    assert torch.equal(noise[0, 0], noise[0, -1])
    assert float(noise[1, 0, 0]) == 0
    assert float(noise[1, -1, 0]) > 0
    assert torch.equal(noise[1][:, 0], noise[1][:, -1])


def test_every_cut_method_and_optimizer_gives_a_finite_image(renderer: Renderer, tmp_path: Path) -> None:
    for method in ("original", "kornia", "sg3"):
        for optimizer in ("Adam", "AdamW", "Adagrad", "Adamax", "RMSprop", "RAdam", "DiffGrad"):
            spec = tiny_spec(cut_method=method, optimizer=optimizer, iterations=2, width=80, height=64, cut_power=2.0)
            losses: list[float] = []
            renderer.render(spec, tmp_path / "a.png", on_progress=lambda p, losses=losses: losses.append(p.loss))
            assert all(np.isfinite(losses)), (method, optimizer)
            assert pixels(tmp_path / "a.png").shape == (64, 80, 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cut_method": "fancy"}, "unknown cut_method"),
        ({"optimizer": "SGDX"}, "unknown optimizer"),
        ({"init_image_method": "sideways"}, "unknown init_image_method"),
        ({"init_noise": "static"}, "unknown init_noise"),
        ({"text_prompts": ""}, "No valid prompts"),
        ({"text_prompts": "a cat:nan"}, "finite"),
        ({"num_cuts": 0}, "num_cuts"),
        ({"kind": JobKind.UPSCALE}, "an upscale job takes one input"),  # no init_image, no video
        ({"kind": JobKind.ANIMATION}, r"a video is written as \.mp4"),
        ({"init_image": "/nonexistent/x.png"}, "does not exist"),
    ],
)
def test_bad_jobs_are_refused_with_a_clear_message(
    renderer: Renderer, tmp_path: Path, change: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidJob, match=message):
        renderer.render(tiny_spec(**change), tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def test_unknown_output_extension_is_refused(renderer: Renderer, tmp_path: Path) -> None:
    with pytest.raises(InvalidJob, match="extension"):
        renderer.render(tiny_spec(), tmp_path / "a.xyz")


def test_device_out_of_memory_becomes_an_engine_error_with_advice(
    renderer: Renderer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.errors import OutOfMemory
    from engine.optim.state import OptimisationState

    def exhausted(self: OptimisationState) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(OptimisationState, "step", exhausted)
    with pytest.raises(OutOfMemory, match="smaller size or fewer cutouts"):
        renderer.render(tiny_spec(), tmp_path / "a.png")
