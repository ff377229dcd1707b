"""The device a job runs on: choosing it, keeping its memory warm, and running out of it.

`resolve_device` turns a name into a `torch.device` (CUDA without a GPU falls back to the CPU with a
warning); `available_memory_gb` says how much memory a job may use there; `out_of_memory_as_error` turns the device's out-of-memory error into the engine's
`OutOfMemory`, whose message says what to make smaller.

`keep_freed_memory` tunes glibc's malloc for the CPU step. glibc serves blocks over its mmap
threshold (at most 32 MiB) with fresh `mmap`s and gives them back on `free`; a VQGAN decoder at
256×256 allocates dozens of 33.5 MiB activations every iteration, so each iteration page-faults and
zeroes about 1 GiB anew (~1 s of system CPU time a step on a 2-core machine). With mmap off and a
high trim threshold the blocks stay in malloc's heap and are reused: no faults after the first
iteration, and no higher peak.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from engine.errors import InvalidJob, OutOfMemory

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
GIB = 1 << 30  # a "GB" as GPU makers count a card's memory (a 10 GB card has 10 GiB)
TRIM_THRESHOLD_BYTES = 1 << 30  # freed memory at the heap's top beyond this is still given back

_malloc_lock = threading.Lock()
_malloc_tuned: bool | None = None


def default_device() -> str:
    """CUDA when this machine has it, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device; CUDA without a GPU falls back to the CPU with a warning."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidJob(f"unknown device {device!r}; use cpu or cuda[:N]") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(f"CUDA is not available; rendering on the CPU instead of {device}", stacklevel=3)
        return torch.device("cpu")
    if dev.type not in ("cpu", "cuda"):
        raise InvalidJob(f"unsupported device {device!r}; use cpu or cuda[:N]")
    return dev


def available_memory_gb(device: str) -> float | None:
    """What a job may use on `device` now, in GiB: a GPU's free memory, or the host's available RAM for the CPU.

    None when it cannot be told (neither /proc/meminfo nor sysconf). Read before the models load, so
    it includes what they will take, as the bot's memory estimates do.
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return free / GIB
    return _ram_available_gb()


def _ram_available_gb(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """Linux's MemAvailable (what can be allocated without swapping), else the free physical pages."""
    with contextlib.suppress(OSError, ValueError):
        for line in meminfo.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB  # the figure is in KiB
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB
    return None


@contextlib.contextmanager
def out_of_memory_as_error(message: str) -> Iterator[None]:
    """Inside the block, the device's out-of-memory error becomes `OutOfMemory(message)`: what to make smaller."""
    try:
        yield
    except torch.OutOfMemoryError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # what the failed attempt held is free for the next job
        raise OutOfMemory(message) from None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process (no-op elsewhere); True when it took effect."""
    global _malloc_tuned
    with _malloc_lock:
        if _malloc_tuned is None:
            _malloc_tuned = _tune_glibc()
        return _malloc_tuned


def _tune_glibc() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - present on glibc only (musl, macOS have no mallopt knobs)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
    log.debug("glibc malloc: keep freed memory for reuse: %s", done)
    return done
