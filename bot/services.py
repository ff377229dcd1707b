"""`build_services`: the job store, the queue, the runner and the Discord bot, wired together and shut down in order.

This is the one place the parts meet. `python -m bot` (`bot.__main__`) calls it with values taken from
`Settings` and the engine's renderer; the tests' bot harness calls it with its own values and a fake
renderer. Who opens a part closes it: the store is opened and closed here, not by the queue.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.app import VQBot
from bot.attachments import MemberFileCheck, check_member_file
from bot.config import BotConfig
from bot.metrics import BotMetrics, Health
from bot.metrics_server import MetricsConfig, MetricsServer
from bot.queue.runner import JobRunner, RendererFactory
from bot.queue.runs import RunnerConfig
from bot.queue.service import JobQueue, QueueConfig
from bot.queue.worker_beat import WorkerBeat
from storage.factory import open_store
from storage.store import JobStore


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    """Everything `build_services` needs besides the renderer. `runner` None: no runner, jobs stay queued."""

    bot: BotConfig
    queue: QueueConfig
    runner: RunnerConfig | None
    store_url: str | Path  # `storage.factory.open_store`'s URL: a SQLite file's path or a postgresql:// URL
    metrics: MetricsConfig | None = None  # None: no metrics endpoint, no port opened

    @property
    def data_dir(self) -> Path:
        """Inputs, outputs and downloads live here (the database too, unless `store_url` says otherwise)."""
        return self.bot.data_dir


@dataclasses.dataclass(frozen=True, slots=True)
class Services:
    """The running parts. `bot.start(token)` connects; the runner starts in the bot's setup hook."""

    store: JobStore
    queue: JobQueue
    runner: JobRunner | None
    bot: VQBot
    metrics: MetricsServer | None = None
    beat: WorkerBeat | None = None  # the runner's row in `workers`

    async def start_runner(self) -> None:
        """The bot's setup hook: the runner's renderers, its first heartbeat, then claims."""
        if self.runner is None:
            return
        await self.runner.start()
        if self.beat is not None:
            await self.beat.start()

    async def stop(self) -> None:
        """Drain the runner (running jobs checkpoint and go back to the queue), finish the events under way, close
        the bot and the metrics endpoint. Safe to call more than once."""
        if self.runner is not None:
            await self.runner.drain()
        if self.beat is not None:
            await self.beat.stop()
        await self.queue.flush_events(limit_s=5.0)  # status edits and results already under way
        await self.bot.close()
        if self.metrics is not None:
            await self.metrics.stop()

    def health(self) -> Health:
        """The gateway's socket is open (identified; READY's guild wait not needed) and every device's loop runs."""
        ws = self.bot.ws
        gateway = not self.bot.is_closed() and ws is not None and ws.open
        return Health(gateway=gateway, devices=self.runner.device_health() if self.runner is not None else {})


@contextlib.asynccontextmanager
async def open_queue(
    store_url: str | Path, data_dir: Path, config: QueueConfig | None = None
) -> AsyncIterator[JobQueue]:
    """A queue on the store at `store_url`; on exit the queue's pending events finish and the store closes."""
    store = await open_store(store_url)
    try:
        queue = await JobQueue.open(store, data_dir, config)
        try:
            yield queue
        finally:
            await queue.aclose()
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def build_services(
    config: ServiceConfig,
    make_renderer: RendererFactory,
    *,
    file_check: MemberFileCheck = check_member_file,
    **bot_options: Any,
) -> AsyncIterator[Services]:
    """The parts, built and connected; on exit they stop (`Services.stop`) and the queue and store close.

    `make_renderer(device)` is called on each device's own thread when the runner starts; `file_check`
    checks a member's attachment (the engine's checks; the tests hold it with a gate). `bot_options`
    go to discord.py's client (for example `max_ratelimit_timeout`).
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    async with open_queue(config.store_url, config.data_dir, config.queue) as queue:
        runner, beat = None, None
        if config.runner is not None:
            runner = JobRunner(queue, make_renderer, config.queue.devices, config.data_dir, config.runner)
            beat = WorkerBeat(queue.store, runner.worker_id, runner.devices, lease_s=runner.lease_s)
        bot_config = dataclasses.replace(config.bot, local_worker_id=runner.worker_id if runner is not None else None)

        async def setup() -> None:  # the bot's setup hook: `services` is bound by the time it runs
            await services.start_runner()

        bot = VQBot(bot_config, queue, queue.store, on_setup=setup, file_check=file_check, **bot_options)
        server = None
        if config.metrics is not None:
            metrics = BotMetrics(queue.store, config.data_dir, lease_s=config.queue.lease_s)
            queue.subscribe(metrics)
            server = MetricsServer(metrics, config.metrics)
        services = Services(queue.store, queue, runner, bot, server, beat)
        if server is not None:
            server.metrics.health = services.health
            await server.start()  # before the gateway connects: /healthz says 503 until it has
        try:
            yield services
        finally:
            await services.stop()
