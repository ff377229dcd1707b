"""What `--precision auto` sees on this CPU, and the kernels it is about: matmul and 3×3 conv, fp32 against bf16.

Prints the CPU's bf16 flags, torch's and oneDNN's view (including an `ONEDNN_MAX_CPU_ISA` cap), the
engine's verdict with its reason, then best-of-N forward times of a few matrix products and
convolutions in both types. Run it under an ISA cap to imitate another CPU:

    python benchmarks/bf16_kernels.py --threads 1
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bf16_kernels.py --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from engine.precision import bf16_support, cpu_flags, onednn_isa_cap


def _matmul(m: int, k: int, n: int) -> Callable[[torch.dtype], Callable[[], object]]:
    def make(dtype: torch.dtype) -> Callable[[], object]:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        return lambda: a @ b

    return make


def _conv(channels: int, side: int) -> Callable[[torch.dtype], Callable[[], object]]:
    def make(dtype: torch.dtype) -> Callable[[], object]:
        x = torch.randn(1, channels, side, side, dtype=dtype)
        w = torch.randn(channels, channels, 3, 3, dtype=dtype)
        return lambda: F.conv2d(x, w, padding=1)

    return make


SHAPES: list[tuple[str, Callable[[torch.dtype], Callable[[], object]]]] = [
    ("matmul 512x512 @ 512x512", _matmul(512, 512, 512)),
    ("matmul 400x768 @ 768x3072 (CLIP MLP)", _matmul(400, 768, 3072)),
    ("matmul 1024x1024 @ 1024x1024", _matmul(1024, 1024, 1024)),
    ("conv 3x3 64 ch at 64x64", _conv(64, 64)),
    ("conv 3x3 128 ch at 128x128 (VQGAN)", _conv(128, 128)),
]


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # oneDNN builds its kernel on the first call
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = ", ".join(f"{k}={v}" for k, v in cpu_flags().items())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; cpu flags: {flags}")
    print(f"ATen capability {torch.backends.cpu.get_cpu_capability()}; oneDNN ISA cap: {onednn_isa_cap()}")
    support = bf16_support(torch.device("cpu"))
    print(f"bf16 runs={support.runs} native={support.native} auto picks bf16={support.faster}: {support.reason}")
    with torch.no_grad():
        for name, make in SHAPES:
            fp32, bf16 = (best_ms(make(dtype), args.repeats) for dtype in (torch.float32, torch.bfloat16))
            print(f"{name:40s} fp32 {fp32:8.2f} ms   bf16 {bf16:8.2f} ms   bf16/fp32 {bf16 / fp32:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
