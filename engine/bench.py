"""`python -m engine.bench`: time the engine's iteration on random-weight models; the last stdout line is JSON.

The JSON has the shape of `shared/bench/seed_loop.py`'s (`sec_per_iter` median/min/max,
`peak_memory_bytes`, `samples`, `settings`), so the two can be compared run for run. The step timed
is the renderer's own: the same `RenderContext` (model preparation, precision, CUDA options) and
the same `start_still` (canvas, seed, latent, prompts), with the real architectures' random weights
in place of the downloaded ones. `settings` records the precision (`dtype`, what was asked for and
why) and the CPU's bf16 flags, which decide what `--precision auto` gives.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from engine.config import CUT_METHODS, PRECISIONS
from engine.jobs import DEFAULT_CLIP, DEFAULT_VQGAN, JobSpec

if TYPE_CHECKING:
    import torch

    from engine.pipelines.context import RenderContext
    from engine.pipelines.still import StillStart

PROMPT = "a red apple"
LEARNING_RATE = 0.1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The bench's flags: the job's size and cutouts, the models, the device and its speed options."""
    p = argparse.ArgumentParser(prog="python -m engine.bench", description="Time the engine's VQGAN+CLIP iteration.")
    p.add_argument("--model", default=DEFAULT_VQGAN, help="VQGAN architecture (or tiny)")
    p.add_argument("--clip-model", default=DEFAULT_CLIP, help="CLIP architecture (or tiny)")
    p.add_argument("--size", nargs=2, type=int, default=[256, 256], metavar=("W", "H"))
    p.add_argument("--cutn", type=int, default=32)
    p.add_argument("--cut-pow", type=float, default=1.0)
    p.add_argument("--cut-method", default="kornia", choices=list(CUT_METHODS))
    p.add_argument("--optimizer", default="Adam")
    p.add_argument("--iterations", type=int, default=5, help="timed iterations")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument(
        "--precision", choices=PRECISIONS, default="auto",
        help="what the frozen models compute in; auto: bf16 where the device is natively faster at it (auto)",
    )  # fmt: skip
    p.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="the same as --precision bf16")
    p.add_argument("--channels-last", action="store_true", help="channels_last models (CUDA only)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--profile", type=int, default=0, metavar="ROWS",
        help="after timing, profile one more step and print its ROWS costliest ops (self CPU time) to stderr",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.cutn < 1 or args.iterations < 1 or args.warmup < 0:
        p.error("--cutn and --iterations must be ≥ 1, --warmup ≥ 0")
    return args


def bench_spec(args: argparse.Namespace) -> JobSpec:
    """The still-image job whose step the bench times."""
    return JobSpec(
        text_prompts=PROMPT,
        width=args.size[0],
        height=args.size[1],
        num_cuts=args.cutn,
        cut_power=args.cut_pow,
        cut_method=args.cut_method,
        optimizer=args.optimizer,
        learning_rate=LEARNING_RATE,
        seed=args.seed,
        vqgan_model=args.model,
        clip_model=args.clip_model,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Build, warm up, time, print the JSON line."""
    args = parse_args(argv)
    # torch and the models load once the flags have parsed: --help and a bad flag answer at once
    import torch

    from engine.devices import resolve_device
    from engine.errors import InvalidJob
    from engine.pipelines.context import RenderContext
    from engine.pipelines.still import start_still
    from engine.prompts import parse_all

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ctx = RenderContext.create(device, precision=args.precision, channels_last=args.channels_last, random_weights=True)
    spec = bench_spec(args)
    try:
        start = start_still(ctx, spec, parse_all(PROMPT))
    except InvalidJob:
        stride = ctx.models_for(spec).stride
        raise SystemExit(f"engine.bench: --size must be at least {stride} {stride}") from None
    samples, cpu_samples = _time_steps(start.state.step, args.warmup, args.iterations, device)
    if args.profile:
        _print_profile(start.state.step, args.profile)
    result = _result(args, ctx, start, samples, cpu_samples)
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
    return 0


def _result(
    args: argparse.Namespace, ctx: RenderContext, start: StillStart, samples: list[float], cpu_samples: list[float]
) -> dict[str, Any]:
    """The JSON object: timings, peak memory and every setting the numbers depend on."""
    import torch

    from engine.precision import cpu_flags, onednn_isa_cap

    device = ctx.device
    if device.type == "cuda":
        peak = int(torch.cuda.max_memory_allocated(device))
        device_name = torch.cuda.get_device_name(device)
    else:
        peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        device_name = platform.processor() or platform.machine()
    return {
        "sec_per_iter": {"median": statistics.median(samples), "min": min(samples), "max": max(samples)},
        "peak_memory_bytes": peak,
        "samples": samples,
        "cpu_sec_per_iter": {"median": statistics.median(cpu_samples), "samples": cpu_samples},
        "settings": {
            "loop": "engine",
            "size": [start.width, start.height],
            "latent_tokens": list(start.state.latent_size),
            "cutn": args.cutn,
            "cut_pow": args.cut_pow,
            "cut_method": args.cut_method,
            "iterations": args.iterations,
            "warmup": args.warmup,
            "device": str(device),
            "device_name": device_name,
            "threads": torch.get_num_threads(),
            "seed": args.seed,
            "prompt": PROMPT,
            "optimizer": args.optimizer,
            "learning_rate": LEARNING_RATE,
            "vqgan": args.model,
            "clip": args.clip_model,
            "dtype": ctx.precision.dtype_name,
            "precision": {"requested": ctx.precision.requested, "reason": ctx.precision.reason},
            "cpu_flags": sorted(flag for flag, present in cpu_flags().items() if present),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_isa_cap": onednn_isa_cap(),
            "channels_last": ctx.models.channels_last,
            "weights": "random",
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }


def _time_steps(
    step: Callable[[], object], warmup: int, iterations: int, device: torch.device
) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of each timed step (CPU time is steadier on a shared machine)."""
    import torch
    from tqdm import tqdm

    samples: list[float] = []
    cpu_samples: list[float] = []
    with tqdm(total=warmup + iterations, unit="it", desc="bench", file=sys.stderr) as bar:
        for i in range(1, warmup + iterations + 1):
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            bar.update(1)
            if i > warmup:
                samples.append(elapsed)
                cpu_samples.append(cpu)
    return samples, cpu_samples


def _print_profile(step: Callable[[], object], rows: int) -> None:
    """One step under torch.profiler: its costliest ops by self CPU time, as a table on stderr."""
    from torch.profiler import profile

    with profile() as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
