"""Every ffmpeg call stops: at its time limit, and within a second or two of its job's cancel.

A fake ffmpeg (a shell script that never finishes, found through IMAGEIO_FFMPEG_EXE as the engine
finds the real one) stands in for one that hangs on a hostile or broken file. The bounds below are
safety nets for a loaded machine, not measurements: nothing here asserts that anything is slow.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.errors import Cancelled
from engine.jobs import JobKind, JobSpec
from engine.media import ffmpeg, probe, shrink, video_tools
from engine.renderer import Renderer
from tests.support.mediafiles import make_stills, make_video

STOPS_WITHIN_S = 10.0  # "a second or two", with room for a busy CI machine


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real video, made with the real ffmpeg before any fake is installed."""
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=1, fps=10, audio="aac")


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A losslessly encoded video, far over the 40 kB the fit test asks for."""
    path = tmp_path_factory.mktemp("big") / "big.mp4"
    noise = "testsrc=size=160x120:rate=10:duration=1,noise=alls=100:allf=t"
    args = ["-f", "lavfi", "-i", noise, "-c:v", "libx264", "-qp", "0"]
    ffmpeg.run([*args, "-pix_fmt", "yuv420p", ffmpeg.file_arg(path)])
    assert path.stat().st_size > 40_000
    return path


def _fake(folder: Path, body: str) -> Path:
    script = folder / "fake-ffmpeg"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


@pytest.fixture(params=["hangs", "ignores SIGTERM"])
def hanging_ffmpeg(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The engine's ffmpeg replaced by one that never exits (and, in one variant, ignores SIGTERM)."""
    trap = "trap '' TERM\n" if request.param == "ignores SIGTERM" else ""
    script = _fake(tmp_path, trap + "while :; do sleep 0.05; done\n")
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(script))
    ffmpeg.ffmpeg_exe.cache_clear()
    assert ffmpeg.ffmpeg_exe() == str(script)
    yield script
    monkeypatch.undo()
    ffmpeg.ffmpeg_exe.cache_clear()


def _cancel_soon(delay_s: float = 0.3) -> threading.Event:
    cancel = threading.Event()
    timer = threading.Timer(delay_s, cancel.set)
    timer.daemon = True
    timer.start()
    return cancel


def _stops(call: Callable[[], object], error: type[BaseException], match: str | None = None) -> None:
    began = time.monotonic()
    with pytest.raises(error, match=match):
        call()
    assert time.monotonic() - began < STOPS_WITHIN_S


def test_a_hung_ffmpeg_is_stopped_at_its_time_limit(hanging_ffmpeg: Path) -> None:
    _stops(
        lambda: ffmpeg.run(["-version"], timeout=0.5, what="the video could not be decoded"),
        ffmpeg.FFmpegError,
        r"^the video could not be decoded: it took longer than 0.5 s$",
    )


def test_a_hung_ffmpeg_is_stopped_when_its_job_is_cancelled(hanging_ffmpeg: Path) -> None:
    _stops(lambda: ffmpeg.run(["-version"], cancel=_cancel_soon()), Cancelled)


def test_a_hung_ffmpeg_that_never_reads_its_input_is_stopped_too(hanging_ffmpeg: Path, tmp_path: Path) -> None:
    # far more frame bytes than a pipe holds: the writer blocks, the waiting thread still sees the cancel
    chunks = (bytes(1 << 20) for _ in range(64))
    _stops(lambda: ffmpeg.run(["-i", "pipe:0"], stdin_chunks=chunks, cancel=_cancel_soon()), Cancelled)


@pytest.mark.parametrize(
    "step",
    ["probe", "extract", "encode", "copy audio", "fit"],
)
def test_each_video_step_stops_within_seconds_of_a_cancel(
    clip: Path, big_clip: Path, tmp_path: Path, hanging_ffmpeg: Path, step: str
) -> None:
    stills = make_stills(tmp_path / "stills", 3)
    cancel = _cancel_soon()
    calls: dict[str, Callable[[], object]] = {
        "probe": lambda: probe.check_video(clip, cancel=cancel),
        "extract": lambda: video_tools.extract_video_frames(clip, 5, tmp_path / "frames", cancel=cancel),
        "encode": lambda: video_tools.encode_video(tmp_path / "out.mp4", 5, frames=stills, cancel=cancel),
        "copy audio": lambda: video_tools.copy_video_audio(clip, clip, tmp_path / "out.mp4", cancel=cancel),
        "fit": lambda: shrink.fit_video(big_clip, 40_000, tmp_path / "out.mp4", cancel=cancel),
    }
    _stops(calls[step], Cancelled)
    assert not (tmp_path / "out.mp4").exists()


def test_a_style_transfer_cancelled_while_ffmpeg_hangs_ends_within_seconds(
    renderer: Renderer, clip: Path, tmp_path: Path, hanging_ffmpeg: Path
) -> None:
    spec = JobSpec(
        kind=JobKind.STYLE_TRANSFER, text_prompts="oil", iterations=1, video=str(clip), extraction_fps=4.0,
        fps=0.0, vqgan_model="tiny", clip_model="tiny", num_cuts=2, width=32, height=32,
    )  # fmt: skip
    work = tmp_path / "work"
    _stops(lambda: renderer.render(spec, tmp_path / "out.mp4", cancel=_cancel_soon(), work_dir=work), Cancelled)
    assert not (tmp_path / "out.mp4").exists()
