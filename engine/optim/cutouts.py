"""Random square cutouts of the image, resized to CLIP's input size, with the seed's augments.

Unlike the seed, every cutout is made in one batched `grid_sample`: each crop's position and size and,
for `kornia`, its flip, affine and perspective warp are folded into one homography per cutout. Colour
jitter, sharpness and noise follow on the whole batch. All random draws come from the job's generators
(docs/engine.md, "Cutouts").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.config import CUT_METHODS
from engine.optim.quantize import clamp_with_grad

_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
_LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)


class Cutouts:
    """Makes `num_cuts` cutouts of side `cut_size` from a (1, 3, H, W) image in [0, 1]."""

    def __init__(self, cut_size: int, num_cuts: int, cut_power: float = 1.0, method: str = "kornia") -> None:
        if method not in CUT_METHODS:
            raise ValueError(f"unknown cut_method {method!r}; choose one of {', '.join(CUT_METHODS)}")
        if num_cuts < 1:
            raise ValueError("num_cuts must be at least 1")
        if not (cut_power > 0 and math.isfinite(cut_power)):
            raise ValueError("cut_power must be a positive number")
        self.cut_size, self.num_cuts, self.cut_power, self.method = cut_size, num_cuts, cut_power, method
        self._base_grid: torch.Tensor | None = None

    def __call__(self, img: torch.Tensor, gen: torch.Generator, device_gen: torch.Generator) -> torch.Tensor:
        """Cutouts (num_cuts, 3, cut_size, cut_size); `gen` is a CPU generator, `device_gen` one on img's device."""
        boxes = self._draw_boxes(img.shape[3], img.shape[2], gen)
        if self.method == "sg3":
            return torch.cat(
                [F.adaptive_avg_pool2d(img[:, :, y : y + s, x : x + s], self.cut_size) for x, y, s in boxes.tolist()]
            )
        matrices = self._crop_matrices(boxes, img.shape[3], img.shape[2])
        if self.method == "kornia":
            matrices = matrices @ self._augment_matrices(gen)
        cuts = self._warp(img, matrices)
        if self.method == "original":
            return clamp_with_grad(cuts, 0.0, 1.0)
        return self._photometric(cuts, gen, device_gen)

    def _draw_boxes(self, width: int, height: int, gen: torch.Generator) -> torch.Tensor:
        """(num_cuts, 3) int64 rows of (left, top, side), drawn as the seed draws them."""
        largest = min(width, height)
        smallest = min(width, height, self.cut_size)
        draws = torch.rand(self.num_cuts, 3, generator=gen, dtype=torch.float64)
        sides = (draws[:, 0] ** self.cut_power * (largest - smallest) + smallest).floor()
        lefts = (draws[:, 1] * (width - sides + 1)).floor()
        tops = (draws[:, 2] * (height - sides + 1)).floor()
        return torch.stack([lefts, tops, sides], dim=1).long()

    def _crop_matrices(self, boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """Maps from a cutout's normalised coordinates to the image's, (N, 3, 3) float64."""
        left, top, side = boxes.double().unbind(1)
        m = torch.zeros(self.num_cuts, 3, 3, dtype=torch.float64)
        m[:, 0, 0] = side / width
        m[:, 1, 1] = side / height
        m[:, 0, 2] = (left + side / 2) / width * 2 - 1
        m[:, 1, 2] = (top + side / 2) / height * 2 - 1
        m[:, 2, 2] = 1
        return m

    def _augment_matrices(self, gen: torch.Generator) -> torch.Tensor:
        """Inverse of flip (p .5) → affine (±30°, translate .1, p .8) → perspective (.2, p .4), (N, 3, 3)."""
        n = self.num_cuts
        r = torch.rand(n, 14, generator=gen, dtype=torch.float64)
        eye = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
        flip = eye.clone()
        flip[:, 0, 0] = torch.where(r[:, 0] < 0.5, -1.0, 1.0)
        # affine about the centre; translate is a fraction of the side, and the side is 2 in normalised units
        angle = torch.deg2rad((r[:, 2] * 2 - 1) * 30)
        shift = (r[:, 3:5] * 2 - 1) * 0.2
        cos, sin = angle.cos(), angle.sin()
        affine_inv = eye.clone()  # inverse of [R | t] is [Rᵀ | -Rᵀt]
        affine_inv[:, 0, 0], affine_inv[:, 0, 1] = cos, sin
        affine_inv[:, 1, 0], affine_inv[:, 1, 1] = -sin, cos
        affine_inv[:, :2, 2] = -(affine_inv[:, :2, :2] @ shift.unsqueeze(-1)).squeeze(-1)
        affine_inv = torch.where((r[:, 1] < 0.8)[:, None, None], affine_inv, eye)
        # perspective: each corner moves inward by up to distortion·half-side (kornia's RandomPerspective)
        corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
        moved = corners - corners * r[:, 6:14].view(n, 4, 2) * 0.2
        persp_inv = _homography(moved, corners.expand(n, 4, 2))
        persp_inv = torch.where((r[:, 5] < 0.4)[:, None, None], persp_inv, eye)
        return flip @ affine_inv @ persp_inv

    def _grid(self, device: torch.device) -> torch.Tensor:
        """Pixel centres of a cutout in normalised coordinates, homogeneous, (R·R, 3) float64."""
        if self._base_grid is None or self._base_grid.device != device:
            ticks = (torch.arange(self.cut_size, dtype=torch.float64) * 2 + 1) / self.cut_size - 1
            y, x = torch.meshgrid(ticks, ticks, indexing="ij")
            self._base_grid = torch.stack([x, y, torch.ones_like(x)], dim=-1).view(-1, 3).to(device)
        return self._base_grid

    def _warp(self, img: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
        points = self._grid(img.device) @ matrices.to(img.device).transpose(1, 2)  # (N, R·R, 3)
        grid = (points[..., :2] / points[..., 2:]).to(img.dtype).view(self.num_cuts, self.cut_size, self.cut_size, 2)
        batch = img.expand(self.num_cuts, -1, -1, -1)
        return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _photometric(self, cuts: torch.Tensor, gen: torch.Generator, device_gen: torch.Generator) -> torch.Tensor:
        """Colour jitter (hue .01, saturation .01, p .7), sharpness (.3, p .4), then noise σ~U(0, .1)."""
        n = self.num_cuts
        r = torch.rand(n, 6, generator=gen, dtype=torch.float64)
        colour = _colour_matrices(hue=(r[:, 1] * 2 - 1) * 0.01, saturation=1 + (r[:, 2] * 2 - 1) * 0.01)
        colour = torch.where((r[:, 0] < 0.7)[:, None, None], colour, torch.eye(3, dtype=torch.float64))
        cuts = torch.einsum("nij,njhw->nihw", colour.to(cuts.device, cuts.dtype), cuts)
        factor = torch.where(r[:, 3] < 0.4, r[:, 4] * 0.3, 1.0)
        # smooth + factor·(cuts - smooth) with smooth = (3×3 box sum + 4·cuts) / 13, PIL's SMOOTH filter;
        # the box sum as two separable passes of shifted adds: a depthwise conv's backward is far slower on CPU
        keep = (factor + (1 - factor) * 4 / 13).to(cuts.device, cuts.dtype)[:, None, None, None]
        blur = ((1 - factor) / 13).to(cuts.device, cuts.dtype)[:, None, None, None]
        cuts = keep * cuts + blur * _box3(F.pad(cuts, (1, 1, 1, 1), mode="replicate"))
        sigma = (r[:, 5] * 0.1).to(cuts.device, cuts.dtype)[:, None, None, None]
        noise = torch.randn(cuts.shape, generator=device_gen, device=cuts.device, dtype=cuts.dtype)
        return cuts + sigma * noise


def _box3(padded: torch.Tensor) -> torch.Tensor:
    """The 3×3 box sum of an image padded by one pixel on each side (the padding is consumed)."""
    rows = padded[..., :, :-2] + padded[..., :, 1:-1] + padded[..., :, 2:]
    return rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]


def _homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The (N, 3, 3) projective maps taking four points src (N, 4, 2) to dst (N, 4, 2)."""
    n = src.shape[0]
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)  # (N, 8, 8)
    b = torch.cat([u, v], dim=1).unsqueeze(-1)
    h = torch.linalg.solve(a, b).squeeze(-1)
    return torch.cat([h, torch.ones(n, 1, dtype=h.dtype)], dim=1).view(n, 3, 3)


def _colour_matrices(hue: torch.Tensor, saturation: torch.Tensor) -> torch.Tensor:
    """Per-cutout RGB matrices: a hue rotation (fraction of a turn, in YIQ) after a saturation blend."""
    n = hue.shape[0]
    sat = saturation[:, None, None] * torch.eye(3, dtype=torch.float64) + (1 - saturation)[:, None, None] * _LUMA
    theta = hue * 2 * math.pi
    rot = torch.zeros(n, 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = theta.cos(), -theta.sin()
    rot[:, 2, 1], rot[:, 2, 2] = theta.sin(), theta.cos()
    matrices: torch.Tensor = torch.linalg.inv(_YIQ) @ rot @ _YIQ @ sat
    return matrices
