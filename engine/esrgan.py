"""The seed package's `esrgan` module: `inference_realesrgan` upscales an image file or a folder of them.

The argument names, defaults and error messages are the seed's; the upscaler itself (loading with
spandrel, tiles) is `engine.models.esrgan`.
"""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path

import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from engine.devices import out_of_memory_as_error
from engine.errors import InvalidJob
from engine.media import stills
from engine.media.shrink import has_alpha
from engine.models.esrgan import JPEG_QUALITY, load_upscaler, upscale_image
from engine.models.registry import DEFAULT_REAL_ESRGAN
from engine.pipelines.images import read_image_with_text

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
# the seed read TIFF too; nothing else (EPS, PSD, ...) is opened, even from a local folder
_FORMATS = (*stills.FORMATS, "TIFF")


def _input_files(input: str | os.PathLike[str]) -> list[Path]:
    source = Path(input)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise InvalidJob("input must be a file or a directory.")
    files = [p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise InvalidJob("input directory does not contain any files.")
    return sorted(files, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])


def _check_image(path: Path) -> None:
    """The seed's message for anything Pillow cannot identify (cheap: reads the header only)."""
    try:
        with Image.open(path, formats=_FORMATS) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidJob("file could not be read as a valid image.") from None


def _save_with_metadata(img: Image.Image, source: Image.Image, dest: Path) -> None:
    """Save `img` to `dest`, keeping the source's PNG text chunks or EXIF (the seed's metadata)."""
    suffix = dest.suffix.lower()
    buffer = io.BytesIO()
    if suffix == ".png":
        info = PngImagePlugin.PngInfo()
        for key, value in source.info.get("_text", {}).items():
            info.add_text(key, value)  # Pillow writes iTXt by itself for non-Latin-1 text
        exif = source.info.get("exif")
        img.save(buffer, "PNG", pnginfo=info, **({"exif": exif} if exif else {}))
    elif suffix in (".jpg", ".jpeg"):
        exif = source.info.get("exif")
        img.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY, **({"exif": exif} if exif else {}))
    else:
        img.save(buffer, format=Image.registered_extensions().get(suffix, "PNG"))
    dest.write_bytes(buffer.getvalue())


def _output_path(folder: Path, source: Path, rgba: bool) -> Path:
    suffix = ".png" if rgba or source.suffix.lower() not in _IMAGE_SUFFIXES else source.suffix
    plain = folder / f"{source.stem}{suffix}"
    return folder / f"{source.stem}_upscaled{suffix}" if plain.exists() else plain


def inference_realesrgan(
    input: str | os.PathLike[str],
    model_filename: str = DEFAULT_REAL_ESRGAN,
    model_url: str | None = None,
    output_images_path: str | os.PathLike[str] | None = None,
    *,
    tile: int = 0,
    tile_pad: int = 10,
    half: bool = False,
    device: str | torch.device = "cpu",
    model_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> list[str]:
    """Upscale an image file or every file in a folder; return the written paths in input order.

    Outputs go to `output_images_path` (default: next to a file input; `<folder>_upscaled` for a folder)
    under the input's name, or `<name>_upscaled` when that exists; RGBA inputs become PNG. PNG text
    chunks and EXIF are copied from each input to its output.
    """
    files = _input_files(input)
    source = Path(input)
    if output_images_path is not None:
        folder = Path(output_images_path)
    else:
        folder = source.parent if source.is_file() else source.with_name(source.name + "_upscaled")
    for path in files:
        _check_image(path)  # every file is checked before the model loads
    model = load_upscaler(model_filename, model_url, device=device, half=half, model_dir=model_dir, progress=progress)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for path in files:
        img = read_image_with_text(path, formats=_FORMATS)
        longest = max(img.size)
        if model.scale >= 4 and longest > 1000:
            log.warning("%s is %d px: the x2 model would be faster", path.name, longest)
        if model.scale == 2 and longest < 500:
            log.warning("%s is %d px: the x4 model would give more detail", path.name, longest)
        rgba = has_alpha(img)
        advice = f"upscaling {img.width}×{img.height} ran out of GPU memory; use tiles (tile=256 or smaller)"
        with out_of_memory_as_error(advice):
            upscaled = upscale_image(img, model, tile=tile, tile_pad=tile_pad)
        dest = _output_path(folder, path, rgba)
        _save_with_metadata(upscaled, img, dest)
        written.append(str(dest))
        log.info("upscaled %s → %s (%dx%d)", path, dest, *upscaled.size)
    return written
