"""Fitting a result under an upload limit, and the marker that tells /job what was posted instead of it.

Everything here blocks (it re-encodes with the engine's torch-free media tools): call it through
`asyncio.to_thread`.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.media.shrink import fit_image, fit_video

_VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".gif")


def fit(path: Path, max_bytes: int) -> Path:
    """`path` itself when it fits, else a re-encoded copy beside it that does (JPEG/WebP, or a smaller H.264)."""
    if path.stat().st_size <= max_bytes:
        return path
    if path.suffix.lower() in _VIDEO_SUFFIXES:
        return fit_video(path, max_bytes, path.with_name(f"{path.stem}.fit.mp4"))
    return fit_image(path, max_bytes, path.parent)


def _marker(result: Path) -> Path:
    return result.with_name(result.name + ".posted.json")


def fit_for_upload(full: Path, limit: int) -> tuple[Path, int, int]:
    """(the file to upload, the full size, the upload's size); a re-encoded upload leaves a marker for /job."""
    upload = fit(full, limit)
    full_size, size = full.stat().st_size, upload.stat().st_size
    if upload != full:
        _marker(full).write_text(json.dumps({"posted": str(upload), "full_size": full_size, "posted_size": size}))
    return upload, full_size, size


def fitted_info(result: Path) -> tuple[Path, int] | None:
    """(the file posted in place of `result`, `result`'s full size) when it had to be re-encoded, else None."""
    try:
        data = json.loads(_marker(result).read_text())
        return Path(str(data["posted"])), int(data["full_size"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
