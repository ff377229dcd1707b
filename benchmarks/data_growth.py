"""Data directory growth: what 20 mixed jobs and a crash leave on disk (prints bytes, file count and the files).

    python benchmarks/data_growth.py [--jobs 20] [--iterations 4] [--keep DIR]

Runs the real queue and runner with the engine's tiny preset on CPU in worker processes sharing one
data directory: stills (half of them from an attached init image), animations and style transfers
(each with its own copy of a source video). The first job is a style transfer; the first worker is
killed with SIGKILL while it renders that job's second frame (held there by a file gate, after a
checkpoint), and a second worker runs every job to completion. Then the data directory is listed.
Nothing is posted (there is no Discord here), so no re-encoded copies are made.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.queue.runner import JobRunner, RendererFactory  # noqa: E402
from bot.queue.runs import RunnerConfig  # noqa: E402
from bot.queue.service import QueueConfig  # noqa: E402
from bot.services import open_queue  # noqa: E402
from engine.jobs import JobKind, JobSpec  # noqa: E402
from storage.records import Owner  # noqa: E402
from tests.support.gate import FileGate, GatedRenderer  # noqa: E402

TINY = {"vqgan_model": "tiny", "clip_model": "tiny", "num_cuts": 2, "width": 32, "height": 32, "seed": 1}
FRAMES = 3  # every animation and style transfer renders this many frames


def plan(jobs: int, iterations: int, video: Path, init: Path) -> list[tuple[JobSpec, dict[str, Path]]]:
    """The mixed jobs, a style transfer first: (spec, inputs)."""
    style = JobSpec(
        kind=JobKind.STYLE_TRANSFER, text_prompts="oil painting", iterations=iterations,
        extraction_fps=float(FRAMES), fps=0.0, **TINY,  # type: ignore[arg-type]
    )  # fmt: skip
    animation = JobSpec(
        kind=JobKind.ANIMATION, text_prompts="a tunnel", iterations=iterations, frames=FRAMES, zoom=1.1, fps=5.0,
        **TINY,  # type: ignore[arg-type]
    )  # fmt: skip
    still = JobSpec(text_prompts="a lighthouse", iterations=iterations * 2, **TINY)  # type: ignore[arg-type]
    cycle: list[tuple[JobSpec, dict[str, Path]]] = [
        (dataclasses.replace(style, video=str(video)), {"video": video}),
        (still, {}),
        (animation, {}),
        (dataclasses.replace(still, init_image=str(init), init_weight=0.5), {"init_image": init}),
    ]
    return [cycle[n % len(cycle)] for n in range(jobs)]


async def work(args: argparse.Namespace) -> None:
    """One worker process: submit the plan (the first worker only), then render until nothing is left."""
    import torch

    from engine.renderer import Renderer as EngineRenderer

    torch.set_num_threads(1)
    data = Path(args.data)

    def tiny(device: str) -> GatedRenderer:
        return GatedRenderer(EngineRenderer(device), FileGate(Path(args.gate)))

    factory: RendererFactory = tiny
    config = QueueConfig(max_queued_per_member=None, max_queued_per_guild=None)
    async with open_queue(data / "jobs.sqlite3", data, config) as queue:
        if args.submit:
            for spec, inputs in plan(args.jobs, args.iterations, Path(args.video), Path(args.init)):
                await queue.submit(Owner(user_id=1), spec, inputs=inputs)
        options = RunnerConfig(lease_s=2.0, poll_s=0.1, checkpoint_every_steps=2)
        runner = JobRunner(queue, factory, ["cpu"], data, options)
        await runner.start()
        while await queue.store.active():
            with contextlib.suppress(TimeoutError):  # as the tests' queue worker does: poll the database
                await asyncio.wait_for(runner.stopped.wait(), 0.1)
        await runner.drain()
        await queue.flush_events()


def listing(data: Path) -> tuple[int, list[tuple[str, int]]]:
    """(total bytes, [(relative path, bytes)]) of every file under `data`."""
    files = sorted((str(p.relative_to(data)), p.stat().st_size) for p in data.rglob("*") if p.is_file())
    return sum(size for _, size in files), files


def summary(files: list[tuple[str, int]]) -> list[str]:
    """The files grouped by what they are: top folder and the kind of file (so 400 frames read as one line)."""
    groups: collections.Counter[str] = collections.Counter()
    sizes: collections.Counter[str] = collections.Counter()
    for path, size in files:
        parts = Path(path).parts
        top = parts[0] if len(parts) > 1 else "(top)"
        name = parts[-1]
        kind = "frame_*" + Path(name).suffix if name.startswith("frame_") else Path(name).suffix or name
        if any(p.startswith(".vqbot-") for p in parts):
            kind = ".vqbot-* temp: " + kind
        key = f"{top}/ {kind}"
        groups[key] += 1
        sizes[key] += size
    return [f"{groups[k]:5d} files {sizes[k]:>10,d} B  {k}" for k in sorted(groups)]


def grow(base: Path, jobs: int, iterations: int) -> Path:
    """Run the jobs with the crash and the restart in `base`; the data directory they left."""
    data, sources = base / "data", base / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    from tests.support.mediafiles import make_video

    video = make_video(sources / "clip.mp4", seconds=1.0, fps=FRAMES * 2, size=(48, 32))
    init = sources / "init.png"
    Image.new("RGB", (32, 32), (200, 120, 40)).save(init)
    gate = FileGate(base / "gate")
    gate.hold_at(iterations + 2)  # the style transfer's second frame, after the checkpoint of the first
    common = ["--data", str(data), "--gate", str(gate.directory), "--jobs", str(jobs)]
    common += ["--iterations", str(iterations), "--video", str(video), "--init", str(init)]
    first = subprocess.Popen([sys.executable, __file__, "--worker", "--submit", *common], env=_env())
    try:
        while not gate.waiting() or _checkpoint_step(data / "jobs.sqlite3") is None:
            if first.poll() is not None:
                raise RuntimeError(f"the first worker exited ({first.returncode}) before the crash")
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)  # mid style transfer, after a checkpoint: the restart resumes it
    finally:
        first.kill()
        first.wait()
    gate.release()
    second = subprocess.Popen([sys.executable, __file__, "--worker", *common], env=_env())
    if second.wait(600) != 0:
        raise RuntimeError("the second worker failed")
    return data


def drive(args: argparse.Namespace) -> int:
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vqbot-growth-"))
    began = time.monotonic()
    data = grow(base, args.jobs, args.iterations)
    total, files = listing(data)
    database = sum(size for path, size in files if path.startswith("jobs.sqlite3"))
    print(f"{args.jobs} jobs ({args.iterations} iterations per frame), one SIGKILL mid style transfer, restarted")
    print(f"in {time.monotonic() - began:.0f} s; data directory {data}")
    folders = sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_dir())
    empty = [f for f in folders if not any((data / f).iterdir())]
    print(f"total: {total:,d} bytes in {len(files)} files ({database:,d} bytes of them the database)")
    print(f"{len(folders)} folders, {len(empty)} of them empty: {' '.join(empty) or '-'}")
    for line in summary(files):
        print(line)
    if args.list:
        for path, size in files:
            print(f"{size:>10,d}  {path}")
    return 0


def _checkpoint_step(db: Path) -> int | None:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        row = conn.execute("SELECT checkpoint_step FROM jobs WHERE id = 1").fetchone()
    return None if row is None else row[0]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=4, help="per frame (a still gets twice as many)")
    parser.add_argument("--keep", default=None, help="work in this folder and keep it (default: a new temp folder)")
    parser.add_argument("--list", action="store_true", help="also print every file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--submit", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--data", "--gate", "--video", "--init"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(work(args))
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
