"""Progress and cancel latency between a worker and a front-end that share only the database (prints numbers).

    python benchmarks/relay_latency.py [--backend postgres|sqlite] [--seconds 20] [--relay-s 1.0]
        [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]

One process holds two queues on one database (a fresh PostgreSQL database made through `--admin-url`
and dropped at the end, or a temporary SQLite file), each with its own data directory: a "worker"
with a runner whose fake renderer makes an iteration every 50 ms, and a "front-end" with none.
For each progress update the front-end receives through the relay, the latency is the time since the
worker's runner published that step (one clock: one process). Then a cancel is sent from the
front-end and timed until the worker's render stops.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.claim_latency import cpu_flags, fresh_postgres
from benchmarks.loop_lag import percentile
from bot.queue.api import ProgressUpdate
from bot.queue.runner import JobRunner
from bot.queue.runs import RunnerConfig
from bot.queue.service import QueueConfig
from bot.services import open_queue
from engine.jobs import Artifact, JobSpec, Progress
from storage.records import JobRecord, Owner

SPEC = JobSpec(text_prompts="a lighthouse", width=64, height=64, iterations=2000, vqgan_model="tiny")


class Ticker:
    """An iteration every 50 ms until cancelled; the time each step was reported."""

    def __init__(self) -> None:
        self.reported: dict[int, float] = {}
        self.stopped_at: float | None = None
        self.stopped = threading.Event()

    def render(self, spec: JobSpec, output: Path, **kw: object) -> Artifact:
        cancel = kw["cancel"]
        on_progress = kw["on_progress"]
        assert isinstance(cancel, threading.Event)
        step = 0
        while step < spec.iterations and not cancel.is_set():
            time.sleep(0.05)
            step += 1
            on_progress(  # type: ignore[operator]
                Progress(iteration=step, total=spec.iterations, loss=1.0, step=step, steps=spec.iterations)
            )
        self.stopped_at = time.perf_counter()
        self.stopped.set()
        output.write_bytes(b"")
        return Artifact(kind=spec.kind, paths=(str(output),), seed=1, width=1, height=1, steps_done=step, partial=True)


class Seen:
    """A subscriber recording when each step arrived."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}

    def on_progress(self, update: ProgressUpdate) -> None:
        self.arrived.setdefault(update.step, time.perf_counter())

    async def on_started(self, job: JobRecord) -> None: ...

    async def on_finished(self, job: JobRecord) -> None: ...


class Published(Seen):
    pass


async def bench(database: str | Path, tmp: Path, args: argparse.Namespace) -> None:
    config = QueueConfig(max_queued_per_member=None, relay_progress_s=args.relay_s)
    ticker = Ticker()
    async with (
        open_queue(database, tmp / "front", config) as front,
        open_queue(database, tmp / "worker", config) as worker,
    ):
        seen, published = Seen(), Published()
        front.subscribe(seen)
        worker.subscribe(published)
        runner = JobRunner(worker, lambda d: ticker, ("cpu",), tmp / "worker", RunnerConfig(lease_s=60.0, poll_s=0.05))
        await runner.start()
        job = (await front.submit(Owner(user_id=1), SPEC)).job
        await asyncio.sleep(args.seconds)
        asked = time.perf_counter()
        await front.cancel(job.id, by_user=1)
        await asyncio.to_thread(ticker.stopped.wait, 60)
        assert ticker.stopped_at is not None
        cancel_s = ticker.stopped_at - asked
        await runner.drain(grace_s=5.0)
    latencies = [seen.arrived[s] - published.arrived[s] for s in seen.arrived if s in published.arrived]
    print(f"backend {args.backend}, relay every {args.relay_s:.1f} s, {args.seconds:.0f} s of a 20-iterations/s render")
    print(
        f"progress worker -> front-end: p50 {percentile(latencies, 50) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
        f"({len(latencies)} of {len(published.arrived)} steps seen: the newest per round is sent)"
    )
    print(f"cancel front-end -> render stopped: {cancel_s * 1000:.0f} ms")
    print(f"CPU flags: {cpu_flags()}")


async def on_fresh_postgres(admin_url: str, tmp: Path, args: argparse.Namespace) -> None:
    async with fresh_postgres(admin_url) as url:
        await bench(url, tmp, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--relay-s", type=float, default=1.0)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if args.backend == "postgres":
            asyncio.run(on_fresh_postgres(args.admin_url, tmp, args))
        else:
            asyncio.run(bench(tmp / "jobs.sqlite3", tmp, args))


if __name__ == "__main__":
    main()
