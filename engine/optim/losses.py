"""Loss terms: the spherical-distance prompt loss and the init-weight anchor (docs/engine.md, "Losses")."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from engine.config import INIT_IMAGE_METHODS
from engine.optim.quantize import straight_through


@dataclasses.dataclass(slots=True)
class PromptTarget:
    """One weighted prompt: its CLIP embeddings (rows, unit length), weight and stop."""

    embeds: torch.Tensor  # (rows, D), normalised
    weight: float
    stop: float
    label: str = ""

    def loss(self, feats: torch.Tensor) -> torch.Tensor:
        """|w|·mean(sign(w)·d) over all (cutout, target row) pairs; gradient only where d > stop."""
        dist = spherical_distance(feats, self.embeds)
        if self.weight < 0:
            dist = -dist
        if self.stop != float("-inf"):
            dist = straight_through(dist, torch.maximum(dist, dist.new_tensor(self.stop)))
        return abs(self.weight) * dist.mean()


def normalise(embeds: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length, in float32."""
    return F.normalize(embeds.float(), dim=-1)


def spherical_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """2·arcsin(|a−b|/2)² for unit rows a (N, D) and b (M, D) -> (N, M); half the squared angle."""
    # the difference form, not 2 - 2a·b: its gradient stays finite when a cutout equals a target
    distance: torch.Tensor = (a[:, None, :] - b[None, :, :]).norm(dim=2).div(2).arcsin().pow(2).mul(2)
    return distance


def init_weight_loss(method: str, z: torch.Tensor, anchor: torch.Tensor, weight: float, iteration: int) -> torch.Tensor:
    """The latent anchor term of `init_image_method`; `anchor` is z_orig or z_target."""
    if method == "original" or method == "alternate_img_target":
        return F.mse_loss(z, anchor) * weight / 2
    if method == "decay":
        return F.mse_loss(z, torch.zeros_like(z)) * (weight / (2 * iteration + 1)) / 2
    if method == "alternate_img_target_decay":
        return F.mse_loss(z, anchor) * 5 * weight / (2 * iteration + 1)
    raise ValueError(f"unknown init_image_method {method!r}; choose one of {', '.join(INIT_IMAGE_METHODS)}")
