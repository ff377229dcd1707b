"""Small images for tests: a PNG's bytes, and an image file's pixels as an array."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(size: tuple[int, int] = (32, 32)) -> bytes:
    """A plain red PNG of `size`."""
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def pixels(path: Path) -> np.ndarray:
    """The image file's pixels as an array."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))
