"""Pictures as tensors and back: what the optimisation reads and writes, and the init-noise pictures."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image


def fit_to_area(img: Image.Image, width: int, height: int) -> Image.Image:
    """`img` LANCZOS-resized to at most width·height pixels, keeping its aspect ratio (image prompts)."""
    scale = min(1.0, math.sqrt(width * height / (img.width * img.height)))
    size = (max(1, int(img.width * scale)), max(1, int(img.height * scale)))
    return img if size == img.size else img.resize(size, Image.Resampling.LANCZOS)


def to_tensor(img: Image.Image, device: torch.device) -> torch.Tensor:
    """RGB image -> (1, 3, H, W) float32 in [0, 1] on `device`."""
    array = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(device)


def to_image(pixels: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) tensor in [0, 1] -> RGB image."""
    array = pixels.detach().reshape(-1, *pixels.shape[-2:]).float().clamp(0, 1).mul(255).round().byte()
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy(), "RGB")


def noise_pixels(kind: str, width: int, height: int, gen: torch.Generator) -> torch.Tensor:
    """An init-noise picture (1, 3, H, W) in [0, 1], drawn from the job's CPU generator."""
    if kind == "pixels":
        return torch.randint(0, 256, (1, 3, height, width), generator=gen).float() / 255
    if kind == "gradient":
        ends = torch.rand(4, generator=gen, dtype=torch.float64)
        r_end, g_end = 1 + ends[0] * 254, 2 + ends[1] * 253
        b_start, b_end = ends[2] * 255, 3 + ends[3] * 125
        across = torch.linspace(0, 1, width, dtype=torch.float64)[None, :].expand(height, width)
        down = torch.linspace(0, 1, height, dtype=torch.float64)[:, None].expand(height, width)
        red = across * r_end
        green = down * g_end
        blue = b_start + down * (b_end - b_start)
        return (torch.stack([red, green, blue]).unsqueeze(0) / 255).float()
    raise ValueError(f"unknown init_noise {kind!r}; choose pixels or gradient")
