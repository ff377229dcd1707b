"""A bot-less worker process for the crash tests: JobQueue + JobRunner on a database path.

    python -m tests.support.queue_worker DB DATA_DIR EVENTS [--submit N] [--renderer fake|tiny] [--gate DIR] ...

Submits N jobs (optional), runs until no job is queued or running, and appends one JSON line per
event (accepted, ready, started, progress, finished, draining, exit) to EVENTS, flushed at once so a
SIGKILL loses nothing already reported. SIGTERM/SIGINT drain: the running job is checkpointed and
given back to the queue. `--gate DIR`: renders wait between iterations as the test's FileGate says.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

from bot.queue.api import ProgressUpdate, Renderer
from bot.queue.runner import JobRunner, RendererFactory
from bot.queue.runs import RunnerConfig
from bot.queue.service import QueueConfig
from bot.queue.worker_slot import hold_worker_slot
from bot.services import open_queue
from engine.jobs import Artifact, JobSpec
from storage.records import JobRecord, Owner
from tests.support.gate import FileGate, GatedRenderer


class EventLog:
    """A JobEvents subscriber writing JSON lines."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def write(self, **fields: object) -> None:
        self.out.write(json.dumps({"pid": os.getpid(), "t": time.time(), **fields}) + "\n")
        self.out.flush()

    def on_progress(self, update: ProgressUpdate) -> None:
        self.write(ev="progress", job=update.job_id, step=update.step)

    async def on_started(self, job: JobRecord) -> None:
        self.write(ev="started", job=job.id, attempt=job.attempt)

    async def on_finished(self, job: JobRecord) -> None:
        self.write(ev="finished", job=job.id, state=str(job.state), partial=job.partial, paths=list(job.result_paths))


def make_factory(kind: str, step_s: float, model_dir: str | None) -> tuple[RendererFactory, JobSpec]:
    if kind == "fake":
        from tests.support.renderer import FakeRenderer

        spec = JobSpec(text_prompts="a fox", width=64, height=64, num_cuts=4, vqgan_model="tiny", clip_model="tiny")

        def fake(device: str) -> Renderer:
            return FakeRenderer(device, step_s=step_s)

        return fake, spec
    import torch

    from engine.renderer import Renderer as EngineRenderer

    torch.set_num_threads(1)
    spec = JobSpec(text_prompts="a fox", width=64, height=64, num_cuts=4, vqgan_model="tiny", clip_model="tiny", seed=1)

    def tiny(device: str) -> Renderer:
        renderer = EngineRenderer(device, model_dir=Path(model_dir) if model_dir else None)
        renderer.models(spec)  # load the models now, on the device thread, not with the first job
        return renderer

    return tiny, spec


def gated(factory: RendererFactory, gate: FileGate) -> RendererFactory:
    return lambda device: GatedRenderer(factory(device), gate)


POISON = "poison"  # a job whose render kills its process, as the host's OOM killer or a native crash would


class PoisonedRenderer:
    """Any renderer, except that a job prompting POISON ends the whole process at its first iteration."""

    def __init__(self, inner: Renderer) -> None:
        self.inner = inner

    def render(self, spec: JobSpec, output: Path, **kw: Any) -> Artifact:
        if spec.text_prompts == POISON:
            os._exit(70)
        return self.inner.render(spec, output, **kw)


def poisoned(factory: RendererFactory) -> RendererFactory:
    return lambda device: PoisonedRenderer(factory(device))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("data")
    parser.add_argument("events")
    parser.add_argument("--submit", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--renderer", default="fake")
    parser.add_argument("--step-s", type=float, default=0.02)
    parser.add_argument("--lease-s", type=float, default=1.5)
    parser.add_argument("--checkpoint-steps", type=int, default=5)
    parser.add_argument("--worker-id", default=None)
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--gate", default=None)
    parser.add_argument("--poison", action="store_true", help="submit a job whose render kills the process first")
    parser.add_argument("--slot", action="store_true", help="the worker id of the data directory's process slot")
    args = parser.parse_args(argv)
    with open(args.events, "a", encoding="utf-8") as out:
        asyncio.run(work(args, EventLog(out)))
    return 0


async def work(args: argparse.Namespace, events: EventLog) -> None:
    factory, base = make_factory(args.renderer, args.step_s, args.model_dir)
    if args.gate:
        factory = gated(factory, FileGate(Path(args.gate)))
    factory = poisoned(factory)
    spec = dataclasses.replace(base, iterations=args.iterations)
    config = QueueConfig(max_queued_per_member=None, max_queued_per_guild=None)
    async with open_queue(Path(args.db), Path(args.data), config) as queue:
        queue.subscribe(events)
        if args.poison:
            entry = await queue.submit(Owner(user_id=99), dataclasses.replace(spec, text_prompts=POISON))
            events.write(ev="accepted", job=entry.job.id)
        for n in range(args.submit):
            entry = await queue.submit(Owner(user_id=1 + n % 3), spec)
            events.write(ev="accepted", job=entry.job.id)
        worker_id = hold_worker_slot(Path(args.data)).worker_id if args.slot else args.worker_id
        options = RunnerConfig(
            worker_id=worker_id, lease_s=args.lease_s, poll_s=0.1, checkpoint_every_steps=args.checkpoint_steps
        )
        runner = JobRunner(queue, factory, ["cpu"], Path(args.data), options)
        await runner.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: loop.create_task(drain_and_say(runner, events)))
        events.write(ev="ready", worker=runner.worker_id)
        while not runner.stopped.is_set() and await queue.store.active():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runner.stopped.wait(), 0.1)
        await runner.drain()
        await queue.flush_events()
        events.write(ev="exit")


async def drain_and_say(runner: JobRunner, events: EventLog) -> None:
    """Drain as `python -m bot` does on SIGTERM, and write "draining" once the running job is marked."""
    draining = asyncio.create_task(runner.drain(5.0))
    await asyncio.sleep(0)  # drain() marks the running job before it first waits
    events.write(ev="draining")
    await draining


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
