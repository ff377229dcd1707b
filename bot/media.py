"""The one place the bot calls media checks and re-encoding (engine.media / engine.fit once they land).

Until then these are small stand-ins with the same signatures, built on Pillow and the bundled ffmpeg.
Everything here blocks: call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import math
import subprocess
from pathlib import Path

import imageio_ffmpeg
from PIL import Image, UnidentifiedImageError

from engine.errors import InvalidJob

log = logging.getLogger(__name__)


def check_image(path: Path, *, max_pixels: int, max_bytes: int) -> tuple[int, int]:
    """Raise InvalidJob unless `path` really is an image within the limits; return its (width, height)."""
    size = path.stat().st_size
    if size > max_bytes:
        raise InvalidJob(f"the image is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.1f} MiB")
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise InvalidJob(f"the image is {width}×{height}; at most {max_pixels} pixels are accepted")
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, InvalidJob):
            raise
        raise InvalidJob("that file is not an image Pillow can read (PNG, JPEG, WebP, GIF)") from None
    return width, height


def check_video(path: Path, *, max_seconds: float, max_frames: int, max_pixels: int, max_bytes: int) -> float:
    """Raise InvalidJob unless `path` really is a video within the limits; return its duration in seconds."""
    size = path.stat().st_size
    if size > max_bytes:
        raise InvalidJob(f"the video is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.1f} MiB")
    try:
        frames = imageio_ffmpeg.read_frames(str(path))
        meta = next(frames)
        frames.close()
    except (RuntimeError, OSError, StopIteration):
        raise InvalidJob("that file is not a video ffmpeg can read") from None
    duration = float(meta.get("duration") or 0.0)
    width, height = meta.get("size") or (0, 0)
    if duration <= 0 or not width:
        raise InvalidJob("that file is not a video ffmpeg can read")
    if duration > max_seconds:
        raise InvalidJob(f"the video is {duration:.1f} s long; the limit is {max_seconds:g} s")
    if width * height > max_pixels:
        raise InvalidJob(f"the video is {width}×{height}; at most {max_pixels} pixels per frame are accepted")
    fps = float(meta.get("fps") or 0.0)
    if fps and duration * fps > max_frames * 10:  # the job samples frames; refuse only absurd sources
        raise InvalidJob(f"the video has about {duration * fps:.0f} frames; that is too many")
    return duration


def fit_image(path: Path, max_bytes: int, out_dir: Path) -> Path:
    """A JPEG of `path` under `max_bytes` (lower quality first, then smaller), written into `out_dir`."""
    out = out_dir / f"{path.stem}-fit.jpg"
    with Image.open(path) as im:
        image = im.convert("RGB")
    scale = 1.0
    while True:
        current = (
            image
            if scale == 1.0
            else image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
        )
        for quality in (90, 75, 60, 45):
            current.save(out, "JPEG", quality=quality, optimize=True)
            if out.stat().st_size <= max_bytes:
                return out
        if current.width <= 16 or current.height <= 16:
            raise InvalidJob("the result cannot be made small enough to upload")
        scale *= 0.7


def video_seconds(path: Path) -> float:
    """A video's duration in seconds (decodes it; call after `check_video`)."""
    _frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(path))
    return max(float(seconds), 0.1)


def fit_video(path: Path, max_bytes: int, out_path: Path) -> Path:
    """An H.264 MP4 of `path` whose bitrate is chosen from the byte budget; halves the size when that is not enough."""
    seconds = video_seconds(path)
    budget_bits = max_bytes * 8 * 0.85  # container overhead and the encoder's overshoot
    scale = 1.0
    for _ in range(4):
        kbps = max(16, math.floor(budget_bits / seconds / 1000))
        vf = f"scale=trunc(iw*{scale}/2)*2:trunc(ih*{scale}/2)*2"
        args = [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(path),
        ]
        args += ["-an", "-vf", vf, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-b:v", f"{kbps}k"]
        args += ["-maxrate", f"{kbps}k", "-bufsize", f"{kbps * 2}k", "-movflags", "+faststart", str(out_path)]
        subprocess.run(args, check=True, capture_output=True, timeout=600)
        if out_path.stat().st_size <= max_bytes:
            return out_path
        scale *= 0.5
    raise InvalidJob("the video cannot be made small enough to upload")


def fit(path: Path, max_bytes: int) -> Path:
    """`path` itself when it fits, else a re-encoded copy beside it that does."""
    if path.stat().st_size <= max_bytes:
        return path
    if path.suffix.lower() in (".mp4", ".webm", ".mov", ".gif"):
        return fit_video(path, max_bytes, path.with_name(f"{path.stem}-fit.mp4"))
    return fit_image(path, max_bytes, path.parent)
