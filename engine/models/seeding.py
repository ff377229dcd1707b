"""Random weights that come out the same in every process, drawn without touching anyone's RNG."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

# fork_rng swaps the process-wide RNG state; two threads doing it at once would mix their states
_fork_lock = threading.Lock()


@contextlib.contextmanager
def isolated_rng(seed: int | None = None) -> Iterator[None]:
    """Inside the block the process RNG is a private copy (seeded with `seed` when given); after it, as it was."""
    with _fork_lock, torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield
