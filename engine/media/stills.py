"""Opening a member's still image: only PNG, JPEG, WebP, GIF and BMP, within a pixel count and a time limit.

Pillow would otherwise try every format it knows, and some run code or other programs when decoded
(EPS hands the file to Ghostscript) or have had decoder bugs (PSD, TIFF, JPEG 2000). Every file a
member gave us is decoded through `decode_still`; messages name the file by its name only. No torch.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from PIL import Image, UnidentifiedImageError

from engine.errors import InvalidJob

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
ACCEPTED = "PNG, JPEG, WebP, GIF or BMP"
# Decoding is linear in pixels; this bounds memory and time for the largest picture we take (8192²).
MAX_PIXELS = 8192 * 8192
# A picture within the pixel bound decodes in about a second; one built to decode slowly stops here.
DECODE_TIMEOUT_S = 30.0


class _TooSlow(Exception):
    """Raised from inside Pillow's reads once the decoding deadline has passed."""


class _DeadlineReader:
    """A file that refuses to be read past a deadline; Pillow decodes block by block through `read`."""

    def __init__(self, file: IO[bytes], deadline: float) -> None:
        self._file, self._deadline = file, deadline

    def read(self, size: int = -1) -> bytes:
        if time.monotonic() > self._deadline:
            raise _TooSlow
        return self._file.read(size)

    def readline(self, size: int = -1) -> bytes:
        if time.monotonic() > self._deadline:
            raise _TooSlow
        return self._file.readline(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()


def decode_still(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = None,
    timeout: float = DECODE_TIMEOUT_S,
    what: str | None = None,
    formats: Sequence[str] = FORMATS,
) -> Image.Image:
    """The fully decoded first frame of the picture at `path`, its `info` (and PNG text as `_text`) kept.

    InvalidJob (one line, the file's name only) when it is missing, not an accepted format, larger
    than `max_pixels` (never more than MAX_PIXELS), truncated or corrupt, or slower than `timeout`.
    `what` ("init image", ...) starts the message; by default the file's name does. `formats` is
    for the seed API's own local files only (its upscaler also reads TIFF).
    """
    name = Path(path).name
    label = f"{what} {name}" if what else name
    limit = MAX_PIXELS if max_pixels is None else min(max_pixels, MAX_PIXELS)
    try:
        with open(path, "rb") as file, warnings.catch_warnings():
            # Pillow warns (then raises) on decompression bombs; the pixel limit below is ours.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            reader = _DeadlineReader(file, time.monotonic() + timeout)
            with Image.open(reader, formats=list(formats)) as opened:  # type: ignore[arg-type]
                width, height = opened.size
                if width * height > limit:
                    raise InvalidJob(f"{label}: {width}×{height} is more than the {limit:,} pixels allowed")
                opened.load()  # all of it: a truncated file fails here, not halfway through a render
                picture = opened.copy()
                picture.info = dict(opened.info)
                text = getattr(opened, "text", None)
                if text:
                    picture.info["_text"] = dict(text)
                return picture
    except InvalidJob:  # a ValueError: kept from the handler below
        raise
    except FileNotFoundError:
        raise InvalidJob(f"{label}: no such file") from None
    except _TooSlow:
        raise InvalidJob(f"{label}: the image took longer than {timeout:g} s to decode") from None
    except Image.DecompressionBombError:
        raise InvalidJob(f"{label}: the image is far too large") from None
    except UnidentifiedImageError:
        raise InvalidJob(f"{label}: not an image file we accept ({ACCEPTED})") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise InvalidJob(f"{label}: not an image that can be read (truncated or corrupt)") from None
