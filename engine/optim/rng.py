"""A job's random numbers: its seed, its own generators, and the process RNG it also draws from.

Our own draws (tokens, cutouts, noise, init noise) come from the job's generators. Libraries such as
kornia-style augmentations draw from the process-wide RNG instead, so a job also seeds that one on its
rendering thread, and a checkpoint carries both (docs/engine.md, "Seeds, determinism and resume").
"""

from __future__ import annotations

import secrets
from typing import Any

import torch


def draw_seed() -> int:
    """A fresh random seed (reported back, so the image can be made again)."""
    return secrets.randbits(63)


def job_seed(requested: int | None, checkpoint: dict[str, Any] | None = None) -> int:
    """The seed a job runs with: the checkpoint's when resuming, else the requested one, else a new one."""
    if checkpoint is not None:
        return int(checkpoint["seed"])
    return requested if requested is not None else draw_seed()


class JobRandom:
    """The job's own random streams: one CPU generator, plus one on the device for large noise draws."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.cpu = torch.Generator().manual_seed(seed)
        self.device = self.cpu if device.type == "cpu" else torch.Generator(device).manual_seed(seed)

    @classmethod
    def start(cls, seed: int, device: torch.device) -> JobRandom:
        """The job's generators, after seeding the process RNG too (call it on the rendering thread)."""
        torch.manual_seed(seed)
        return cls(seed, device)

    def state(self) -> dict[str, torch.Tensor]:
        states = {"cpu": self.cpu.get_state()}
        if self.device is not self.cpu:
            states["device"] = self.device.get_state()
        return states

    def load(self, states: dict[str, torch.Tensor]) -> None:
        self.cpu.set_state(states["cpu"])
        if self.device is not self.cpu and "device" in states:
            self.device.set_state(states["device"])


def global_rng_state() -> dict[str, Any]:
    """The process RNG's state (CPU and every CUDA device), for a checkpoint."""
    return {
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_global_rng_state(states: dict[str, Any]) -> None:
    """Put back what `global_rng_state` returned."""
    torch.set_rng_state(states["cpu"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
