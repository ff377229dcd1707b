"""What a renderer's frozen models compute in: float32, or bfloat16 where the device is really faster at it.

`resolve_precision(requested, device)` turns `auto`, `fp32` or `bf16` into a `Precision`. `auto` is
bf16 only where the device computes bf16 natively *and* faster than fp32 (docs/engine.md, "Precision"):

- CUDA: `torch.cuda.is_bf16_supported(including_emulation=False)` (sm80 and later). The default
  `including_emulation=True` also says yes for older GPUs that can only store bf16.
- CPU: the bf16 instructions (`avx512_bf16` or `amx_bf16` among the CPU's flags), oneDNN available
  and enabled with a bf16 path, no `ONEDNN_MAX_CPU_ISA`/`DNNL_MAX_CPU_ISA` cap below bf16 (oneDNN
  honours the cap, the flags do not see it), and a short measurement: a CLIP-sized matrix product
  and a VQGAN-sized convolution must take at most `BF16_MAX_TIME_RATIO` of their fp32 time. The
  flags alone are not enough: on the project's Intel CPU with `avx512_bf16` but no AMX, bf16
  matrix products take 1.8-2× their fp32 time and the engine's step 1.5-1.6×.

The choice is logged once per device; a forced bf16 where it is emulated logs that it will be slow.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.config import PRECISIONS, canonical_choice

log = logging.getLogger(__name__)

# bf16 must be clearly faster on the calibration kernels: a step also has casts, norms and fp32 islands
# that gain little (issue 14's figures: kernels 4-5× faster made the step 2× faster), so about half the
# kernel gain reaches the step (docs/engine.md, "Precision")
BF16_MAX_TIME_RATIO = 0.6
# oneDNN ISA caps without bf16 arithmetic (oneDNN's `dnnl_cpu_isa_t` names; the later ones all have it)
_ISAS_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"})
_ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclasses.dataclass(frozen=True, slots=True)
class Precision:
    """A renderer's resolved precision: `fp32` or `bf16`, what was asked for, and why."""

    name: str  # fp32 or bf16
    requested: str = "fp32"  # auto, fp32 or bf16
    reason: str = "asked for"

    @property
    def dtype(self) -> torch.dtype:
        """The type the frozen models compute in (z, the optimizer and the loss stay float32)."""
        return torch.bfloat16 if self.name == "bf16" else torch.float32

    @property
    def dtype_name(self) -> str:
        """`float32` or `bfloat16`, as the metadata and the bench JSON record it."""
        return "bfloat16" if self.name == "bf16" else "float32"


FP32 = Precision("fp32")


@dataclasses.dataclass(frozen=True, slots=True)
class Bf16Support:
    """What a device does with bf16."""

    runs: bool  # bf16 convolutions and matrix products work at all (possibly emulated, slowly)
    native: bool  # the device has bf16 arithmetic and the backend uses it (not emulated)
    faster: bool  # native and measured faster than fp32: what `auto` picks bf16 on
    reason: str


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """`auto`, `fp32` or `bf16` on `device` as a Precision; logged once per device and choice."""
    requested = canonical_choice(requested, PRECISIONS, "precision")
    if requested == "fp32":
        chosen = FP32
    else:
        support = bf16_support(device)
        if requested == "bf16":
            chosen = Precision("bf16", "bf16", "asked for; " + support.reason)
            if not support.runs:
                raise ValueError(f"bf16 cannot run on {device}: {support.reason}")
        else:
            chosen = Precision("bf16" if support.faster else "fp32", "auto", support.reason)
        if requested == "bf16" and not support.native:
            _log_once(logging.WARNING, f"{device}: bf16 is emulated here ({support.reason}): it runs, but slowly")
    _log_once(logging.INFO, f"{device} computes in {chosen.name} ({chosen.requested}): {chosen.reason}")
    return chosen


_logged: set[str] = set()
_logged_lock = threading.Lock()


def _log_once(level: int, message: str) -> None:
    with _logged_lock:
        if message in _logged:
            return
        _logged.add(message)
    log.log(level, "%s", message)


def bf16_support(device: torch.device) -> Bf16Support:
    """What `device` does with bf16 (measured once per process and device)."""
    if device.type == "cuda":
        return _cuda_bf16_support(device.index if device.index is not None else torch.cuda.current_device())
    return _cpu_bf16_support()


@functools.cache
def _cuda_bf16_support(index: int) -> Bf16Support:
    with torch.cuda.device(index):
        name = torch.cuda.get_device_name(index)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Bf16Support(True, True, True, f"{name} computes bf16 natively")
        runs = torch.cuda.is_bf16_supported(including_emulation=True)
    return Bf16Support(runs, False, False, f"{name} has no native bf16 (before sm80)")


@functools.cache
def _cpu_bf16_support() -> Bf16Support:
    runs = _bf16_runs_on_cpu()
    if not runs:
        return Bf16Support(False, False, False, "bf16 convolutions fail on this CPU")
    missing = _cpu_native_bf16_missing()
    if missing:
        return Bf16Support(True, False, False, missing)
    ratio = bf16_time_ratio()
    flags = "+".join(flag for flag in _CPU_BF16_FLAGS if cpu_flags().get(flag))
    measured = f"{flags}; bf16 took {ratio:.2f}× the fp32 time on a matmul and a conv"
    if ratio > BF16_MAX_TIME_RATIO:
        return Bf16Support(True, True, False, f"{measured} (over {BF16_MAX_TIME_RATIO}): fp32 is faster here")
    return Bf16Support(True, True, True, measured)


def cpu_flags() -> dict[str, bool]:
    """The CPU's bf16 flags as torch's cpuinfo sees them (the hardware's, whatever oneDNN is capped at)."""
    get_capabilities: Callable[[], dict[str, object]] | None = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:  # new in torch 2.x; older builds fall back to /proc/cpuinfo
        capabilities = get_capabilities()
        return {flag: bool(capabilities.get(flag)) for flag in _CPU_BF16_FLAGS}
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        words = set()
    return {flag: flag in words for flag in _CPU_BF16_FLAGS}


def onednn_isa_cap() -> str | None:
    """The ISA oneDNN is capped at by the environment (`ONEDNN_MAX_CPU_ISA`, else `DNNL_MAX_CPU_ISA`)."""
    for variable in _ISA_CAP_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value:
            return value.upper()
    return None


def _cpu_native_bf16_missing() -> str:
    """Why this CPU's bf16 is emulated, or "" when it is native."""
    if not any(cpu_flags().values()):
        return "the CPU has neither avx512_bf16 nor amx_bf16"
    mkldnn_available: Callable[[], bool] = torch.backends.mkldnn.is_available
    if not (mkldnn_available() and torch.backends.mkldnn.enabled):
        return "oneDNN, torch's bf16 path on the CPU, is unavailable or disabled"
    cap = onednn_isa_cap()
    if cap in _ISAS_WITHOUT_BF16:
        return f"oneDNN is capped at {cap} by the environment, which has no bf16 arithmetic"
    # the check torch's own tests use; private, with no public equivalent, and absent from some builds
    has_bf16_path: Callable[[], bool] | None = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        has_path = has_bf16_path is not None and bool(has_bf16_path())
    except RuntimeError:
        has_path = False
    if not has_path:
        return "oneDNN has no bf16 path on this CPU"
    return ""


def _bf16_runs_on_cpu() -> bool:
    try:
        x = torch.ones(1, 2, 4, 4, dtype=torch.bfloat16, requires_grad=True)
        w = torch.ones(2, 2, 3, 3, dtype=torch.bfloat16)
        out = F.linear(F.conv2d(x, w, padding=1).flatten(1), torch.ones(2, 32, dtype=torch.bfloat16))
        torch.autograd.backward(out.sum())
    except RuntimeError:  # "not implemented for 'BFloat16'"
        return False
    return True


def bf16_time_ratio(repeats: int = 3) -> float:
    """bf16 ÷ fp32 time of a CLIP-sized matmul and a VQGAN-sized 3×3 conv (best of `repeats`, ~0.1 s)."""
    gen = torch.Generator().manual_seed(0)  # not the process RNG, which jobs seed
    inputs32 = (
        torch.randn(512, 768, generator=gen),
        torch.randn(768, 768, generator=gen),
        torch.randn(1, 128, 64, 64, generator=gen),
        torch.randn(128, 128, 3, 3, generator=gen),
    )
    inputs16 = tuple(t.bfloat16() for t in inputs32)

    def work(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
        a @ b
        F.conv2d(x, w, padding=1)

    best = {torch.float32: float("inf"), torch.bfloat16: float("inf")}
    with torch.no_grad():
        work(*inputs32)
        work(*inputs16)  # oneDNN builds its kernels on the first call
        for _ in range(repeats):  # interleaved, so a busy neighbour slows both alike
            for dtype, inputs in ((torch.float32, inputs32), (torch.bfloat16, inputs16)):
                start = time.perf_counter()
                work(*inputs)
                best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.bfloat16] / best[torch.float32]
