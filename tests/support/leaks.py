"""Searching everything the fake Discord received for host paths: texts, files, and the metadata inside files.

A PNG's compressed text chunks (zTXt, compressed iTXt) are decompressed before the search; JPEG EXIF and
MP4 metadata atoms are stored as they are, so the raw bytes cover them. Each needle is searched as
UTF-8 and as UTF-16 (EXIF's Windows tags), so a path cannot hide in either.
"""

from __future__ import annotations

import dataclasses
import zlib


@dataclasses.dataclass(frozen=True, slots=True)
class Leak:
    where: str  # the request (and file) it was found in
    needle: str


def png_texts(data: bytes) -> list[bytes]:
    """The text of every tEXt, zTXt and iTXt chunk of a PNG, decompressed where it is compressed."""
    found: list[bytes] = []
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        key, _, rest = body.partition(b"\0")
        if kind == b"tEXt":
            found.append(key + b"=" + rest)
        elif kind == b"zTXt" and rest:
            found.append(key + b"=" + zlib.decompress(rest[1:]))
        elif kind == b"iTXt" and len(rest) >= 2:
            compressed, text = rest[0], rest[2:]
            _language, _, text = text.partition(b"\0")
            _translated, _, text = text.partition(b"\0")
            found.append(key + b"=" + (zlib.decompress(text) if compressed else text))
    return found


def searchable(data: bytes) -> list[bytes]:
    """`data` itself, and what a PNG's compressed chunks hold."""
    return [data, *png_texts(data)] if data.startswith(b"\x89PNG\r\n\x1a\n") else [data]


def leaks(received: list[tuple[str, bytes]], needles: list[str]) -> list[Leak]:
    """Every (where, needle) for which a needle appears in what was received."""
    forms = [(needle, form) for needle in needles for form in (needle.encode(), needle.encode("utf-16-le"))]
    found = []
    for where, data in received:
        for needle, form in forms:
            if any(form in part for part in searchable(data)):
                found.append(Leak(where, needle))
    return found
