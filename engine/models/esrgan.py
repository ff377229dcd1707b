"""Real-ESRGAN upscalers: loaded with spandrel, run tile by tile.

spandrel reads `.pth` files through its own allow-list unpickler (a planted `os.system` is refused
without running) and `.safetensors` with no pickle at all. Weights are cached on disk and fetched
with `engine.models.download.fetch` (the registry's URLs); loaded models are kept in memory for the
next call. The seed's folder API over this is `engine.esrgan.inference_realesrgan`.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

import torch
from PIL import Image
from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

from engine.errors import InvalidJob, ModelLoadError
from engine.jobs import TINY
from engine.media.shrink import has_alpha
from engine.models.download import fetch, model_cache_dir, verify_cached
from engine.models.registry import DEFAULT_REAL_ESRGAN, REAL_ESRGAN_MODELS
from engine.models.seeding import isolated_rng
from engine.models.tiny import TINY_UPSCALER_SCALE, build_tiny_upscaler_state

log = logging.getLogger(__name__)

# spandrel's descriptor of a loaded image-to-image model (here: an RRDBNet upscaler)
Upscaler: TypeAlias = "ImageModelDescriptor[Any]"

_WEIGHT_SUFFIXES = {".pth", ".safetensors"}  # never `.pt`: spandrel tries TorchScript on those
JPEG_QUALITY = 95
# Called after each tile: (tiles done, tiles in all, the output so far: upscaled tiles, the rest bicubic)
TileCallback = Callable[[int, int, torch.Tensor], None]


def registry_name(model_filename: str) -> str | None:
    """The registry key `model_filename` names (`RealESRGAN_x4plus` or `RealESRGAN_x4plus.pth`), else None."""
    name = Path(model_filename).name
    for candidate in (name, name + ".pth"):
        if candidate in REAL_ESRGAN_MODELS:
            return candidate
    return None


def known_scale(model_filename: str) -> int | None:
    """The upscaling factor of `tiny` or a registry model without loading it; None for other files."""
    if model_filename == TINY:
        return TINY_UPSCALER_SCALE
    if Path(model_filename).is_file():
        return None
    name = registry_name(model_filename)
    return REAL_ESRGAN_MODELS[name].scale if name else None


def model_file(
    model_filename: str = DEFAULT_REAL_ESRGAN,
    model_url: str | None = None,
    *,
    model_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """The local weight file: an existing path as given, else from the model cache, downloaded when absent.

    `model_url` overrides the registry's URL (engine.models.registry.REAL_ESRGAN_MODELS) and names custom files.
    """
    given = Path(model_filename)
    if given.is_file():
        return given
    if model_url is None and registry_name(model_filename):
        given = Path(str(registry_name(model_filename)))  # the registry's names work without ".pth" too
    dest = model_cache_dir(model_dir) / given.name
    known = REAL_ESRGAN_MODELS.get(given.name)
    url = model_url or (known.url if known else None)
    if url is None:
        if dest.is_file():  # a custom file placed in the cache by hand
            verify_cached(dest)
            return dest
        names = ", ".join(REAL_ESRGAN_MODELS)
        raise ModelLoadError(f"unknown upscaler {given.name!r} and no model_url given (known: {names})")
    return fetch(url, dest, progress=progress)


def load_upscaler(
    model_filename: str = DEFAULT_REAL_ESRGAN,
    model_url: str | None = None,
    *,
    device: str | torch.device = "cpu",
    half: bool = False,
    model_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Upscaler:
    """An upscaler (eval, on `device`), fp16 only when asked for and on CUDA; cached in memory per file.

    `tiny` is the tiny preset (engine.models.tiny): random ×2 weights built in memory, no file, no download.
    """
    if model_filename == TINY and model_url is None:
        dev = torch.device(device)
        return _load_tiny(str(dev), half and dev.type == "cuda")
    path = model_file(model_filename, model_url, model_dir=model_dir, progress=progress)
    dev = torch.device(device)
    stat = path.stat()
    return _load_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(dev), half and dev.type == "cuda")


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, mtime_ns: int, size: int, device: str, half: bool) -> Upscaler:
    name = Path(path).name
    if Path(path).suffix.lower() not in _WEIGHT_SUFFIXES:
        raise ModelLoadError(f"{name}: upscaler weights must be a .pth or .safetensors file")
    try:
        with isolated_rng():  # spandrel's throwaway random init: not our RNG
            descriptor = ModelLoader(device=torch.device(device)).load_from_file(path)
    except pickle.UnpicklingError as exc:
        # spandrel's allow-list unpickler refused a global (e.g. `posix.system`): nothing was run
        raise ModelLoadError(f"{name}: refusing an unsafe weight file ({exc})") from None
    except UnsupportedModelError:
        raise ModelLoadError(f"{name}: not an upscaler model spandrel knows") from None
    except (RuntimeError, ValueError, OSError, EOFError, KeyError) as exc:
        raise ModelLoadError(f"{name}: could not be loaded ({exc})") from None
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.input_channels != 3:
        raise ModelLoadError(f"{name}: not an RGB image upscaler")
    descriptor.eval()
    if half:
        descriptor.half()
    log.info(
        "loaded upscaler %s: %s ×%d on %s%s",
        name,
        descriptor.architecture.id,
        descriptor.scale,
        device,
        " fp16" if half else "",
    )
    return descriptor


@functools.lru_cache(maxsize=2)
def _load_tiny(device: str, half: bool) -> Upscaler:
    state = build_tiny_upscaler_state()
    # through spandrel's state-dict detection, exactly as a file's weights go; its random init (overwritten
    # by the state) must not draw from the caller's global RNG
    with isolated_rng():
        descriptor = ModelLoader(device=torch.device(device)).load_from_state_dict(state)
    assert isinstance(descriptor, ImageModelDescriptor)
    descriptor.eval()
    if half:
        descriptor.half()
    log.info("built the tiny upscaler (×%d) on %s", descriptor.scale, device)
    return descriptor


def _to_tensor(img: Image.Image, descriptor: Upscaler) -> torch.Tensor:
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    tensor = data.view(img.height, img.width, 3).permute(2, 0, 1).unsqueeze(0)  # [1, 3, H, W]
    param = next(descriptor.model.parameters())
    return tensor.to(device=param.device, dtype=param.dtype) / 255.0


def _to_image(tensor: torch.Tensor) -> Image.Image:
    array = (tensor[0].float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().cpu()
    return Image.fromarray(array.numpy(), "RGB")


def tile_count(width: int, height: int, tile: int) -> int:
    """How many tiles `_run_tiled` cuts a width×height input into (1 when untiled)."""
    if tile <= 0 or (height <= tile and width <= tile):
        return 1
    return math.ceil(height / tile) * math.ceil(width / tile)


@torch.inference_mode()
def _run_tiled(
    x: torch.Tensor,
    descriptor: Upscaler,
    tile: int,
    tile_pad: int,
    on_tile: TileCallback | None = None,
    cancel: threading.Event | None = None,
) -> tuple[torch.Tensor, int]:
    """Upscale `x` [1, 3, H, W] tile by tile (each with `tile_pad` pixels of context), so big inputs fit in memory.

    Returns the output and the tiles done; when `cancel` is set between tiles, the tiles not done are bicubic.
    """
    _, channels, height, width = x.shape
    scale = descriptor.scale
    total = tile_count(width, height, tile)
    if cancel is None and total == 1:
        out = descriptor(x)
        if on_tile is not None:
            on_tile(1, 1, out)
        return out, 1
    if cancel is not None:  # a cancelled job still shows a whole picture
        out = torch.nn.functional.interpolate(x.float(), scale_factor=scale, mode="bicubic").clamp(0, 1).to(x.dtype)
    else:
        out = x.new_zeros((1, channels, height * scale, width * scale))
    if total == 1:
        tile = max(height, width)
    done = 0
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            if cancel is not None and cancel.is_set():
                return out, done
            bottom, right = min(top + tile, height), min(left + tile, width)
            ptop, pleft = max(top - tile_pad, 0), max(left - tile_pad, 0)
            pbottom, pright = min(bottom + tile_pad, height), min(right + tile_pad, width)
            patch = descriptor(x[:, :, ptop:pbottom, pleft:pright])
            oy, ox = (top - ptop) * scale, (left - pleft) * scale
            out[:, :, top * scale : bottom * scale, left * scale : right * scale] = patch[
                :, :, oy : oy + (bottom - top) * scale, ox : ox + (right - left) * scale
            ]
            done += 1
            if on_tile is not None:
                on_tile(done, total, out)
    return out, done


def upscale_image(
    img: Image.Image,
    model: Upscaler,
    *,
    tile: int = 0,
    tile_pad: int = 10,
) -> Image.Image:
    """`img` upscaled by the model's scale; an alpha channel is resized alongside (bicubic)."""
    return upscale_image_tiles(img, model, tile=tile, tile_pad=tile_pad)[0]


def upscale_image_tiles(
    img: Image.Image,
    model: Upscaler,
    *,
    tile: int = 0,
    tile_pad: int = 10,
    on_tile: TileCallback | None = None,
    cancel: threading.Event | None = None,
) -> tuple[Image.Image, int, int]:
    """`upscale_image` reporting each tile, stoppable between tiles: (image, tiles done, tiles in all).

    Out of memory stays torch's error here; the caller says what to make smaller (`engine.devices`).
    """
    if tile < 0 or tile_pad < 0:
        raise InvalidJob("tile and tile_pad must not be negative")
    alpha = img.convert("RGBA").getchannel("A") if has_alpha(img) else None
    rgb = img.convert("RGB")
    total = tile_count(rgb.width, rgb.height, tile)
    tensor, done = _run_tiled(_to_tensor(rgb, model), model, tile, tile_pad, on_tile, cancel)
    out = _to_image(tensor)
    if alpha is not None:
        out.putalpha(alpha.resize(out.size, Image.Resampling.BICUBIC))
    return out, done, total
