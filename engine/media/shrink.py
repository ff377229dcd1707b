"""Shrink results under an upload limit (a Discord channel's, or `JobSpec.max_bytes`): stills by
format, quality, then size; videos by a bitrate from the byte budget, then resolution. Never by
failing. No torch here.

The original file is never touched; the fitted copy is written next to it under a new name.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import threading
from pathlib import Path

from PIL import Image

from engine.errors import InvalidJob
from engine.media import ffmpeg, probe

log = logging.getLogger(__name__)

# Below this a still cannot be promised (a 1×1 WebP is ~40 bytes; headers and metadata need room).
MIN_IMAGE_BYTES = 1024
# Below this a video cannot be promised: the MP4 container alone takes a few kilobytes.
MIN_VIDEO_BYTES = 32 * 1024
_QUALITIES = (90, 82, 74, 66, 58, 50, 42)
_SHRINK = 0.75
# Keep this share of the budget for the container and the encoder's rate-control overshoot.
_VIDEO_HEADROOM = 0.80
_AUDIO_BITRATE = 48_000
_MIN_VIDEO_BITRATE = 8_000
# Bits per pixel per frame below which a lower resolution looks better than more compression.
_MIN_BITS_PER_PIXEL = 0.06
_MIN_SIDE = 32
_MAX_ATTEMPTS = 10


def has_alpha(img: Image.Image) -> bool:
    """Whether the picture has transparency (an alpha channel, or a transparent palette entry)."""
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def _encode_still(img: Image.Image, fmt: str, quality: int, exif: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(buffer, "JPEG", quality=quality, optimize=True, progressive=True, exif=exif)
    else:
        img.save(buffer, "WEBP", quality=quality, method=4, exif=exif)
    return buffer.getvalue()


def fit_image(path: str | os.PathLike[str], max_bytes: int, out_dir: str | os.PathLike[str]) -> Path:
    """A version of the still at `path` of at most `max_bytes`: the file itself when it fits already.

    Otherwise JPEG (WebP when it has transparency) at falling quality, then smaller sizes, until it fits;
    written as `<name>.fit.jpg`/`.webp` in `out_dir`.
    """
    source = Path(path)
    if max_bytes < MIN_IMAGE_BYTES:
        raise InvalidJob(f"an image cannot be fitted into {max_bytes} bytes (the least is {MIN_IMAGE_BYTES})")
    if source.stat().st_size <= max_bytes:
        return source
    with Image.open(source) as opened:
        opened.load()
        img = opened.copy()
        # EXIF (the seed's JPG metadata) rides along while there is room; PNG text chunks have no place here
        exif = opened.info.get("exif", b"")
    transparent = has_alpha(img)
    fmt = "WEBP" if transparent else "JPEG"
    img = img.convert("RGBA" if transparent else "RGB")
    data = b""
    for quality in _QUALITIES:
        data = _encode_still(img, fmt, quality, exif)
        if len(data) <= max_bytes:
            break
    else:
        # Shrink at a middling quality; as the area falls the file size falls with it, to 1×1 at worst.
        while len(data) > max_bytes:
            if img.width == 1 and img.height == 1:
                fmt, data = "WEBP", _encode_still(img, "WEBP", 10)
                break
            ratio = max(0.25, min(_SHRINK, math.sqrt(max_bytes / len(data))))
            size = (max(1, int(img.width * ratio)), max(1, int(img.height * ratio)))
            img = img.resize(size, Image.Resampling.LANCZOS)
            data = _encode_still(img, fmt, _QUALITIES[-2])
    suffix = ".webp" if fmt == "WEBP" else ".jpg"
    out = Path(out_dir) / f"{source.stem}.fit{suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    log.info("fitted %s (%d bytes) into %s (%d bytes, %dx%d)", source, source.stat().st_size, out, len(data), *img.size)
    return out


def _scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    def even(value: float) -> int:
        return max(_MIN_SIDE, int(value) - int(value) % 2)

    return even(width * scale), even(height * scale)


def fit_video(
    path: str | os.PathLike[str],
    max_bytes: int,
    out_path: str | os.PathLike[str],
    *,
    cancel: threading.Event | None = None,
) -> Path:
    """Write a version of the video at `path` of at most `max_bytes` to `out_path` and return it.

    A video that fits already is copied as is. Otherwise H.264 yuv420p faststart at a bitrate from the
    byte budget ÷ duration, at a lower resolution when that bitrate is too thin, audio kept at a low
    bitrate; retried smaller until it fits. Each encode has a time limit; `cancel` stops it (`Cancelled`).
    """
    source, out = Path(path), Path(out_path)
    if max_bytes < MIN_VIDEO_BYTES:
        raise InvalidJob(f"a video cannot be fitted into {max_bytes} bytes (the least is {MIN_VIDEO_BYTES})")
    out.parent.mkdir(parents=True, exist_ok=True)
    if source.stat().st_size <= max_bytes:
        if source.resolve() != out.resolve():
            shutil.copyfile(source, out)
        return out
    info = probe.probe_video(source, cancel=cancel)
    seconds = max(info.seconds, 0.1)
    fps = info.fps or 30.0
    audio_bitrate = _AUDIO_BITRATE if info.has_audio else 0
    budget_bits = max_bytes * 8 * _VIDEO_HEADROOM
    video_bitrate = max(_MIN_VIDEO_BITRATE, budget_bits / seconds - audio_bitrate)
    scale = 1.0
    while scale > 0.05 and video_bitrate / (info.width * info.height * scale * scale * fps) < _MIN_BITS_PER_PIXEL:
        scale *= _SHRINK
    work = ffmpeg.working_name(out.parent, ".mp4")
    try:
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            width, height = _scaled_size(info.width, info.height, scale)
            timeout = ffmpeg.work_timeout(info.frames, width * height)
            _encode_fitted(source, work, width, height, int(video_bitrate), audio_bitrate, timeout, cancel)
            size = work.stat().st_size
            log.info(
                "fit attempt %d: %dx%d at %d b/s video, %d b/s audio: %d bytes (limit %d)",
                attempt, width, height, int(video_bitrate), audio_bitrate, size, max_bytes,
            )  # fmt: skip
            if size <= max_bytes:
                os.replace(work, out)
                return out
            # Over: cut the bitrate by the overshoot (and a margin); once it is thin, cut the size too.
            video_bitrate = max(_MIN_VIDEO_BITRATE, video_bitrate * max_bytes / size * 0.85)
            if video_bitrate <= _MIN_VIDEO_BITRATE * 1.5 or attempt >= 3:
                scale *= _SHRINK
            if attempt >= 4:
                audio_bitrate = 0 if audio_bitrate <= 24_000 else 24_000
    finally:
        work.unlink(missing_ok=True)
    raise ffmpeg.FFmpegError(f"the video could not be made smaller than {max_bytes} bytes")


def _encode_fitted(
    source: Path,
    work: Path,
    width: int,
    height: int,
    video_bitrate: int,
    audio_bitrate: int,
    timeout: float,
    cancel: threading.Event | None,
) -> None:
    args = [
        *ffmpeg.input_args(source),
        "-map", "0:v:0", "-map_metadata", "0",
        "-vf", f"scale={width}:{height}:flags=lanczos",
        "-c:v", "libx264", "-preset", "medium", "-pix_fmt", "yuv420p",
        "-b:v", str(video_bitrate), "-maxrate", str(video_bitrate), "-bufsize", str(video_bitrate),
    ]  # fmt: skip
    if audio_bitrate:
        args += ["-map", "0:a:0?", "-c:a", "aac", "-b:a", str(audio_bitrate), "-ac", "1"]
    args += ["-movflags", "+faststart", "-f", "mp4", ffmpeg.file_arg(work)]
    ffmpeg.run(args, timeout=timeout, cancel=cancel, what="the video could not be made smaller")
