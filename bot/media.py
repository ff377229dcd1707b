"""The one place the bot calls the engine's media checks and re-encoding (engine.media, engine.fit; no torch).

Everything here blocks: call it through `asyncio.to_thread`.
"""

from __future__ import annotations

from pathlib import Path

from engine.media.probe import check_image, check_video
from engine.media.shrink import fit_image, fit_video

__all__ = ["check_image", "check_video", "fit"]

_VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".gif")


def fit(path: Path, max_bytes: int) -> Path:
    """`path` itself when it fits, else a re-encoded copy beside it that does (JPEG/WebP, or a smaller H.264)."""
    if path.stat().st_size <= max_bytes:
        return path
    if path.suffix.lower() in _VIDEO_SUFFIXES:
        return fit_video(path, max_bytes, path.with_name(f"{path.stem}.fit.mp4"))
    return fit_image(path, max_bytes, path.parent)
