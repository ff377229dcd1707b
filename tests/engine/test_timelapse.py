"""Timelapses of a still's optimisation: one frame per saved iteration, through cancel and resume."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from engine.errors import InvalidJob
from engine.jobs import JobKind, Progress
from engine.media import ffmpeg, probe
from engine.renderer import Renderer
from tests.support.specs import tiny_spec


def decoded(path: Path) -> bytes:
    args = ["-i", ffmpeg.file_arg(path), "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    return ffmpeg.run(args).stdout


@pytest.mark.parametrize(("iterations", "every", "frames"), [(6, 2, 3), (5, 2, 3), (4, 1, 4)])
def test_one_frame_per_saved_iteration_and_the_last(
    renderer: Renderer, tmp_path: Path, iterations: int, every: int, frames: int
) -> None:
    out = tmp_path / "apple.png"
    artifact = renderer.render(tiny_spec(iterations=iterations, timelapse_every=every), out)
    assert artifact.paths == (str(out), str(tmp_path / "apple.timelapse.mp4"))
    info = probe.probe_video(artifact.paths[1])
    assert (info.frames, info.width, info.height) == (frames, 64, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["apple.png", "apple.timelapse.mp4"]  # no working files


def test_no_timelapse_unless_asked(renderer: Renderer, tmp_path: Path) -> None:
    assert renderer.render(tiny_spec(), tmp_path / "a.png").paths == (str(tmp_path / "a.png"),)


def test_a_resumed_job_keeps_the_frames_before_its_checkpoint(renderer: Renderer, tmp_path: Path) -> None:
    spec = tiny_spec(iterations=6, timelapse_every=2)
    whole = renderer.render(spec, tmp_path / "whole.png")
    saved: list[bytes] = []
    cancel = threading.Event()

    def stop(p: Progress) -> None:
        if p.iteration == 3:
            saved.append(p.checkpoint())
            cancel.set()

    work = tmp_path / "work"  # the job's work folder, kept between its attempts
    assert renderer.render(spec, tmp_path / "first.png", on_progress=stop, cancel=cancel, work_dir=work).partial
    resumed = renderer.render(spec, tmp_path / "resumed.png", resume=saved[0], work_dir=work)
    assert probe.probe_video(resumed.paths[1]).frames == 3
    assert decoded(Path(resumed.paths[1])) == decoded(Path(whole.paths[1]))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"timelapse_every": 0}, "whole number"),
        ({"timelapse_every": 7}, "more than the 3 iterations"),
        ({"timelapse_every": 1, "kind": JobKind.ANIMATION, "frames": 2}, "for still images"),
    ],
)
def test_bad_timelapses_are_refused_before_rendering(
    renderer: Renderer, tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    spec = dataclasses.replace(tiny_spec(), **changes)  # type: ignore[arg-type]
    with pytest.raises(InvalidJob, match=message):
        renderer.render(spec, tmp_path / ("a.mp4" if spec.kind is JobKind.ANIMATION else "a.png"))
    assert list(tmp_path.iterdir()) == []
