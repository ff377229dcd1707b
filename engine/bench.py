"""`python -m engine.bench`: time the engine's iteration on random-weight models; the last stdout line is JSON.

The JSON has the shape of `shared/bench/seed_loop.py`'s (`sec_per_iter` median/min/max,
`peak_memory_bytes`, `samples`, `settings`), so the two can be compared run for run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

PROMPT = "a red apple"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The bench's flags (issue 3 item 9, plus the CUDA speed options)."""
    p = argparse.ArgumentParser(prog="python -m engine.bench", description="Time the engine's VQGAN+CLIP iteration.")
    p.add_argument("--model", default="vqgan_imagenet_f16_16384", help="VQGAN architecture (or tiny)")
    p.add_argument("--clip-model", default="ViT-B/32", help="CLIP architecture (or tiny)")
    p.add_argument("--size", nargs=2, type=int, default=[256, 256], metavar=("W", "H"))
    p.add_argument("--cutn", type=int, default=32)
    p.add_argument("--cut-pow", type=float, default=1.0)
    p.add_argument("--cut-method", default="kornia", choices=["original", "kornia", "sg3"])
    p.add_argument("--optimizer", default="Adam")
    p.add_argument("--iterations", type=int, default=5, help="timed iterations")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only)")
    p.add_argument("--channels-last", action="store_true", help="channels_last models (CUDA only)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.cutn < 1 or args.iterations < 1 or args.warmup < 0:
        p.error("--cutn and --iterations must be ≥ 1, --warmup ≥ 0")
    return args


def build_models(vqgan_name: str, clip_name: str, device: Any) -> tuple[Any, Any]:
    """The two real architectures (or tiny) with fixed random weights, eval and frozen, on `device`."""
    from engine import fast, models
    from engine.clip_import import tokenizer

    tokenizer()  # import clip quietly first
    vqgan = models.build_vqgan_architecture(vqgan_name).to(device)
    clip = models.build_clip_architecture(clip_name).to(device)
    return fast.fuse_vqgan(vqgan), fast.fuse_clip(clip)  # as the renderer does


def main(argv: Sequence[str] | None = None) -> int:
    """Build, warm up, time, print the JSON line."""
    args = parse_args(argv)
    import torch
    from tqdm import tqdm

    from engine.clip_import import tokenizer
    from engine.prompts import WeightedPrompt
    from engine.renderer import resolve_device
    from engine.state import JobRandom, LoadedModels, OptimisationState, StepSettings

    tokenizer()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cpu":
        from engine.allocator import keep_freed_memory

        keep_freed_memory()  # as the renderer does
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    channels_last = args.channels_last and device.type == "cuda"
    bf16 = args.bf16 and device.type == "cuda"
    vqgan, clip = build_models(args.model, args.clip_model, device)
    if channels_last:
        vqgan, clip = vqgan.to(memory_format=torch.channels_last), clip.to(memory_format=torch.channels_last)
    models = LoadedModels.build(vqgan, clip, device)
    stride = models.stride
    width, height = (args.size[0] // stride) * stride, (args.size[1] // stride) * stride
    if width < stride or height < stride:
        raise SystemExit(f"engine.bench: --size must be at least {stride} {stride}")
    torch.manual_seed(args.seed)
    settings = StepSettings(
        width=width, height=height, num_cuts=args.cutn, cut_power=args.cut_pow, cut_method=args.cut_method,
        optimizer=args.optimizer, learning_rate=0.1, bf16=bf16,
    )  # fmt: skip
    state = OptimisationState(models, settings, JobRandom(args.seed, device))
    state.set_z_random()
    state.set_prompts(text=[WeightedPrompt(text=PROMPT)])

    samples: list[float] = []
    cpu_samples: list[float] = []  # process CPU time: steadier than wall time on a shared machine
    total = args.warmup + args.iterations
    with tqdm(total=total, unit="it", desc="bench", file=sys.stderr) as bar:
        for i in range(1, total + 1):
            start, cpu_start = time.perf_counter(), time.process_time()
            state.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            bar.update(1)
            if i > args.warmup:
                samples.append(elapsed)
                cpu_samples.append(cpu)

    if device.type == "cuda":
        peak = int(torch.cuda.max_memory_allocated(device))
        device_name = torch.cuda.get_device_name(device)
    else:
        peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        device_name = platform.processor() or platform.machine()
    result = {
        "sec_per_iter": {"median": statistics.median(samples), "min": min(samples), "max": max(samples)},
        "peak_memory_bytes": peak,
        "samples": samples,
        "cpu_sec_per_iter": {"median": statistics.median(cpu_samples), "samples": cpu_samples},
        "settings": {
            "loop": "engine",
            "size": [width, height],
            "latent_tokens": list(state.latent_size),
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
            "learning_rate": 0.1,
            "vqgan": args.model,
            "clip": args.clip_model,
            "dtype": "bfloat16" if bf16 else "float32",
            "channels_last": channels_last,
            "weights": "random",
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
