"""Probing and validating user media before any rendering: videos through ffmpeg, stills through Pillow.

No torch here: the bot imports this module to check attachments at submit, before a job exists,
and the pipelines check their inputs again with the same functions. Only the accepted containers
(`containers`) and still formats (`stills`) get past them. Every check raises InvalidJob with a
one-line message a member can read (the file's name, never its folder), and writes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path

from engine.errors import InvalidJob
from engine.media import ffmpeg, stills

log = logging.getLogger(__name__)

# ffmpeg demuxers that mean "a single still picture", not a video
_STILL_CONTAINERS = ("image2", "_pipe")
# Decoding a video the size limits allow takes seconds; a file built to decode slowly is stopped here.
DECODE_TIMEOUT_S = 300.0
# A decode that stops this far short of the header's duration is a truncated file.
_TRUNCATED_FRACTION = 0.9


@dataclasses.dataclass(frozen=True, slots=True)
class VideoInfo:
    """What a video holds: decoded frame count and seconds, header frame rate and size, audio or not."""

    frames: int
    seconds: float
    fps: float
    width: int
    height: int
    has_audio: bool
    codec: str


def _name(path: str | os.PathLike[str]) -> str:
    return Path(path).name


def probe_header(path: str | os.PathLike[str], *, cancel: threading.Event | None = None) -> ffmpeg.Header:
    """The header of a video a user gave us (no decoding), or InvalidJob saying why it is not a video."""
    file = Path(path)
    if not file.is_file():
        raise InvalidJob(f"{_name(path)}: no such file")
    if file.stat().st_size == 0:
        raise InvalidJob(f"{_name(path)}: the file is empty")
    try:
        header = ffmpeg.read_header(file, cancel=cancel)  # InvalidJob for a container we do not accept
    except ffmpeg.FFmpegError as exc:
        log.info("not a video: %s (%s; %s)", file, exc, exc.stderr_tail)
        raise InvalidJob(f"{_name(path)}: not a video that can be read (truncated, corrupt or no picture)") from None
    if any(part in header.container for part in _STILL_CONTAINERS):
        raise InvalidJob(f"{_name(path)}: this is a still image, not a video")
    if header.width <= 0 or header.height <= 0:
        raise InvalidJob(f"{_name(path)}: the video has no picture size")
    return header


def probe_video(
    path: str | os.PathLike[str], *, timeout: float = DECODE_TIMEOUT_S, cancel: threading.Event | None = None
) -> VideoInfo:
    """Frame count, duration, frame rate, size, audio and codec of a video, by decoding it once (no ffprobe)."""
    header = probe_header(path, cancel=cancel)
    return _decode_info(path, header, timeout, cancel)


def _decode_info(
    path: str | os.PathLike[str], header: ffmpeg.Header, timeout: float, cancel: threading.Event | None
) -> VideoInfo:
    try:
        report = ffmpeg.decode_video(path, timeout=timeout, cancel=cancel)
    except ffmpeg.FFmpegError as exc:
        log.info("undecodable video %s: %s (%s)", path, exc, exc.stderr_tail)
        raise InvalidJob(f"{_name(path)}: the video is corrupt and cannot be decoded") from None
    if report.frames == 0:
        raise InvalidJob(f"{_name(path)}: the video has no frames")
    if report.errors and header.duration > 0 and report.seconds < _TRUNCATED_FRACTION * header.duration:
        log.info("truncated video %s: %s", path, report.errors)
        raise InvalidJob(f"{_name(path)}: the video is truncated or corrupt")
    if report.errors:
        log.warning("video %s decoded with errors: %s", path, report.errors)
    fps = header.fps or (report.frames / report.seconds if report.seconds > 0 else 0.0)
    return VideoInfo(
        frames=report.frames,
        seconds=report.seconds or header.duration,
        fps=fps,
        width=header.width,
        height=header.height,
        has_audio=header.audio_codec is not None,
        codec=header.codec,
    )


def check_video(
    path: str | os.PathLike[str],
    *,
    max_seconds: float | None = None,
    max_frames: int | None = None,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    timeout: float = DECODE_TIMEOUT_S,
    cancel: threading.Event | None = None,
) -> VideoInfo:
    """Validate a user's video against the limits; InvalidJob (one line) for anything unusable.

    Only MP4/MOV, Matroska/WebM, AVI and GIF files are opened at all (DASH or HLS manifests, concat
    scripts and image sequences are refused before ffmpeg sees them). Size and header limits are
    checked before decoding, so an over-long video is refused cheaply; the decode has `timeout`.
    """
    name = _name(path)
    file = Path(path)
    if max_bytes is not None and file.is_file() and file.stat().st_size > max_bytes:
        raise InvalidJob(f"{name}: the file is {_mib(file.stat().st_size)}, more than the {_mib(max_bytes)} allowed")
    header = probe_header(path, cancel=cancel)
    if max_pixels is not None and header.width * header.height > max_pixels:
        raise InvalidJob(
            f"{name}: {header.width}×{header.height} is more than the {max_pixels:,} pixels allowed per frame"
        )
    if max_seconds is not None and header.duration > max_seconds:
        raise InvalidJob(f"{name}: the video lasts {header.duration:.1f} s, more than the {max_seconds:g} s allowed")
    if max_frames is not None and header.fps > 0 and header.duration * header.fps > max_frames * 1.05:
        raise InvalidJob(f"{name}: about {header.duration * header.fps:.0f} frames, more than the {max_frames} allowed")
    info = _decode_info(path, header, timeout, cancel)
    # The header can lie or be missing; the decoded figures are the ones that count.
    if max_seconds is not None and info.seconds > max_seconds:
        raise InvalidJob(f"{name}: the video lasts {info.seconds:.1f} s, more than the {max_seconds:g} s allowed")
    if max_frames is not None and info.frames > max_frames:
        raise InvalidJob(f"{name}: {info.frames} frames, more than the {max_frames} allowed")
    return info


def check_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    timeout: float = stills.DECODE_TIMEOUT_S,
) -> tuple[int, int]:
    """Validate a user's still image (PNG, JPEG, WebP, GIF or BMP, decoded in full within `timeout`);
    returns its (width, height) or raises InvalidJob (one line)."""
    name = _name(path)
    file = Path(path)
    if not file.is_file():
        raise InvalidJob(f"{name}: no such file")
    size = file.stat().st_size
    if size == 0:
        raise InvalidJob(f"{name}: the file is empty")
    if max_bytes is not None and size > max_bytes:
        raise InvalidJob(f"{name}: the file is {_mib(size)}, more than the {_mib(max_bytes)} allowed")
    picture = stills.decode_still(file, max_pixels=max_pixels, timeout=timeout)
    return picture.size


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
