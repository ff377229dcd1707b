"""Upscale jobs through the Renderer with the tiny ×2 upscaler: stills, videos, cancel, resume, bad input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import esrgan as seed_esrgan
from engine.errors import InvalidJob
from engine.jobs import JobKind, JobSpec, Progress
from engine.media import ffmpeg, probe
from engine.models import esrgan
from engine.pipelines import images
from engine.renderer import Renderer
from tests.support.images import pixels
from tests.support.mediafiles import make_video
from tests.support.specs import tiny_spec

ROOT = Path(__file__).resolve().parents[2]


def upscale(**changes: object) -> JobSpec:
    values: dict[str, object] = {"upscale_model": "tiny", **changes}
    return JobSpec(kind=JobKind.UPSCALE, **values)  # type: ignore[arg-type]


def decoded(path: Path) -> bytes:
    """Every frame of a video as raw RGB bytes."""
    args = ["-i", ffmpeg.file_arg(path), "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    return ffmpeg.run(args).stdout


def halved(path: Path) -> np.ndarray:
    """The picture shrunk by 2 (box filter), to compare with its source."""
    with Image.open(path) as img:
        small = img.convert("RGB").reduce(2)
    return np.asarray(small, dtype=float)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer("cpu", max_frames=40, max_video_seconds=3.0)


@pytest.fixture(scope="module")
def still(renderer: Renderer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An engine-made PNG (carries the seed's text keys and engine_params)."""
    out = tmp_path_factory.mktemp("still") / "apple.png"
    renderer.render(tiny_spec(iterations=2), out)
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 s at 8 fps with a sine tone: 8 frames."""
    return make_video(tmp_path_factory.mktemp("clip") / "my clip.mp4", seconds=1, fps=8, audio="aac")


def test_a_png_comes_out_twice_the_size_with_its_parameters_and_the_upscale_added(
    renderer: Renderer, still: Path, picture: Path, tmp_path: Path
) -> None:
    out = tmp_path / "big.png"
    steps: list[tuple[int, int]] = []
    artifact = renderer.render(
        upscale(init_image=str(still)), out, on_progress=lambda p: steps.append((p.step, p.steps))
    )
    assert (artifact.kind, artifact.paths, artifact.partial) == (JobKind.UPSCALE, (str(out),), False)
    assert (artifact.width, artifact.height) == (128, 128)
    assert steps == [(1, 1)]
    with Image.open(still) as src, Image.open(out) as big:
        assert big.size == (128, 128)
        for key in ("text_prompts", "seed", "iterations", "cut_method"):
            assert big.text[key] == src.text[key]
        assert (big.text["upscale_model"], big.text["upscale_scale"]) == ("tiny", "2")
    source_params, params = images.read_params(still), images.read_params(out)
    assert params["prompts"] == source_params["prompts"]
    assert params["config"] == source_params["config"]
    assert params["upscale"]["model"] == "tiny"
    assert params["upscale"]["scale"] == 2
    assert params["upscale"]["source_sha256"] == images.sha256_file(still)
    # the tiny upscaler shows the picture it was given (a little blurred), not noise
    with Image.open(picture) as other:
        unrelated = np.abs(halved(out) - np.asarray(other.convert("RGB").resize((64, 64)), dtype=float)).mean()
    error = np.abs(halved(out) - pixels(still)).mean()
    assert error < 0.4 * unrelated, (error, unrelated)


def test_a_foreign_jpg_keeps_its_exif_free_form_and_gets_the_upscale_record(
    renderer: Renderer, picture2: Path, tmp_path: Path
) -> None:
    out = tmp_path / "big.jpg"
    artifact = renderer.render(upscale(init_image=str(picture2), upscale_tile=16), out)
    assert (artifact.width, artifact.height) == (80, 80)
    assert not artifact.partial
    assert images.read_params(out)["upscale"]["scale"] == 2
    assert np.abs(halved(out) - pixels(picture2)).mean() < 12


def test_tiles_report_progress_and_give_nearly_the_whole_image(renderer: Renderer, still: Path, tmp_path: Path) -> None:
    seen: list[Progress] = []
    tiled = renderer.render(
        upscale(init_image=str(still), upscale_tile=16), tmp_path / "t.png", on_progress=seen.append
    )
    assert [(p.iteration, p.total, p.step, p.steps) for p in seen] == [(k, 16, k, 16) for k in range(1, 17)]
    assert tiled.steps_done == 16
    preview = seen[3].preview()
    with Image.open(io.BytesIO(preview)) as img:
        assert img.format == "WEBP"
        assert img.size == (128, 128)
    renderer.render(upscale(init_image=str(still)), tmp_path / "w.png")
    diff = np.abs(pixels(tmp_path / "t.png").astype(int) - pixels(tmp_path / "w.png").astype(int))
    assert diff.mean() < 2


def test_a_cancelled_still_is_a_whole_partial_picture(renderer: Renderer, still: Path, tmp_path: Path) -> None:
    cancel = threading.Event()

    def stop(p: Progress) -> None:
        if p.iteration == 4:
            cancel.set()

    out = tmp_path / "part.png"
    artifact = renderer.render(upscale(init_image=str(still), upscale_tile=16), out, on_progress=stop, cancel=cancel)
    assert artifact.partial
    assert artifact.steps_done == 4
    with Image.open(out) as img:
        assert img.size == (128, 128)  # the tiles not done are a plain bicubic enlargement
    assert np.abs(halved(out) - pixels(still)).mean() < 12


def test_a_video_keeps_its_frame_count_rate_and_audio_at_twice_the_size(
    renderer: Renderer, clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "big 'clip'; x.mp4"
    seen: list[tuple[int, int, int]] = []
    artifact = renderer.render(
        upscale(video=str(clip)), out, on_progress=lambda p: seen.append((p.frame, p.frames, p.step))
    )
    assert seen == [(k, 8, k) for k in range(1, 9)]
    assert (artifact.frames_done, artifact.width, artifact.height, artifact.partial) == (8, 128, 96, False)
    info = probe.probe_video(out)
    assert (info.frames, info.width, info.height, info.has_audio) == (8, 128, 96, True)
    assert info.fps == pytest.approx(8.0)
    assert info.seconds == pytest.approx(1.0, abs=0.15)
    comment = json.loads(ffmpeg.read_tags(out)["comment"])
    assert comment["upscale"]["model"] == "tiny"
    assert comment["upscale"]["scale"] == 2
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no working files left behind


def test_a_silent_video_under_a_byte_limit(renderer: Renderer, tmp_path: Path) -> None:
    source = make_video(tmp_path / "silent.mp4", seconds=1, fps=6, size=(96, 64))
    out = tmp_path / "big.mp4"
    artifact = renderer.render(upscale(video=str(source), max_bytes=40_000), out)
    info = probe.probe_video(out)
    assert artifact.frames_done == 6
    assert not info.has_audio
    assert out.stat().st_size <= 40_000


def test_a_cancelled_video_is_playable_with_the_frames_done(renderer: Renderer, clip: Path, tmp_path: Path) -> None:
    cancel = threading.Event()

    def stop(p: Progress) -> None:
        if p.frame == 3:
            cancel.set()

    out = tmp_path / "part.mp4"
    artifact = renderer.render(upscale(video=str(clip)), out, on_progress=stop, cancel=cancel)
    assert artifact.partial
    assert artifact.frames_done == 3
    assert probe.probe_video(out).frames == 3


def test_resume_at_a_frame_boundary_does_not_redo_frames_and_equals_a_whole_run(
    renderer: Renderer, clip: Path, tmp_path: Path
) -> None:
    spec = upscale(video=str(clip))
    renderer.render(spec, tmp_path / "whole.mp4")
    saved: list[bytes] = []
    cancel = threading.Event()

    def stop(p: Progress) -> None:
        if p.frame == 4:
            saved.append(p.checkpoint())  # taken in frame 4: holds frames 1-3
            cancel.set()

    work = tmp_path / "work"  # the job's work folder, kept between its attempts
    assert renderer.render(spec, tmp_path / "first.mp4", on_progress=stop, cancel=cancel, work_dir=work).partial
    frames: list[int] = []
    resumed = renderer.render(
        spec, tmp_path / "resumed.mp4", on_progress=lambda p: frames.append(p.frame), resume=saved[0], work_dir=work
    )
    assert frames == [4, 5, 6, 7, 8]
    assert (resumed.frames_done, resumed.partial) == (8, False)
    assert decoded(tmp_path / "resumed.mp4") == decoded(tmp_path / "whole.mp4")
    with pytest.raises(InvalidJob, match="different job"):
        renderer.render(upscale(video=str(clip), upscale_tile=16), tmp_path / "other.mp4", resume=saved[0])


@pytest.mark.parametrize(
    ("changes", "output", "message"),
    [
        ({"init_image": "TEXT"}, "o.png", "not an image"),
        ({"video": "TEXT"}, "o.mp4", "not a video"),
        ({"video": "STILL"}, "o.mp4", "still image, not a video"),
        ({"init_image": "STILL", "video": "CLIP"}, "o.png", "one input"),
        ({}, "o.png", "one input"),
        ({"init_image": "STILL", "upscale_model": "RealESRGAN_x8"}, "o.png", "unknown upscaler"),
        ({"init_image": "STILL", "upscale_tile": -1}, "o.png", "upscale_tile"),
        ({"init_image": "STILL"}, "o.mp4", "written as .png"),
        ({"video": "CLIP"}, "o.png", "written as .mp4"),
    ],
)
def test_bad_input_is_refused_before_any_work(
    renderer: Renderer,
    still: Path,
    clip: Path,
    tmp_path: Path,
    changes: dict[str, object],
    output: str,
    message: str,
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    files = {"TEXT": str(text), "STILL": str(still), "CLIP": str(clip)}
    values = {key: files.get(str(value), value) for key, value in changes.items()}
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(InvalidJob, match=message):
        renderer.render(upscale(**values), out_dir / output)
    assert list(out_dir.iterdir()) == []


def test_too_many_output_pixels_are_refused(still: Path, clip: Path, tmp_path: Path) -> None:
    small = Renderer("cpu", max_upscale_pixels=100 * 100)
    with pytest.raises(InvalidJob, match="more than the 10,000 pixels"):
        small.render(upscale(init_image=str(still)), tmp_path / "o.png")
    with pytest.raises(InvalidJob, match="gives 128×96"):
        small.render(upscale(video=str(clip)), tmp_path / "o.mp4")
    too_long = Renderer("cpu", max_video_seconds=0.5)
    with pytest.raises(InvalidJob, match="lasts"):
        too_long.render(upscale(video=str(clip)), tmp_path / "o.mp4")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_the_seed_api_takes_tiny_as_a_model_filename(still: Path, tmp_path: Path) -> None:
    [written] = seed_esrgan.inference_realesrgan(still, "tiny", output_images_path=tmp_path)
    with Image.open(written) as img:
        assert img.size == (128, 128)
        assert img.text["seed"] == "5"  # the seed's wrapper keeps the PNG text chunks too


def test_the_registry_names_work_without_their_suffix() -> None:
    assert esrgan.known_scale("RealESRGAN_x2plus") == esrgan.known_scale("RealESRGAN_x2plus.pth") == 2
    assert esrgan.known_scale("RealESRGAN_x4plus") == 4
    assert esrgan.known_scale("tiny") == 2


_DIGEST = """
import hashlib, numpy as np, torch
torch.set_num_threads(1)
from PIL import Image
from engine.models import esrgan
y, x = np.mgrid[0:24, 0:40]
img = Image.fromarray(np.stack([x * 6, y * 10, (x * y) % 256], -1).astype(np.uint8))
out = esrgan.upscale_image(img, esrgan.load_upscaler("tiny"))
print(hashlib.sha256(out.tobytes()).hexdigest())
"""


def test_the_tiny_upscaler_is_the_same_in_every_process_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    esrgan._load_tiny.cache_clear()
    model = esrgan.load_upscaler("tiny")
    assert torch.equal(torch.rand(4), expected)
    assert model.scale == 2
    assert model.architecture.id == "ESRGAN"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    digests = {
        subprocess.run(
            [sys.executable, "-c", _DIGEST], env=env, capture_output=True, text=True, check=True, timeout=120
        ).stdout.strip()
        for _ in range(2)
    }
    y, x = np.mgrid[0:24, 0:40]
    img = Image.fromarray(np.stack([x * 6, y * 10, (x * y) % 256], -1).astype(np.uint8))
    here = hashlib.sha256(esrgan.upscale_image(img, model).tobytes()).hexdigest()
    assert digests == {here}
