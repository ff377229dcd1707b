"""Queue benchmark: submit latency and event-loop lag with 1,000 queued jobs from busy servers (prints numbers).

    python benchmarks/queue_latency.py [--jobs 1000] [--members 150] [--guilds 2] [--renderer fake|tiny] [--run-s 5]

Fills a fresh database with `--jobs` jobs from `--members` members spread over `--guilds` busy
servers, timing each submit (which includes its position and ETA over the whole queue), then times
`snapshot()`, shows where a small server's first job lands, and runs the runner for `--run-s` seconds
while every busy server keeps submitting, sampling the loop's lag. `--renderer tiny` renders the
engine's tiny preset on CPU (imports torch); `fake` sleeps per iteration.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.loop_lag import LoopLag, percentile
from bot.queue.api import Renderer
from bot.queue.runner import JobRunner, RendererFactory, RunnerConfig
from bot.queue.service import QueueConfig
from bot.services import open_queue
from engine.jobs import Artifact, JobSpec, Progress, ProgressCallback
from storage.records import Owner

SPEC = JobSpec(
    text_prompts="a lighthouse at dusk",
    width=64,
    height=64,
    iterations=50,
    num_cuts=4,
    vqgan_model="tiny",
    clip_model="tiny",
)


class SleepRenderer:
    """Stands in for the engine: 30 ms per iteration, no output worth looking at."""

    def render(
        self,
        spec: JobSpec,
        output: Path,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        resume: bytes | None = None,
        work_dir: Path | None = None,
    ) -> Artifact:
        done = int(resume or b"0")
        while done < spec.iterations and not (cancel and cancel.is_set()):
            time.sleep(0.03)
            done += 1
            if on_progress is not None:
                on_progress(Progress(iteration=done, total=spec.iterations, loss=0.0, step=done, steps=spec.iterations))
        output.write_bytes(b"")
        return Artifact(
            kind=spec.kind,
            paths=(str(output),),
            seed=0,
            width=1,
            height=1,
            steps_done=done,
            partial=done < spec.iterations,
        )


def _factory(kind: str) -> RendererFactory:
    if kind == "tiny":
        import torch

        from engine.renderer import Renderer as EngineRenderer

        torch.set_num_threads(1)

        def build(device: str) -> Renderer:
            renderer = EngineRenderer(device)
            renderer.models(SPEC)  # models resident before the first job, as the bot does it
            return renderer

        return build
    return lambda device: SleepRenderer()


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.2f}"


def _owner(n: int, members: int, guilds: int) -> Owner:
    """The n-th job's member (each member belongs to one busy server)."""
    member = n % members
    return Owner(user_id=member, guild_id=1000 + member % guilds)


async def bench(jobs: int, members: int, renderer: str, run_s: float, guilds: int = 2) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = QueueConfig(max_queued_per_member=None, max_queued_per_guild=None)
        async with open_queue(Path(tmp) / "jobs.sqlite3", Path(tmp), config) as queue:
            latencies: list[float] = []
            async with LoopLag() as lag:
                for n in range(jobs):
                    spec = dataclasses.replace(SPEC, seed=n)
                    began = time.perf_counter()
                    await queue.submit(_owner(n, members, guilds), spec)
                    latencies.append(time.perf_counter() - began)
            print(
                f"submit ({jobs} jobs, {members} members, {guilds} busy servers): "
                f"p50 {_ms(latencies, 50)} ms, p99 {_ms(latencies, 99)} ms"
            )
            print(
                f"  loop lag while submitting: p50 {lag.percentile(50) * 1000:.2f} ms, p99 {lag.percentile(99) * 1000:.2f} ms"
            )
            snapshots: list[float] = []
            for _ in range(20):
                began = time.perf_counter()
                entries = await queue.snapshot()
                snapshots.append(time.perf_counter() - began)
            print(f"snapshot of {len(entries)} jobs: p50 {_ms(snapshots, 50)} ms, p99 {_ms(snapshots, 99)} ms")
            small = await queue.submit(Owner(user_id=members + 2, guild_id=1), SPEC)
            print(f"a small server's first job: position {small.position} of {len(entries) + 1}")
            runner = JobRunner(queue, _factory(renderer), ["cpu"], Path(tmp), RunnerConfig(preview_interval_s=1.0))
            await runner.start()
            latencies.clear()
            async with LoopLag() as lag:
                deadline = time.monotonic() + run_s
                n = 0
                while time.monotonic() < deadline:
                    began = time.perf_counter()
                    await queue.submit(_owner(n, members, guilds), SPEC)  # the busy servers keep submitting
                    latencies.append(time.perf_counter() - began)
                    n += 1
                    await asyncio.sleep(0.25)
            await runner.drain()
            done = len(await queue.undelivered())  # every finished job here has a result nobody posted
            worst = [round(x * 1000) for x in sorted(lag.samples)[-3:]]
            print(f"while rendering ({renderer}, {run_s:.0f} s; jobs finished: {done}):")
            print(
                f"  loop lag: p50 {lag.percentile(50) * 1000:.2f} ms, p99 {lag.percentile(99) * 1000:.2f} ms, worst {worst} ms ({len(lag.samples)} samples)"
            )
            print(f"  submit with {jobs}+ queued: p50 {_ms(latencies, 50)} ms, p99 {_ms(latencies, 99)} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--members", type=int, default=150)
    parser.add_argument("--guilds", type=int, default=2, help="busy servers the members belong to")
    parser.add_argument("--renderer", choices=("fake", "tiny"), default="fake")
    parser.add_argument("--run-s", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(bench(args.jobs, args.members, args.renderer, args.run_s, args.guilds))


if __name__ == "__main__":
    main()
