"""Animations and style transfer through the Renderer: frame counts, progress, cancel, resume, limits, fit."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
from pathlib import Path

import pytest
from PIL import Image

from engine.errors import InvalidJob, StaleCheckpoint
from engine.jobs import Artifact, JobKind, JobSpec, Progress
from engine.media import ffmpeg, probe
from engine.renderer import Renderer
from tests.support.mediafiles import make_video

TINY = {"vqgan_model": "tiny", "clip_model": "tiny", "num_cuts": 8, "width": 64, "height": 64}


def anim_spec(**changes: object) -> JobSpec:
    base = JobSpec(
        kind=JobKind.ANIMATION, text_prompts="a forest ^ a city", iterations=2, frames=4, zoom=1.1, fps=4.0, seed=5,
        **TINY,  # type: ignore[arg-type]
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def style_spec(video: Path, **changes: object) -> JobSpec:
    base = JobSpec(
        kind=JobKind.STYLE_TRANSFER, text_prompts="oil painting", iterations=2, video=str(video), extraction_fps=4.0,
        fps=0.0, seed=5, **TINY,  # type: ignore[arg-type]
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def decoded(path: Path) -> bytes:
    """Every frame of a video as raw RGB bytes."""
    args = ["-i", ffmpeg.file_arg(path), "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    return ffmpeg.run(args).stdout


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer("cpu", max_frames=12, max_video_seconds=3.0)


@pytest.fixture(scope="module")
def clip_with_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("src") / "clip.mp4", seconds=2, fps=10, audio="aac")


def test_animation_renders_every_frame_with_progress_per_iteration(renderer: Renderer, tmp_path: Path) -> None:
    seen: list[Progress] = []
    spec = anim_spec(iterations_first_frame=3, shift_x=2, shift_y=-1)
    artifact = renderer.render(spec, tmp_path / "a.mp4", on_progress=seen.append)
    assert artifact == Artifact(
        kind=JobKind.ANIMATION, paths=(str(tmp_path / "a.mp4"),), seed=5, width=64, height=64, steps_done=9,
        frames_done=4, partial=False,
    )  # fmt: skip
    assert [(p.frame, p.iteration, p.total, p.step) for p in seen] == [
        (1, 1, 3, 1), (1, 2, 3, 2), (1, 3, 3, 3), (2, 1, 2, 4), (2, 2, 2, 5), (3, 1, 2, 6), (3, 2, 2, 7),
        (4, 1, 2, 8), (4, 2, 2, 9),
    ]  # fmt: skip
    assert {(p.frames, p.steps) for p in seen} == {(4, 9)}
    info = probe.probe_video(tmp_path / "a.mp4")
    assert (info.frames, info.fps, info.width, info.height, info.has_audio) == (4, 4.0, 64, 64, False)
    tags = ffmpeg.read_tags(tmp_path / "a.mp4")
    assert tags["title"] == "a forest ^ a city"
    params = json.loads(tags["comment"])
    assert params["config"]["seed"] == 5
    assert params["spec"]["zoom"] == 1.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]  # the working folder is gone


def test_interpolation_raises_the_frame_rate_and_keeps_the_length(renderer: Renderer, tmp_path: Path) -> None:
    renderer.render(anim_spec(iterations=1, interpolate_fps=8.0), tmp_path / "a.mp4")
    info = probe.probe_video(tmp_path / "a.mp4")
    assert (info.frames, info.fps) == (8, 8.0)


def test_cancel_returns_a_playable_video_of_the_frames_done(renderer: Renderer, tmp_path: Path) -> None:
    cancel = threading.Event()
    previews: list[bytes] = []

    def on_progress(p: Progress) -> None:
        if p.frame == 2 and p.iteration == 1:
            previews.append(p.preview())
        if p.frame == 2 and p.iteration == p.total:
            cancel.set()

    artifact = renderer.render(anim_spec(), tmp_path / "a.mp4", on_progress=on_progress, cancel=cancel)
    assert (artifact.partial, artifact.frames_done, artifact.steps_done) == (True, 2, 4)
    assert probe.probe_video(tmp_path / "a.mp4").frames == 2
    assert len(previews) == 1
    with Image.open(io.BytesIO(previews[0])) as img:
        assert (img.format, img.size) == ("WEBP", (64, 64))


def test_cancel_in_the_first_frame_still_gives_a_video(renderer: Renderer, tmp_path: Path) -> None:
    cancel = threading.Event()
    artifact = renderer.render(anim_spec(), tmp_path / "a.mp4", on_progress=lambda p: cancel.set(), cancel=cancel)
    assert (artifact.partial, artifact.frames_done, artifact.steps_done) == (True, 0, 1)
    assert probe.probe_video(tmp_path / "a.mp4").frames == 1
    cancel = threading.Event()
    cancel.set()  # cancelled before it started: the starting picture
    artifact = renderer.render(anim_spec(), tmp_path / "b.mp4", cancel=cancel)
    assert (artifact.partial, artifact.frames_done, artifact.steps_done) == (True, 0, 0)
    assert probe.probe_video(tmp_path / "b.mp4").frames == 1


RESUMABLE = anim_spec(frames=5, smoother=True, smoother_alpha=0.5, smoother_buffer_len=3, seed=None)


@pytest.fixture(scope="module")
def uninterrupted(renderer: Renderer, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("whole") / "whole.mp4"
    assert renderer.render(dataclasses.replace(RESUMABLE, seed=11), out).frames_done == 5
    return decoded(out)


@pytest.mark.parametrize("at", [(2, 2), (3, 1)], ids=["frame boundary", "mid-frame"])
def test_resume_continues_without_redoing_frames_and_equals_an_uninterrupted_run(
    renderer: Renderer, tmp_path: Path, at: tuple[int, int], uninterrupted: bytes
) -> None:
    spec = RESUMABLE
    saved: list[bytes] = []
    cancel = threading.Event()

    def stop_at(p: Progress) -> None:
        if (p.frame, p.iteration) == at:
            saved.append(p.checkpoint())
            cancel.set()

    work = tmp_path / "work"  # the job's work folder, kept between its attempts
    first = renderer.render(
        dataclasses.replace(spec, seed=11), tmp_path / "first.mp4", on_progress=stop_at, cancel=cancel, work_dir=work
    )
    assert first.partial
    steps: list[int] = []
    resumed = renderer.render(
        spec, tmp_path / "resumed.mp4", on_progress=lambda p: steps.append(p.step), resume=saved[0], work_dir=work
    )
    done_at_checkpoint = (at[0] - 1) * 2 + at[1]
    assert steps == list(range(done_at_checkpoint + 1, 11))  # nothing before the checkpoint is rendered again
    assert (resumed.seed, resumed.frames_done, resumed.steps_done, resumed.partial) == (11, 5, 10, False)
    assert decoded(tmp_path / "resumed.mp4") == uninterrupted


def test_a_checkpoint_of_another_job_is_refused(renderer: Renderer, tmp_path: Path) -> None:
    saved: list[bytes] = []
    cancel = threading.Event()
    renderer.render(
        anim_spec(),
        tmp_path / "a.mp4",
        on_progress=lambda p: (saved.append(p.checkpoint()), cancel.set()),
        cancel=cancel,
    )
    with pytest.raises(InvalidJob, match="different job"):
        renderer.render(anim_spec(zoom=1.2), tmp_path / "b.mp4", resume=saved[0])


def test_the_checkpoint_does_not_grow_with_the_frames_done(renderer: Renderer, tmp_path: Path) -> None:
    spec = anim_spec(frames=7, iterations=1, width=96, height=96)
    work = tmp_path / "work"
    sizes: dict[int, int] = {}

    def measure(p: Progress) -> None:
        if p.frame in (3, 7):  # after 2 and after 6 finished frames
            sizes[p.frame - 1] = len(p.checkpoint())

    renderer.render(spec, tmp_path / "a.mp4", on_progress=measure, work_dir=work)
    frame_bytes = min(p.stat().st_size for p in (work / "frames").glob("frame_*.jpg"))
    # four more frames add four names and checksums (~100 bytes each), never their pictures
    assert sizes[6] - sizes[2] < min(1024, frame_bytes)
    assert work.is_dir()  # a caller's work folder is the caller's to remove


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_resume_whose_frames_are_missing_or_altered_is_refused_cleanly(
    renderer: Renderer, tmp_path: Path, damage: str
) -> None:
    spec = anim_spec(seed=11)
    work = tmp_path / "work"
    saved: list[bytes] = []
    cancel = threading.Event()

    def stop_in_frame_3(p: Progress) -> None:
        if p.frame == 3:
            saved.append(p.checkpoint())
            cancel.set()

    renderer.render(spec, tmp_path / "first.mp4", on_progress=stop_in_frame_3, cancel=cancel, work_dir=work)
    frame = work / "frames" / "frame_000000000002.jpg"
    if damage == "missing":
        frame.unlink()
    else:
        frame.write_bytes(frame.read_bytes()[:-10] + bytes(10))
    seen: list[Progress] = []
    with pytest.raises(StaleCheckpoint, match=r"^the saved frames of this job are missing$"):
        renderer.render(spec, tmp_path / "resumed.mp4", on_progress=seen.append, resume=saved[0], work_dir=work)
    assert not seen
    assert not (tmp_path / "resumed.mp4").exists()
    with pytest.raises(InvalidJob, match="saved frames"):  # without the work folder its frames are gone too
        renderer.render(spec, tmp_path / "elsewhere.mp4", resume=saved[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.mp4", "work"]  # nothing left behind
    fresh = renderer.render(spec, tmp_path / "again.mp4", work_dir=work)  # the caller starts it over
    assert (fresh.frames_done, fresh.partial) == (4, False)


def test_max_bytes_is_honoured(renderer: Renderer, tmp_path: Path) -> None:
    # 3 noisy frames interpolated to 72: about 53 KB without a limit (measured), so the fit has work to do
    spec = anim_spec(width=128, height=128, frames=3, iterations=1, fps=1.0, interpolate_fps=24.0, max_bytes=40_000)
    renderer.render(spec, tmp_path / "small.mp4")
    assert (tmp_path / "small.mp4").stat().st_size <= 40_000
    info = probe.probe_video(tmp_path / "small.mp4")
    assert (info.frames, info.fps) == (72, 24.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"zoom": 0.0}, "zoom"),
        ({"zoom": -1.0}, "zoom"),
        ({"zoom": 11.0}, "zoom"),
        ({"shift_x": 64}, "shift_x"),
        ({"shift_y": -70}, "shift_y"),
        ({"frames": 13}, "13 frames is more than the 12 allowed"),
        ({"frames": 0}, "frames"),
        ({"fps": 0.0}, "fps"),
        ({"interpolate_fps": -1.0}, "interpolate_fps"),
        ({"max_bytes": 1000}, "max_bytes"),
        ({"smoother": True, "smoother_alpha": 0.0}, "smoother_alpha"),
        ({"change_prompts_on_frame": (0,)}, "change_prompts_on_frame"),
        ({"text_prompts": "a:nan"}, "finite"),
    ],
)
def test_bad_animations_are_refused_before_rendering(
    renderer: Renderer, tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    seen: list[Progress] = []
    with pytest.raises(InvalidJob, match=message) as caught:
        renderer.render(anim_spec(**changes), tmp_path / "a.mp4", on_progress=seen.append)
    assert "\n" not in str(caught.value)
    assert not seen
    assert list(tmp_path.iterdir()) == []


def test_a_video_must_be_written_as_mp4(renderer: Renderer, tmp_path: Path) -> None:
    with pytest.raises(InvalidJob, match=r"\.mp4"):
        renderer.render(anim_spec(), tmp_path / "a.png")


def test_style_transfer_gives_one_frame_per_source_frame_with_the_audio(
    renderer: Renderer, clip_with_audio: Path, tmp_path: Path
) -> None:
    seen: list[Progress] = []
    artifact = renderer.render(
        style_spec(clip_with_audio, source_prompt_weight=0.5, smoother=True),
        tmp_path / "s.mp4",
        on_progress=seen.append,
    )
    info = probe.probe_video(tmp_path / "s.mp4")
    assert (info.frames, info.fps, info.has_audio) == (8, 4.0, True)  # fps 0: the extraction rate, same length
    assert abs(info.seconds - 2.0) < 0.3
    assert (artifact.frames_done, artifact.steps_done, artifact.width, artifact.height) == (8, 16, 72, 52)
    assert [p.frame for p in seen] == [k for k in range(1, 9) for _ in range(2)]
    params = json.loads(ffmpeg.read_tags(tmp_path / "s.mp4")["comment"])  # the mux keeps the metadata
    assert params["spec"]["video"] == "clip.mp4"  # by name: the posted video does not show our folders
    assert params["spec"]["source_prompt_weight"] == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.mp4"]


def test_style_transfer_of_a_silent_video_at_another_rate(renderer: Renderer, tmp_path: Path) -> None:
    silent = make_video(tmp_path / "silent.mp4", seconds=1, fps=10)
    renderer.render(style_spec(silent, extraction_fps=3.0, fps=6.0, iterations=1), tmp_path / "s.mp4")
    info = probe.probe_video(tmp_path / "s.mp4")
    assert (info.frames, info.fps, info.has_audio) == (3, 6.0, False)


def test_with_a_work_folder_every_intermediate_file_is_in_it(
    renderer: Renderer, clip_with_audio: Path, tmp_path: Path
) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    renderer.render(style_spec(clip_with_audio, iterations=1, max_bytes=40_000), out / "s.mp4", work_dir=work)
    assert [p.name for p in out.iterdir()] == ["s.mp4"]  # nothing was staged beside the result
    assert len(list((work / "source").glob("frame_*.jpg"))) == len(list((work / "frames").glob("frame_*.jpg"))) == 8
    assert list((work / "encode").iterdir()) == []  # encoding stages are gone once used


def test_style_transfer_inputs_are_checked_before_rendering(renderer: Renderer, tmp_path: Path) -> None:
    text = tmp_path / "clip.mp4"
    text.write_text("not a video\n")
    with pytest.raises(InvalidJob, match="not a video") as caught:
        renderer.render(style_spec(text), tmp_path / "a.mp4")
    assert "\n" not in str(caught.value)
    long_clip = make_video(tmp_path / "long.mp4", seconds=4, fps=5)
    with pytest.raises(InvalidJob, match="more than the 3 s allowed"):
        renderer.render(style_spec(long_clip), tmp_path / "b.mp4")
    short = make_video(tmp_path / "short.mp4", seconds=2, fps=10)
    with pytest.raises(InvalidJob, match="more than the 12 allowed"):
        renderer.render(style_spec(short, extraction_fps=10.0), tmp_path / "c.mp4")
    with pytest.raises(InvalidJob, match="source video"):
        renderer.render(dataclasses.replace(style_spec(short), video=None), tmp_path / "d.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "long.mp4", "short.mp4"]
