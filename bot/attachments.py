"""Attachments in: size checked from the metadata, downloaded at once (CDN links expire), content verified."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import discord

from bot.errors import BadInput
from engine.errors import InvalidJob
from engine.media.probe import check_image, check_video

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}
_VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".gif", ".avi"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What an attachment may be."""

    max_bytes: int
    max_pixels: int
    max_video_seconds: float
    max_frames: int


def _suffix(filename: str, allowed: set[str]) -> str:
    # Working files are named after the interaction, never after the user's file name.
    suffix = Path(filename).suffix.lower()
    return suffix if suffix in allowed else ".bin"


async def _download(attachment: discord.Attachment, dest: Path, limits: Limits, what: str) -> None:
    if attachment.size > limits.max_bytes:
        raise BadInput(f"{what} is {attachment.size / 2**20:.1f} MiB; the limit is {limits.max_bytes / 2**20:.1f} MiB")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        await attachment.save(dest)
    except discord.HTTPException as e:
        log.warning("download of %s failed: HTTP %s", what, e.status)
        raise BadInput(f"could not download {what}; attach it again") from None


async def fetch_image(attachment: discord.Attachment, dest_dir: Path, stem: str, limits: Limits) -> Path:
    """Download an image attachment into `dest_dir` and check it is a real image within the limits."""
    dest = dest_dir / f"{stem}{_suffix(attachment.filename, _IMAGE_SUFFIXES)}"
    await _download(attachment, dest, limits, f"the image {attachment.filename!r}")
    try:
        await asyncio.to_thread(check_image, dest, max_pixels=limits.max_pixels, max_bytes=limits.max_bytes)
    except InvalidJob as e:
        await asyncio.to_thread(dest.unlink, missing_ok=True)
        raise BadInput(_user_message(e, dest, attachment)) from None
    return dest


async def fetch_video(attachment: discord.Attachment, dest_dir: Path, stem: str, limits: Limits) -> tuple[Path, float]:
    """Download a video attachment into `dest_dir`, check it is a real video within the limits; (path, seconds)."""
    dest = dest_dir / f"{stem}{_suffix(attachment.filename, _VIDEO_SUFFIXES)}"
    await _download(attachment, dest, limits, f"the video {attachment.filename!r}")
    try:
        info = await asyncio.to_thread(
            check_video,
            dest,
            max_seconds=limits.max_video_seconds,
            max_frames=limits.max_frames,
            max_pixels=limits.max_pixels,
            max_bytes=limits.max_bytes,
        )
    except InvalidJob as e:
        await asyncio.to_thread(dest.unlink, missing_ok=True)
        raise BadInput(_user_message(e, dest, attachment)) from None
    return dest, info.seconds


def _user_message(error: InvalidJob, local: Path, attachment: discord.Attachment) -> str:
    # The engine names the file it read: show the member their own file name instead.
    message = str(error).replace(local.name, attachment.filename)
    return message if attachment.filename in message else f"{attachment.filename}: {message}"
