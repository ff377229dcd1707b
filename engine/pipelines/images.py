"""Image files in and out: loading inputs, small previews, and saving with the generation parameters.

PNG gets the seed's text keys plus one `engine_params` JSON chunk; JPEG gets EXIF (the JSON in
`UserComment` with an ASCII charset header, the prompts in `XPTitle`, a summary in `XPComment`);
other formats are written without metadata (docs/engine.md, "Metadata and replay").
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from engine.errors import InvalidJob
from engine.media import stills

log = logging.getLogger(__name__)

PARAMS_KEY = "engine_params"
SOFTWARE = "vqbot engine (https://github.com/rkhamilton/vqgan-clip-generator compatible)"
_EXIF_IFD, _USER_COMMENT, _SOFTWARE_TAG, _XP_TITLE, _XP_COMMENT = 0x8769, 0x9286, 0x0131, 0x9C9B, 0x9C9C
_ASCII_HEADER = b"ASCII\0\0\0"
_UNICODE_HEADER = b"UNICODE\0"


def load_rgb(path: str | Path, what: str = "image") -> Image.Image:
    """The file at `path` as an RGB image; InvalidJob (naming the file, never its folder) when it is
    missing, not PNG/JPEG/WebP/GIF/BMP, unreadable, too large or too slow to decode (`media.stills`)."""
    return stills.decode_still(path, what=what).convert("RGB")


def aspect_size(width: int, height: int, aspect: float) -> tuple[int, int]:
    """The seed's rule: keep the area width·height, take the aspect ratio (width/height) of an init image."""
    y = int(math.sqrt(width * height / aspect))
    return int(aspect * y), y


def read_image_with_text(
    path: Path, max_pixels: int | None = None, formats: Sequence[str] = stills.FORMATS
) -> Image.Image:
    """The decoded image with its metadata kept in `info` (PNG text chunks under `_text`, EXIF).

    InvalidJob when it is missing, unreadable or not one of `formats` (`media.stills`).
    """
    return stills.decode_still(path, max_pixels=max_pixels, formats=formats)


def webp_preview(img: Image.Image, max_side: int = 256) -> bytes:
    """A small WebP of `img` (at most `max_side` pixels on its long side)."""
    small = img.copy()
    small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="WEBP", quality=80)
    return buffer.getvalue()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output_path(path: str | Path) -> None:
    """InvalidJob unless Pillow can write the file's extension."""
    suffix = Path(path).suffix.lower()
    if not suffix or suffix not in Image.registered_extensions():
        raise InvalidJob(f"cannot save an image as {Path(path).name!r}: unknown file extension {suffix or '(none)'!r}")


def save_image(img: Image.Image, path: str | Path, text: dict[str, Any], params: dict[str, Any]) -> None:
    """Write `img` by extension; PNG and JPEG carry `text` (the seed's keys) and `params` (JSON)."""
    path = Path(path)
    suffix = path.suffix.lower()
    blob = json.dumps(params, sort_keys=True, ensure_ascii=True)
    if suffix == ".png":
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, "" if value is None else str(value))  # switches to iTXt for non-Latin-1 text
        info.add_text(PARAMS_KEY, blob)
        img.save(path, pnginfo=info)
    elif suffix in (".jpg", ".jpeg"):
        exif = Image.Exif()
        exif[_SOFTWARE_TAG] = SOFTWARE
        exif[_XP_TITLE] = (str(text.get("text_prompts") or "") + "\0").encode("utf-16-le")
        summary = ", ".join(f"{k}: {v if v else []}" for k, v in text.items())
        exif[_XP_COMMENT] = (summary + "\0").encode("utf-16-le")
        exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = _ASCII_HEADER + blob.encode("ascii")
        img.save(path, exif=exif, quality=95)
    else:
        img.save(path)


def read_params(path: str | Path) -> dict[str, Any]:
    """The `engine_params` JSON an engine-made PNG or JPEG carries; ValueError when there is none."""
    blob: str | None = None
    try:
        with Image.open(path, formats=stills.FORMATS) as img:
            if isinstance(img, PngImagePlugin.PngImageFile):
                blob = img.text.get(PARAMS_KEY)
            else:
                raw = img.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
                if isinstance(raw, bytes):
                    blob = _decode_user_comment(raw)
                elif isinstance(raw, str):
                    blob = raw
    except UnidentifiedImageError:
        pass  # not a format the engine writes its parameters into
    if not blob:
        raise ValueError(f"{str(path)!r} carries no engine parameters (not made by this engine?)")
    data = json.loads(blob)
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r}: the engine parameters are not a JSON object")
    return data


def _decode_user_comment(raw: bytes) -> str:
    if raw.startswith(_ASCII_HEADER):
        return raw[8:].decode("ascii")
    if raw.startswith(_UNICODE_HEADER):
        body = raw[8:]
        return body.decode("utf-16-le" if body[1:2] == b"\0" else "utf-16-be")
    return raw.decode("utf-8", errors="replace")
