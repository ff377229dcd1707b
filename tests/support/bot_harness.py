"""The real VQBot, JobQueue and JobRunner in the test's event loop, logged in to the fake Discord.

They are built by `bot.services.build_services`, as `python -m bot` builds them. Only the engine is
replaced, by `FakeRenderer` behind the harness's `StepGate`: a test that needs a job to be running
holds it with `h.gate.hold_at(n)` and lets it go with `h.gate.release()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord

from bot.app import VQBot, point_at
from bot.attachments import MemberFileCheck, check_member_file
from bot.config import BotConfig
from bot.metrics_server import MetricsConfig, MetricsServer
from bot.queue.admission import AdmissionLimits
from bot.queue.api import JobNotFound, Renderer
from bot.queue.runner import JobRunner, RendererFactory
from bot.queue.runs import RunnerConfig
from bot.queue.service import JobQueue, QueueConfig
from bot.services import ServiceConfig, build_services
from storage.records import JobRecord
from tests.support.fake_discord import BOT_TOKEN, FakeDiscord
from tests.support.gate import StepGate
from tests.support.renderer import FakeRenderer
from tests.support.waiting import eventually

ALICE, BOB, CAROL = 111111111111111111, 222222222222222222, 333333333333333333  # members of the first guild
DAVE, ERIN = 444444444444444444, 555555555555555555  # members of the second guild (CAROL is in both)


@dataclasses.dataclass
class Harness:
    """The bot and its real queue; `runner` is None when jobs are meant to stay queued."""

    bot: VQBot
    queue: JobQueue
    runner: JobRunner | None
    gate: StepGate
    metrics: MetricsServer | None = None  # set when `running_bot(metrics=...)` asked for the endpoint

    @property
    def metrics_url(self) -> str:
        assert self.metrics is not None, "running_bot(metrics=MetricsConfig(port=0))"
        assert self.metrics.port is not None
        return f"http://{self.metrics.config.host}:{self.metrics.port}"

    async def job(self, job_id: int) -> JobRecord:
        return await self.queue.get(job_id)

    async def settled(self) -> None:
        """Every event handler and result delivery under way has ended (a retry would have been made by now)."""
        await self.queue.flush_events()
        await self.bot.publisher.settled()
        await self.queue.flush_events()

    async def count(self) -> int:
        n = 0
        with contextlib.suppress(JobNotFound):
            while True:
                await self.queue.get(n + 1)
                n += 1
        return n


@contextlib.asynccontextmanager
async def running_bot(
    fake: FakeDiscord,
    config: BotConfig,
    *,
    run_jobs: bool = True,
    hold_at: int | None = None,
    max_queued: int = 3,
    devices: tuple[str, ...] = ("cpu",),
    file_check: MemberFileCheck = check_member_file,
    renderer: RendererFactory | None = None,
    queue_options: dict[str, Any] | None = None,
    metrics: MetricsConfig | None = None,
    memory_gb: float | None = None,
    store_url: str | None = None,
) -> AsyncIterator[Harness]:
    """The real discord.py bot in this event loop, over a real queue in `config.data_dir`.

    `hold_at`: the gate's first limit (renders wait after that step until the test moves it).
    `file_check` checks attachments (a test can hold it); `renderer(device, gate)` replaces the fake renderer.
    `queue_options` are more `QueueConfig` fields (retention, the free-disk minimum).
    `metrics` serves the metrics endpoint; `memory_gb` is what admission lets a job use (None: unchecked).
    `store_url` is the job store (default: a SQLite file in the data directory).
    """
    config = dataclasses.replace(config, max_queued_per_member=max_queued)  # the host's cap, as the bot knows it
    old_base, old_gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    point_at(fake.api_base, fake.gateway_url)
    fake.identified.clear()
    limits = AdmissionLimits(
        max_side=config.max_size,
        max_iterations=config.max_iterations,
        max_frames=config.max_frames,
        memory_gb=memory_gb,
    )
    services_config = ServiceConfig(
        bot=config,
        queue=QueueConfig(
            devices=devices,
            max_queued_per_member=max_queued,
            max_queued_per_guild=config.max_queued_per_guild,
            admission=limits,
            **(queue_options or {}),
        ),
        runner=RunnerConfig(preview_interval_s=config.preview_seconds, poll_s=0.1) if run_jobs else None,
        store_url=store_url or config.data_dir / "jobs.sqlite3",
        metrics=metrics,
    )
    gate = StepGate(hold_at)

    def make_renderer(device: str) -> Renderer:
        if renderer is not None:
            return renderer(device)
        return FakeRenderer(device, noise=True, gate=gate)

    try:
        async with build_services(services_config, make_renderer, file_check=file_check) as services:
            task = asyncio.create_task(services.bot.start(BOT_TOKEN))
            try:
                await asyncio.wait_for(fake.identified.wait(), 15)
                yield Harness(services.bot, services.queue, services.runner, gate, services.metrics)
            finally:
                gate.release()
                await asyncio.sleep(0.3)  # let requests the fake has already answered finish in the client
                await services.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await _finish_dispatched_events()
        await _finish_dispatched_events()  # and any an event handler scheduled while the queue closed
    finally:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_base, old_gateway


async def _finish_dispatched_events(timeout_s: float = 5.0) -> None:
    """Let event tasks discord.py scheduled during close run, so none is left unstarted when the loop ends.

    A task that never started is reported as "coroutine 'Client._run_event' was never awaited" when the
    test's loop is torn down, which filterwarnings=error turns into an error in a later test. Handlers
    may dispatch further events, so this repeats until none is left; what is still pending at the
    deadline is cancelled and awaited (a task cancelled before it starts closes its coroutine quietly).
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    current = asyncio.current_task()
    while pending := [t for t in asyncio.all_tasks() if t is not current and t.get_name().startswith("discord.py")]:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            return
        await asyncio.wait(pending, timeout=left)


def make_config(tmp_path: Path, **overrides: Any) -> BotConfig:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "guild_id": FakeDiscord().guild_id,
        "models": ("tiny",),
        "num_cuts": 8,
        "max_size": 256,
        "default_size": 64,
        "max_iterations": 100,
        "default_iterations": 6,
        "max_frames": 20,
        "default_frames": 4,
        "max_video_seconds": 5.0,
        "moderator_role": "Render Mods",
        "preview_seconds": 3.0,
        "channel_seconds": 0.2,
    }
    values.update(overrides)
    return BotConfig(**values)


def status_message(fake: FakeDiscord, job_id: int) -> dict[str, Any]:
    """The job's latest status message, or an empty one before it is posted."""
    found = [m for m in fake.channel_messages() if m["content"].startswith(f"**#{job_id}**")]
    return found[-1] if found else {"content": "", "id": "0", "components": []}


def status_edits(fake: FakeDiscord, job_id: int, word: str = "") -> list[Any]:
    """PATCH requests to the job's (latest) status message whose text contains `word`, answered or refused."""
    path = f"/messages/{status_message(fake, job_id)['id']}"
    return [
        r
        for r in fake.requests
        if r.method == "PATCH" and r.path.endswith(path) and word in ((r.payload or {}).get("content") or "")
    ]


async def reply_with(fake: FakeDiscord, sent: Any, word: str, within: float = 30.0) -> str:
    """The first reply to the interaction `sent` that contains `word`."""
    found = await eventually(lambda: [t for t in fake.replies(sent) if word in t], within, f"a reply with {word!r}")
    return str(found[0])
