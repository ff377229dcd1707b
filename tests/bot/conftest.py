"""Fixtures: a fake Discord on 127.0.0.1, and the real VQBot, JobQueue and JobRunner in this process.

Only the engine is replaced (tests/bot/noise_renderer.py); test_e2e.py runs `python -m bot` with the tiny engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import discord
import pytest

from bot.admission import AdmissionLimits
from bot.app import BotConfig, VQBot, point_at
from bot.ports import JobNotFound
from bot.queue import JobQueue, QueueConfig
from bot.runner import JobRunner
from storage.records import JobRecord
from tests.bot.fake_discord import FakeDiscord
from tests.bot.noise_renderer import NoiseRenderer

BOT_TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.GfakeB.bot-token-that-must-never-be-logged-0123456789"


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclasses.dataclass
class Harness:
    """The bot and its real queue; `runner` is None when jobs are meant to stay queued."""

    bot: VQBot
    queue: JobQueue
    runner: JobRunner | None

    async def job(self, job_id: int) -> JobRecord:
        return await self.queue.get(job_id)

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
    step_s: float = 0.05,
    max_queued: int = 3,
    devices: tuple[str, ...] = ("cpu",),
) -> AsyncIterator[Harness]:
    """The real discord.py bot in this event loop, logged in to the fake, over a real queue in `config.data_dir`."""
    old_base, old_gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    point_at(fake.api_base, fake.gateway_url)
    fake.identified.clear()
    limits = AdmissionLimits(
        max_side=config.max_size, max_iterations=config.max_iterations, max_frames=config.max_frames
    )
    config.data_dir.mkdir(parents=True, exist_ok=True)
    queue_config = QueueConfig(devices=devices, max_queued_per_member=max_queued, admission=limits)
    queue = await JobQueue.open(config.data_dir, queue_config)
    runner = JobRunner(
        queue, lambda device: NoiseRenderer(device, step_s), devices, config.data_dir,
        preview_interval_s=config.preview_seconds, poll_s=0.1,
    ) if run_jobs else None  # fmt: skip

    async def start_runner(bot: VQBot) -> None:
        if runner is not None:
            await runner.start()

    bot = VQBot(config, queue, on_setup=start_runner)
    task = asyncio.create_task(bot.start(BOT_TOKEN))
    try:
        await asyncio.wait_for(fake.identified.wait(), 15)
        yield Harness(bot, queue, runner)
    finally:
        await asyncio.sleep(0.3)  # let requests the fake has already answered finish in the client
        if runner is not None:
            await runner.drain()
        await queue.flush_events(limit_s=5.0)
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await _finish_dispatched_events()
        await queue.aclose()
        await _finish_dispatched_events()  # and any an event handler scheduled while the queue closed
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


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tests that run the real engine use one torch thread: the two cores are shared by everyone."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_config(tmp_path: Path, **overrides: object) -> BotConfig:
    values: dict[str, object] = {
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
    return BotConfig(**values)  # type: ignore[arg-type]
