"""Attachments in: size checked from the metadata, downloaded at once (CDN links expire), content verified.

Verifying a member's file means decoding it, which can take long for a file built to be slow, so it
runs in `FileChecks`' own small pool (never the event loop's default executor, which the queue and
the delivery use), each check within a time limit. `check_member_file` is the one place that calls
the engine's checks: what the engine accepts (containers, still formats, decode limits) is decided there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp
import discord

from bot import texts
from bot.errors import BadInput
from engine.errors import InvalidJob
from engine.media.probe import check_image, check_video

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}
_VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".gif", ".avi"}
IMAGE, VIDEO = "image", "video"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What an attachment may be, and how long checking it may take."""

    max_bytes: int
    max_pixels: int
    max_video_seconds: float
    max_frames: int
    timeout_s: float = 120.0


@dataclasses.dataclass(frozen=True, slots=True)
class FileInfo:
    """What a check learnt of a file: a video's length in seconds (None for a still)."""

    seconds: float | None = None


def check_member_file(kind: str, path: Path, limits: Limits) -> FileInfo:
    """Check a member's file with the engine's checks (blocking); InvalidJob saying why it is refused."""
    if kind == VIDEO:
        info = check_video(
            path,
            max_seconds=limits.max_video_seconds,
            max_frames=limits.max_frames,
            max_pixels=limits.max_pixels,
            max_bytes=limits.max_bytes,
            timeout=limits.timeout_s,
        )
        return FileInfo(seconds=info.seconds)
    check_image(path, max_pixels=limits.max_pixels, max_bytes=limits.max_bytes, timeout=limits.timeout_s)
    return FileInfo()


MemberFileCheck = Callable[[str, Path, Limits], FileInfo]  # check_member_file's shape (tests hold it with a gate)


class FileChecks:
    """Runs `check` on member files: at most `workers` at once, in threads of their own, each within its limit."""

    def __init__(self, workers: int, check: MemberFileCheck = check_member_file) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="file-check")
        self._check = check

    async def run(self, kind: str, path: Path, limits: Limits, shown_name: str) -> FileInfo:
        """The check's result; BadInput naming the member's file (`shown_name`) when it is refused or too slow."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, functools.partial(self._check, kind, path, limits))
        try:
            # the engine's own time limit stops the decoding; this one stops the waiting for a pool that is full
            return await asyncio.wait_for(future, timeout=limits.timeout_s)
        except InvalidJob as e:
            raise BadInput(_user_message(e, path, shown_name)) from None
        except TimeoutError:
            log.warning("checking %s (%s) took over %.0f s; refused", path, shown_name, limits.timeout_s)
            raise BadInput(f"{shown_name}: checking this file took too long; try a smaller or simpler file") from None
        except Exception:
            log.exception("checking %s (%s) failed", path, shown_name)
            raise BadInput(f"{shown_name}: this file could not be read; try another one") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _suffix(filename: str, allowed: set[str]) -> str:
    # Working files are named after the interaction, never after the user's file name.
    suffix = Path(filename).suffix.lower()
    return suffix if suffix in allowed else ".bin"


def shown_name(attachment: discord.Attachment) -> str:
    """The member's file name as it may appear in a reply."""
    return discord.utils.escape_markdown(texts.truncate(Path(attachment.filename).name, 80))


async def _download(attachment: discord.Attachment, dest: Path, limits: Limits, what: str) -> None:
    if attachment.size > limits.max_bytes:
        raise BadInput(f"{what} is {attachment.size / 2**20:.1f} MiB; the limit is {limits.max_bytes / 2**20:.1f} MiB")
    try:
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        await attachment.save(dest)
    except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as e:
        log.warning("download of %s failed: %r", what, e)
        raise BadInput(f"could not download {what}; attach it again") from None
    except OSError:
        log.exception("storing the download of %s at %s failed", what, dest)
        raise BadInput(f"could not store {what} on the bot's side; try again later") from None


async def fetch(
    kind: str, attachment: discord.Attachment, dest_dir: Path, stem: str, limits: Limits, checks: FileChecks
) -> tuple[Path, FileInfo]:
    """Download an attachment into `dest_dir` and check it is a real image or video within the limits."""
    name = shown_name(attachment)
    dest = dest_dir / f"{stem}{_suffix(attachment.filename, _VIDEO_SUFFIXES if kind == VIDEO else _IMAGE_SUFFIXES)}"
    await _download(attachment, dest, limits, f"the {kind} {name}")
    try:
        return dest, await checks.run(kind, dest, limits, name)
    except BaseException:
        await asyncio.to_thread(dest.unlink, missing_ok=True)
        raise


def _user_message(error: InvalidJob, local: Path, shown: str) -> str:
    # The engine names the file it read: show the member their own file name instead, and no folder.
    message = texts.without_paths(str(error).replace(str(local), shown).replace(local.name, shown))
    return message if shown in message else f"{shown}: {message}"
