"""The video containers a member's file may be, recognised by its first bytes before ffmpeg sees it.

ffmpeg's probing would pick any of its demuxers, including ones that open other files or URLs
(DASH and HLS manifests, concat scripts, image sequences); a DASH manifest named `clip.mp4` whose
`<BaseURL>` names a local file is read like a video. So every input is sniffed here and ffmpeg is
told which demuxer to use (docs/engine.md, "ffmpeg"). No torch, no ffmpeg here.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import InvalidJob

ACCEPTED = "MP4/MOV, MKV/WebM, AVI or GIF"
# ffmpeg's demuxer for each accepted container, and the whitelist every ffmpeg input is opened under
DEMUXERS = ("mov", "matroska", "avi", "gif")
FORMAT_WHITELIST = ",".join(DEMUXERS)

# ISO base media / QuickTime files start with a box of one of these types (ftyp first in MP4s)
_MOV_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"}
# ftyp brands of still pictures (HEIF, AVIF) that the mov demuxer would read as a one-frame video
_STILL_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"mif1", b"avif"}
_STILL_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM")
_SNIFF_BYTES = 16


def demuxer_for(path: str | os.PathLike[str]) -> str:
    """The ffmpeg demuxer of an accepted video file; InvalidJob (a member-facing line) for anything else."""
    name = Path(path).name
    try:
        with open(path, "rb") as file:
            head = file.read(_SNIFF_BYTES)
    except FileNotFoundError:
        raise InvalidJob(f"{name}: no such file") from None
    except OSError:
        raise InvalidJob(f"{name}: the file cannot be read") from None
    if not head:
        raise InvalidJob(f"{name}: the file is empty")
    demuxer = _recognise(head)
    if demuxer is None:
        if _is_still(head):
            raise InvalidJob(f"{name}: this is a still image, not a video")
        raise InvalidJob(f"{name} is not a video file we accept ({ACCEPTED})")
    return demuxer


def _recognise(head: bytes) -> str | None:
    if head[4:8] in _MOV_BOXES and not (head[4:8] == b"ftyp" and head[8:12] in _STILL_BRANDS):
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska and WebM
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    return None


def _is_still(head: bytes) -> bool:
    webp = head.startswith(b"RIFF") and head[8:12] == b"WEBP"
    heif = head[4:8] == b"ftyp" and head[8:12] in _STILL_BRANDS
    return webp or heif or head.startswith(_STILL_MAGIC)
