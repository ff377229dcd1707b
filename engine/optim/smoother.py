"""A causal exponentially weighted moving average of latents, for smoother video frames.

`s_1 = z_1`, `s_k = α·z_k + (1−α)·s_{k−1}`: α = 1 is no smoothing, a lower α smooths more, and the
output does not lag behind the newest frame the way the seed's centred average does. With a window
of L frames the weights are `∝ (1−α)^j` over the newest L latents, renormalised to sum to 1 (the
seed's `z_smoother_buffer_len`); without one the recursion runs over the whole history in O(1) memory.
The smoothed latent is only decoded for the saved frame; it is never fed back into the optimisation
(docs/engine.md, "The smoother").
"""

from __future__ import annotations

import collections
from typing import Any

import torch


class EWMASmoother:
    """Smooths a stream of same-shaped tensors."""

    def __init__(self, alpha: float, window: int | None = None) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"z_smoother_alpha must be in (0, 1], got {alpha}")
        if window is not None and window < 1:
            raise ValueError(f"z_smoother_buffer_len must be at least 1, got {window}")
        self.alpha = alpha
        self.window = window
        self._buffer: collections.deque[torch.Tensor] = collections.deque(maxlen=window)
        self._state: torch.Tensor | None = None

    def weights(self, count: int) -> list[float]:
        """The weight of each of the newest `count` latents, newest first; they sum to 1."""
        if self.window is not None:
            raw = [(1.0 - self.alpha) ** j for j in range(min(count, self.window))]
            total = sum(raw)
            return [w / total for w in raw]
        weights = [self.alpha * (1.0 - self.alpha) ** j for j in range(count - 1)]
        return [*weights, (1.0 - self.alpha) ** (count - 1)]

    def update(self, z: torch.Tensor) -> torch.Tensor:
        """Add the newest latent and return the smoothed one (a new tensor; `z` is not changed)."""
        z = z.detach()
        if self.window is None:
            self._state = z.clone() if self._state is None else torch.lerp(self._state, z, self.alpha)
            return self._state.clone()
        self._buffer.append(z.clone())
        newest_first = list(reversed(self._buffer))
        out = torch.zeros_like(z)
        for weight, latent in zip(self.weights(len(newest_first)), newest_first, strict=True):
            out.add_(latent, alpha=weight)
        return out

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue the same smoothing after a restart."""
        return {
            "alpha": self.alpha,
            "window": self.window,
            "buffer": list(self._buffer),
            "state": self._state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha, self.window = float(state["alpha"]), state["window"]
        self._buffer = collections.deque(state["buffer"], maxlen=self.window)
        self._state = state["state"]
