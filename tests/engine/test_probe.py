"""Probing and validation of user media: bad input is a one-line InvalidJob before any rendering."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from engine.errors import InvalidJob
from engine.media import ffmpeg, probe, video_tools
from tests.support.mediafiles import make_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("src") / "clip.mp4", seconds=2, fps=30, audio="aac")


def _refused(path: Path, match: str, **limits: float) -> str:
    before = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(InvalidJob, match=match) as caught:
        probe.check_video(path, **limits)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    assert path.name in message
    assert sorted(p.name for p in path.parent.iterdir()) == before  # nothing written
    return message


def test_probe_reads_frames_seconds_rate_size_audio_and_codec(clip: Path) -> None:
    info = probe.probe_video(clip)
    assert info == probe.VideoInfo(
        frames=60, seconds=pytest.approx(2.0, abs=0.05), fps=30.0, width=64, height=48, has_audio=True, codec="h264"
    )


def test_probe_of_a_silent_webm(tmp_path: Path) -> None:
    path = tmp_path / "clip.webm"
    ffmpeg.run(
        ["-f", "lavfi", "-i", "testsrc=size=32x32:rate=10:duration=1", "-c:v", "libvpx-vp9", ffmpeg.file_arg(path)]
    )
    info = probe.probe_video(path)
    assert (info.frames, info.has_audio, info.codec) == (10, False, "vp9")


def test_a_good_video_passes_within_limits(clip: Path) -> None:
    info = probe.check_video(clip, max_seconds=5, max_frames=100, max_pixels=64 * 48, max_bytes=10**6)
    assert info.frames == 60


def test_a_text_file_named_mp4_is_not_a_video(tmp_path: Path) -> None:
    fake = tmp_path / "holiday.mp4"
    fake.write_text("definitely a video\n" * 50)
    _refused(fake, "not a video")


def test_a_zero_length_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    _refused(empty, "empty")


def test_a_missing_file(tmp_path: Path) -> None:
    _refused(tmp_path / "gone.mp4", "no such file")


def test_a_still_image_is_not_a_video(tmp_path: Path) -> None:
    still = tmp_path / "still.mp4"
    Image.new("RGB", (32, 32)).save(still, "PNG")
    _refused(still, "still image")


def test_a_truncated_mp4_without_its_index(clip: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])  # moov sits at the end: gone
    _refused(cut, "not a video")


def test_a_truncated_faststart_mp4(tmp_path: Path) -> None:
    frames = []
    for index in range(30):
        frames.append(tmp_path / f"{index}.png")
        Image.effect_noise((64, 64), 40 + index).convert("RGB").save(frames[-1])
    whole = Path(video_tools.encode_video(tmp_path / "whole.mp4", 10, frames=frames))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])  # index intact, most frames gone
    _refused(cut, "truncated or corrupt")


def test_too_long_too_many_frames_too_many_pixels_too_many_bytes(clip: Path) -> None:
    assert "2.0 s" in _refused(clip, "lasts", max_seconds=1.5)
    _refused(clip, "frames", max_frames=30)
    _refused(clip, "pixels", max_pixels=32 * 32)
    _refused(clip, "MiB", max_bytes=1000)


def test_check_image_accepts_an_image_and_returns_its_size(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    Image.new("RGB", (40, 30)).save(path)
    assert probe.check_image(path, max_pixels=40 * 30, max_bytes=10**6) == (40, 30)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"just some text, not a picture\n", "not an image"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00 \x00\x00\x00 \x08\x02\x00\x00\x00", "not an image"),
    ],
)
def test_check_image_refuses_what_is_not_an_image(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "picture.png"
    path.write_bytes(content)
    with pytest.raises(InvalidJob, match=match) as caught:
        probe.check_image(path)
    assert "\n" not in str(caught.value)


def test_check_image_refuses_a_truncated_png_and_oversized_images(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    Image.effect_noise((64, 64), 50).save(path)
    cut = tmp_path / "cut.png"
    cut.write_bytes(path.read_bytes()[:-600])
    with pytest.raises(InvalidJob, match="not an image"):
        probe.check_image(cut)
    with pytest.raises(InvalidJob, match="pixels"):
        probe.check_image(path, max_pixels=1000)
    with pytest.raises(InvalidJob, match="MiB"):
        probe.check_image(path, max_bytes=100)


def test_an_audio_file_is_not_a_video(tmp_path: Path) -> None:
    song = tmp_path / "song.m4a"
    ffmpeg.run(["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", ffmpeg.file_arg(song)])
    _refused(song, "not a video")
