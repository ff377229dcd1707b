"""`python -m bot`, `python -m bot worker` and `python -m bot migrate-db`: the composition root. Settings →
logging → the parts → run until SIGTERM.

`python -m bot` is the Discord bot: it renders on ENGINE_DEVICE too, unless that is `none` (a front-end only).
`python -m bot worker` renders from the shared database without a Discord connection. `python -m bot
migrate-db` copies a single-host installation into PostgreSQL (`bot.migrate_db`). The only bot module
that imports the engine's renderer (and so torch); `main(make_renderer=...)` replaces it (the end-to-end
tests hold renders with that seam).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bot import migrate_db
from bot.app import point_at
from bot.config import BotConfig, clip_for
from bot.logs import setup_logging
from bot.metrics import BotMetrics, Health
from bot.metrics_server import MetricsConfig, MetricsServer
from bot.queue.admission import AdmissionLimits, estimate_memory_gb
from bot.queue.api import Renderer
from bot.queue.device_health import EXIT_STUCK_THREAD
from bot.queue.runner import JobRunner
from bot.queue.runs import RunnerConfig
from bot.queue.service import JobQueue, QueueConfig
from bot.queue.worker_beat import WorkerBeat
from bot.queue.worker_slot import hold_worker_slot
from bot.services import ServiceConfig, build_services, open_queue
from bot.settings import Settings, load_settings
from engine.jobs import JobSpec

log = logging.getLogger("bot")

RESULT_POLL_S = 3.0  # how often a front-end looks for results that workers in other processes finished
SHARED_POLL_S = 2.0  # how often an idle device on a shared database looks for a job
RELAY_S = 1.0  # how often progress and cancels are exchanged with other processes through the database
FRONT_END_DEVICES = ("cuda:0",)  # what a front-end's ETAs assume the workers are until their speeds are measured

RendererFromSettings = Callable[
    [str, Settings], Renderer
]  # (device, settings) -> a renderer, built on the device thread


def bot_config(settings: Settings, *, force_sync: bool = False) -> BotConfig:
    """The plain values the Discord side needs."""
    return BotConfig(
        force_sync=force_sync,
        data_dir=settings.bot_data_dir,
        guild_id=settings.bot_guild_id,
        models=(settings.engine_model,),
        num_cuts=settings.bot_num_cuts,
        max_size=settings.bot_max_size,
        default_size=min(settings.bot_default_size, settings.bot_max_size),
        max_iterations=settings.bot_max_iterations,
        default_iterations=min(settings.bot_default_iterations, settings.bot_max_iterations),
        max_frames=settings.bot_max_frames,
        default_frames=min(settings.bot_default_frames, settings.bot_max_frames),
        max_video_seconds=settings.bot_max_video_seconds,
        max_attachment_bytes=settings.max_attachment_bytes,
        max_queued_per_member=settings.bot_max_queued_per_member,
        max_queued_per_guild=settings.bot_max_queued_per_guild,
        file_check_workers=settings.bot_file_check_workers,
        file_check_seconds=settings.bot_file_check_seconds,
        moderator_role=settings.bot_moderator_role,
        allowed_channels=settings.bot_allowed_channels,
        preview_seconds=settings.bot_preview_seconds,
        channel_seconds=settings.bot_channel_edit_seconds,
        rate_limit_max_wait_seconds=settings.bot_rate_limit_max_wait_seconds,
    )


def service_config(settings: Settings, *, force_sync: bool = False, worker_id: str | None = None) -> ServiceConfig:
    """What `build_services` needs, from the settings: the jobs database is BOT_DATABASE_URL, else
    `BOT_DATA_DIR/jobs.sqlite3`; ENGINE_DEVICE=none: no runner, and a memory limit on admission only from
    ENGINE_MEMORY_GB.

    `worker_id` is the process slot's (`hold_worker_slot`) when `BOT_WORKER_ID` does not name one.
    """
    renders = settings.renders
    devices = (settings.engine_device or (default_device(),)) if renders else FRONT_END_DEVICES
    # a front-end measures nothing: its limit is ENGINE_MEMORY_GB when set (the workers' smallest device)
    memory_gb, memory_of = (
        device_memory(devices, settings.engine_memory_gb) if renders else (settings.engine_memory_gb, "a worker")
    )
    if memory_gb is not None:
        warn_if_default_too_big(settings, memory_gb)
    limits = AdmissionLimits(
        max_side=settings.bot_max_size,
        max_iterations=settings.bot_max_iterations,
        max_frames=settings.bot_max_frames,
        memory_gb=memory_gb,
        memory_of=memory_of,
    )
    queue = QueueConfig(
        devices=devices,
        max_queued_per_member=settings.bot_max_queued_per_member,
        max_queued_per_guild=settings.bot_max_queued_per_guild,
        max_running_per_guild=settings.bot_max_running_per_guild,
        admission=limits,
        min_free_disk_bytes=settings.bot_min_free_disk_mb * 2**20,
        keep_results_s=settings.bot_keep_results_days * 86400 if settings.bot_keep_results_days else None,
        max_attempts=settings.bot_max_attempts,
        # progress and cancels cross processes when another one may render or show this one's jobs
        relay_progress_s=RELAY_S if not renders or settings.bot_database_url else None,
        lease_s=settings.bot_lease_seconds,
    )
    runner = RunnerConfig(
        worker_id=settings.bot_worker_id or worker_id,
        lease_s=settings.bot_lease_seconds,
        # a job submitted by a front-end in another process wakes no one here: look often (one cheap read)
        poll_s=SHARED_POLL_S if settings.bot_database_url else None,
        preview_interval_s=settings.bot_preview_seconds,
        device_failure_limit=settings.bot_device_failure_limit,
        stall_s=settings.bot_stall_seconds,
        stall_grace_s=min(30.0, settings.bot_stall_seconds),
    )
    bot = dataclasses.replace(
        bot_config(settings, force_sync=force_sync),
        # another process may render: a front-end only, or any process on a shared database
        result_poll_seconds=RESULT_POLL_S if not renders or settings.bot_database_url else None,
        lease_s=settings.bot_lease_seconds,
    )
    return ServiceConfig(
        bot=bot,
        queue=queue,
        runner=runner if renders else None,
        store_url=settings.store_url,
        metrics=None
        if settings.bot_metrics_port is None
        else MetricsConfig(port=settings.bot_metrics_port, host=settings.bot_metrics_host),
    )


def warn_if_default_too_big(settings: Settings, memory_gb: float) -> None:
    """Every /imagine without a size would be refused: say so once at start, to the operator."""
    side = min(settings.bot_default_size, settings.bot_max_size)
    spec = JobSpec(vqgan_model=settings.engine_model, width=side, height=side, num_cuts=settings.bot_num_cuts)
    if (need := estimate_memory_gb(spec)) > memory_gb:
        log.warning(
            "BOT_DEFAULT_SIZE %d with BOT_NUM_CUTS %d needs about %.1f GiB but a job may use %.1f GiB: "
            "jobs at the default size will be refused",
            side,
            settings.bot_num_cuts,
            need,
            memory_gb,
        )


def device_memory(devices: tuple[str, ...], override_gb: float | None) -> tuple[float | None, str]:
    """(GiB a job may use, what has it) for admission: `ENGINE_MEMORY_GB`, else the smallest device's at start.

    A job may be claimed by any device, so it must fit the smallest. Measured before the models load
    (the estimates include them): a GPU's free memory, the host's available RAM for the CPU.
    """
    if override_gb is not None:
        return override_gb, "the device"
    from engine.devices import available_memory_gb

    measured = [(gb, d) for d in devices if (gb := available_memory_gb(d)) is not None]
    if not measured:
        return None, "the device"
    gb, device = min(measured)
    log.info("admission: a job may use %.1f GiB (%s, the smallest of %s)", gb, device, ", ".join(devices))
    return gb, ("the CPU's RAM" if device.startswith("cpu") else device)


def engine_renderer(device: str, settings: Settings) -> Renderer:
    """The renderer `python -m bot` uses: the engine's, with `ENGINE_MODEL` preloaded."""
    return build_renderer(device, settings.engine_model, settings.engine_model_dir, settings.engine_precision)


def build_renderer(device: str, model: str, model_dir: Path | None = None, precision: str = "auto") -> Renderer:
    """The engine's renderer for `device` with `model`'s VQGAN and CLIP already loaded (runs on the device thread).

    Loading here, at start, means the first member's job does not pay for it.
    """
    from engine.renderer import Renderer as EngineRenderer

    renderer = EngineRenderer(device, model_dir=model_dir, precision=precision)
    started = time.monotonic()
    renderer.models(JobSpec(vqgan_model=model, clip_model=clip_for(model)))
    log.info("preloaded %s on %s in %.1f s", model, device, time.monotonic() - started)
    return renderer


def default_device() -> str:
    """The first GPU when there is one, else the CPU."""
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def _torch_threads(settings: Settings) -> None:
    if settings.engine_threads and settings.renders:
        import torch

        torch.set_num_threads(settings.engine_threads)


def _log_start(what: str, settings: Settings, config: ServiceConfig) -> None:
    devices = ", ".join(config.queue.devices) if config.runner is not None else "none (no rendering here)"
    worker = config.runner.worker_id if config.runner is not None else None
    log.info("%s: database %s; devices %s; worker id %s", what, settings.database_for_log, devices, worker or "none")


async def run(
    settings: Settings, *, force_sync: bool = False, make_renderer: RendererFromSettings | None = None
) -> int:
    """Run the bot until SIGTERM/SIGINT (0) or until the runner asks for a restart (its exit status), then
    drain the runner and close."""
    point_at(settings.discord_api_base, settings.discord_gateway_url)
    stop = asyncio.Event()
    _on_signals(stop)
    _torch_threads(settings)
    build = make_renderer or engine_renderer
    settings.bot_data_dir.mkdir(parents=True, exist_ok=True)
    slot = hold_worker_slot(settings.bot_data_dir)  # held until the process ends
    config = service_config(settings, force_sync=force_sync, worker_id=slot.worker_id)
    _log_start("bot", settings, config)
    assert settings.discord_token is not None  # load_settings requires it for the front-end
    async with build_services(config, lambda device: build(device, settings)) as services:
        async with services.bot as bot:
            client = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()), name="discord")
            waiters = [asyncio.create_task(stop.wait(), name="stop")]
            if services.runner is not None:
                waiters.append(asyncio.create_task(services.runner.exit_requested.wait(), name="runner-exit"))
            await asyncio.wait({client, *waiters}, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            status = _exit_status(services.runner)
            await services.stop()
        with contextlib.suppress(asyncio.CancelledError):
            if client.done():
                client.result()  # surfaces LoginFailure and the like
    return status or 0


def _exit_status(runner: JobRunner | None) -> int | None:
    """The runner's exit status when it asked for one (a device failed, a stuck thread), else None; logged."""
    status = runner.exit_status if runner is not None else None
    if status is not None and runner is not None and runner.exit_requested.is_set():
        log.error("exiting with status %d for the supervisor to restart the process", status)
        return status
    log.info("shutting down%s", ": draining the runner" if runner is not None else "")
    return None


async def run_worker(settings: Settings, *, make_renderer: RendererFromSettings | None = None) -> int:
    """`python -m bot worker`: render from the shared database with no Discord connection until SIGTERM/SIGINT
    (0) or until the runner asks for a restart (its exit status); the running jobs are drained back first.

    Results are left "done, undelivered" in the database; the front-end (`python -m bot`) posts them."""
    stop = asyncio.Event()
    _on_signals(stop)
    _torch_threads(settings)
    build = make_renderer or engine_renderer
    settings.bot_data_dir.mkdir(parents=True, exist_ok=True)
    slot = hold_worker_slot(settings.bot_data_dir)  # held until the process ends
    config = service_config(settings, worker_id=slot.worker_id)
    assert config.runner is not None  # load_settings(worker=True) refused ENGINE_DEVICE=none
    _log_start("worker", settings, config)
    async with open_queue(config.store_url, config.data_dir, config.queue) as queue:
        runner = JobRunner(
            queue, lambda device: build(device, settings), config.queue.devices, config.data_dir, config.runner
        )
        beat = WorkerBeat(queue.store, runner.worker_id, runner.devices, lease_s=runner.lease_s)
        metrics = worker_metrics(queue, runner, config)
        try:
            if metrics is not None:
                await metrics.start()  # before the renderers load: /healthz says 503 until the devices run
            await runner.start()
            await beat.start()
            waiters = [asyncio.create_task(w.wait()) for w in (stop, runner.exit_requested)]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            status = _exit_status(runner)
        finally:
            await runner.drain()
            await beat.stop()
            await queue.flush_events(limit_s=5.0)
            if metrics is not None:
                await metrics.stop()
    return status or 0


def worker_metrics(queue: JobQueue, runner: JobRunner, config: ServiceConfig) -> MetricsServer | None:
    """A worker's `/metrics` and `/healthz` with BOT_METRICS_PORT (None without): its jobs' metrics, and its
    devices' health (it has no gateway)."""
    if config.metrics is None:
        return None
    metrics = BotMetrics(
        queue.store,
        config.data_dir,
        lambda: Health(gateway=None, devices=runner.device_health()),
        lease_s=config.queue.lease_s,
    )
    queue.subscribe(metrics)
    return MetricsServer(metrics, config.metrics)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Run the Discord render bot.")
    parser.add_argument(
        "--sync", action="store_true", help="sync global slash commands even if they did not change since the last sync"
    )
    commands = parser.add_subparsers(dest="command", metavar="{worker,migrate-db}")
    commands.add_parser("worker", help="a render worker on the shared database (BOT_DATABASE_URL), without Discord")
    migrate_db.add_arguments(
        commands.add_parser(migrate_db.COMMAND, help="copy a single-host installation (SQLite) into PostgreSQL")
    )
    return parser.parse_args(argv)


def main(make_renderer: RendererFromSettings | None = None) -> None:
    """`python -m bot [worker | migrate-db ...]`; `make_renderer` replaces the engine's renderer (the tests hold renders with it)."""
    args = parse_args()
    if args.command == migrate_db.COMMAND:  # no Discord, no settings: the operator's one-off copy
        sys.exit(migrate_db.run(args))
    worker = args.command == "worker"
    settings = load_settings(worker=worker)
    setup_logging(settings.bot_log_level, secrets=settings.secrets(), fmt=settings.bot_log_format)
    try:
        if worker:
            status = asyncio.run(run_worker(settings, make_renderer=make_renderer))
        else:
            status = asyncio.run(run(settings, force_sync=args.sync, make_renderer=make_renderer))
    except Exception as e:
        import discord

        if isinstance(e, discord.LoginFailure):
            sys.exit("DISCORD_TOKEN: Discord refused the token (LoginFailure)")
        raise
    if status == EXIT_STUCK_THREAD:  # a render thread that will not stop would block the interpreter's exit
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    main()
