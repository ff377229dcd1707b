"""Compare the engine's CPU/GPU iteration with the seed-style loop: interleaved runs, several rounds.

Each round runs `seed_loop.py` and `python -m engine.bench` once each with the same flags, in
alternating order (a shared machine drifts by tens of percent over minutes), and records the ratio
engine ÷ seed of their median seconds per iteration. Prints one line per round, then one JSON
object as the last line with every round and the median ratio.

    python benchmarks/versus_seed.py --size 128 128 --cutn 8 --iterations 5 --rounds 6
    python benchmarks/versus_seed.py --size 256 256 --cutn 32 --iterations 3 --rounds 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SEED_LOOP = ROOT.parent / "shared" / "bench" / "seed_loop.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed-loop", type=Path, default=DEFAULT_SEED_LOOP, help="path to seed_loop.py")
    p.add_argument("--size", nargs=2, type=int, default=[256, 256], metavar=("W", "H"))
    p.add_argument("--cutn", type=int, default=32)
    p.add_argument("--cut-method", default="kornia", choices=["kornia", "original", "sg3"])
    p.add_argument("--iterations", type=int, default=3, help="timed iterations per run")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if not args.seed_loop.is_file():
        p.error(f"no seed loop at {args.seed_loop}; pass --seed-loop PATH")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def _last_json_line(cmd: list[str]) -> dict[str, Any]:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flags = [
        "--size", str(args.size[0]), str(args.size[1]), "--cutn", str(args.cutn), "--cut-method", args.cut_method,
        "--iterations", str(args.iterations), "--warmup", str(args.warmup), "--device", args.device,
    ]  # fmt: skip
    seed_cmd = [sys.executable, str(args.seed_loop), *flags]
    engine_cmd = [sys.executable, "-m", "engine.bench", *flags]
    rounds = []
    for r in range(1, args.rounds + 1):
        if r % 2:  # alternate which runs first
            seed = _last_json_line(seed_cmd)
            engine = _last_json_line(engine_cmd)
        else:
            engine = _last_json_line(engine_cmd)
            seed = _last_json_line(seed_cmd)
        row = {
            "seed_sec_per_iter": seed["sec_per_iter"]["median"],
            "engine_sec_per_iter": engine["sec_per_iter"]["median"],
            "ratio": engine["sec_per_iter"]["median"] / seed["sec_per_iter"]["median"],
            "seed_peak_bytes": seed["peak_memory_bytes"],
            "engine_peak_bytes": engine["peak_memory_bytes"],
        }
        rounds.append(row)
        print(
            f"round {r}: seed {row['seed_sec_per_iter']:.3f} s/it, engine {row['engine_sec_per_iter']:.3f} s/it, "
            f"ratio {row['ratio']:.3f}; peak {row['seed_peak_bytes'] / 1e9:.2f} GB vs "
            f"{row['engine_peak_bytes'] / 1e9:.2f} GB",
            flush=True,
        )
    summary = {
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "rounds": rounds,
        "settings": {**vars(args), "seed_loop": str(args.seed_loop)},
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
