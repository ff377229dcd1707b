"""The numbers an operator scrapes (`BOT_METRICS_PORT`): Prometheus metrics in a registry of their own.

`BotMetrics` keeps them. It subscribes to the queue's events for what happens to a job (wait, render time,
device seconds, failures), reads the store once per scrape for what the database holds (jobs by state,
queue length per server) and the disk for the data directory's free space, and counts Discord's 429s
from discord.py's own log records. Each instance has its own `CollectorRegistry`, so a test can build
several; `bot.metrics_server` serves it. The names are listed in README.md, "Metrics".
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import shutil
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from bot.queue.api import ProgressUpdate
from bot.queue.worker_beat import alive, known
from engine.jobs import JobStatus
from storage.records import JobRecord
from storage.store import JobStore

log = logging.getLogger(__name__)

WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
RENDER_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
_ROUTE_WORD = re.compile(r"^[a-z@_-]+$")  # "channels", "messages", "@original"; ids and tokens are not
_API_PREFIX = re.compile(r"^/api/v\d+")

_installed: weakref.WeakSet[BotMetrics] = weakref.WeakSet()


def record_rate_limit(route: str) -> None:
    """Count a Discord call the bot itself puts off because discord.py raised `discord.RateLimited`.

    The delivery calls it (through `RATE_LIMITS.retried`) each time it schedules a retry after a rate limit;
    `route` names the call path there ("result", "status", "ack"), or a route such as
    "POST /channels/:id/messages" (`route_label` makes one from a URL). It counts
    `vqbot_discord_rate_limit_retries_total{route}` in every running `BotMetrics` (none when metrics are off).
    The 429s themselves are counted without any call, from discord.py's log (`vqbot_discord_rate_limits_total`).
    """
    for metrics in list(_installed):
        metrics.rate_limit_retries.labels(route=route).inc()


def route_label(method: str, url: str) -> str:
    """ "PATCH /channels/:id/messages/:id" for a request: ids and tokens (interaction tokens are in URLs) removed."""
    path = _API_PREFIX.sub("", re.sub(r"^[a-z]+://[^/]+", "", str(url)).split("?")[0])
    parts = [p if _ROUTE_WORD.match(p) else ":id" for p in path.split("/") if p]
    return f"{method.upper()} /{'/'.join(parts)}"


def failure_kind(error: str | None) -> str:
    """What kind of failure a failed job's message (the one its member reads) reports, for a label."""
    text = (error or "").lower()
    for kind, words in (
        ("internal", ("internal error",)),
        ("out_of_memory", ("out of memory", "does not fit")),
        ("attempts", ("attempts",)),
        ("stalled", ("stall", "stopped iterating", "no iteration")),
        ("disk", ("disk",)),
    ):
        if any(w in text for w in words):
            return kind
    return "refused_by_engine"  # InvalidJob: the engine said what to change


@dataclasses.dataclass(frozen=True, slots=True)
class Health:
    """What `/healthz` answers: the gateway is connected and every device's loop is alive. A render worker has no
    gateway (`gateway` None): it is healthy when its devices are."""

    gateway: bool | None
    devices: Mapping[str, bool]

    @property
    def ok(self) -> bool:
        return self.gateway is not False and all(self.devices.values())


HealthCheck = Callable[[], Health]


@dataclasses.dataclass(slots=True)
class _Snapshot:
    """What the last scrape read from the store and the disk."""

    counts: dict[tuple[str, int | None], int] = dataclasses.field(default_factory=dict)
    disk_free: float | None = None
    disk_total: float | None = None
    workers: tuple[tuple[str, str, bool], ...] = ()  # (worker id, host, alive) of those seen in the last day


class _RateLimitLog(logging.Handler):
    """Counts discord.py's "We are being rate limited" warnings: every 429 it met, waited out or raised."""

    def __init__(self, counter: Counter) -> None:
        super().__init__(logging.WARNING)
        self.counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        if not message.startswith("We are being rate limited.") or len(record.args or ()) < 2:
            return
        method, url = record.args[0], record.args[1]  # type: ignore[index]
        outcome = "raised" if "erroring instead" in message else "waited"
        self.counter.labels(route=route_label(str(method), str(url)), outcome=outcome).inc()


class BotMetrics:
    """Every metric of one bot; a `JobEvents` subscriber of its queue, and a collector of store and disk values."""

    def __init__(
        self, store: JobStore, data_dir: Path, health: HealthCheck | None = None, *, lease_s: float = 30.0
    ) -> None:
        self.store, self.data_dir, self.health, self.lease_s = store, Path(data_dir), health, lease_s
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.wait = Histogram(
            "vqbot_job_wait_seconds", "Time from submit to a job's first start", buckets=WAIT_BUCKETS, registry=r
        )
        self.render = Histogram(
            "vqbot_job_render_seconds",
            "Time of the attempt that ended a job (done, failed or cancelled), by job kind",
            ["kind"],
            buckets=RENDER_BUCKETS,
            registry=r,
        )
        self.device_seconds = Counter(
            "vqbot_gpu_seconds",
            "Seconds devices spent on jobs that ended, per device (cpu too)",
            ["device"],
            registry=r,
        )
        self.finished = Counter(
            "vqbot_jobs_finished", "Jobs that ended in this process, by state", ["state"], registry=r
        )
        self.failures = Counter("vqbot_job_failures", "Failed jobs by kind of failure", ["kind"], registry=r)
        self.rate_limits = Counter(
            "vqbot_discord_rate_limits",
            "Discord 429 answers: waited out by discord.py, or raised to the bot as RateLimited",
            ["route", "outcome"],
            registry=r,
        )
        self.rate_limit_retries = Counter(
            "vqbot_discord_rate_limit_retries",
            "Discord calls the bot put off for later after RateLimited",
            ["route"],
            registry=r,
        )
        r.register(self)
        self._started: dict[int, float] = {}  # job id -> monotonic time of its start in this process
        self._snapshot = _Snapshot()
        self._log_handler = _RateLimitLog(self.rate_limits)

    # -- lifecycle: the 429 hook and record_rate_limit reach this instance while it is installed --

    def install(self) -> None:
        _installed.add(self)
        logging.getLogger("discord.http").addHandler(self._log_handler)

    def uninstall(self) -> None:
        _installed.discard(self)
        logging.getLogger("discord.http").removeHandler(self._log_handler)

    # -- JobEvents ----------------------------------------------------------------------------

    def on_progress(self, update: ProgressUpdate) -> None:
        pass  # progress is for the status messages; nothing here counts steps

    async def on_started(self, job: JobRecord) -> None:
        self._started[job.id] = time.monotonic()
        if job.attempt <= 1 and job.started_at is not None:  # a resumed job waited once, at its first start
            self.wait.observe(max(0.0, job.started_at - job.created_at))

    async def on_finished(self, job: JobRecord) -> None:
        self.finished.labels(state=job.state.value).inc()
        if job.state is JobStatus.FAILED:
            self.failures.labels(kind=failure_kind(job.error)).inc()
        started = self._started.pop(job.id, None)
        if started is None:  # cancelled while queued, or started by another process
            return
        elapsed = time.monotonic() - started
        self.render.labels(kind=job.kind.value).observe(elapsed)
        self.device_seconds.labels(device=job.device or "unknown").inc(elapsed)

    # -- read at scrape time ------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the store's counts (one query) and the data directory's free space, for the next `collect`."""
        counts = await self.store.state_counts()
        try:
            usage = await asyncio.to_thread(shutil.disk_usage, self.data_dir)
            disk: tuple[float | None, float | None] = (float(usage.free), float(usage.total))
        except OSError as e:
            log.warning("metrics: cannot read the free space of %s: %s", self.data_dir, e)
            disk = (None, None)
        now = time.time()
        seen = known(await self.store.workers(), now=now)
        up = {w.worker_id for w in alive(seen, now=now, lease_s=self.lease_s)}
        self._snapshot = _Snapshot(counts, *disk, tuple((w.worker_id, w.host, w.worker_id in up) for w in seen))

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot
        jobs = GaugeMetricFamily("vqbot_jobs", "Jobs in the database by state", labels=["state"])
        for state in JobStatus:
            jobs.add_metric([state.value], sum(n for (s, _), n in snap.counts.items() if s == state.value))
        yield jobs
        queue = GaugeMetricFamily(
            "vqbot_queue_length", "Jobs waiting to start, per server (guild id; none: no server)", labels=["guild"]
        )
        for guild in sorted({g for _, g in snap.counts}, key=lambda g: -1 if g is None else g):
            queued = snap.counts.get((JobStatus.QUEUED.value, guild), 0)
            queue.add_metric(["none" if guild is None else str(guild)], queued)
        yield queue
        if snap.disk_free is not None and snap.disk_total is not None:
            yield GaugeMetricFamily("vqbot_disk_free_bytes", "Free space where BOT_DATA_DIR is", value=snap.disk_free)
            yield GaugeMetricFamily(
                "vqbot_disk_total_bytes", "Size of the file system of BOT_DATA_DIR", value=snap.disk_total
            )
        if snap.workers:
            workers = GaugeMetricFamily(
                "vqbot_worker_up",
                "1 while a render worker's heartbeat is recent (seen in the last day)",
                labels=["worker", "host"],
            )
            for worker_id, host, up in snap.workers:
                workers.add_metric([worker_id, host], float(up))
            yield workers
        if self.health is not None:
            health = self.health()
            if health.gateway is not None:  # a worker has none
                yield GaugeMetricFamily(
                    "vqbot_gateway_connected", "1 while the Discord gateway is connected", value=float(health.gateway)
                )
            alive = GaugeMetricFamily("vqbot_device_alive", "1 while the device's loop runs", labels=["device"])
            for device, ok in sorted(health.devices.items()):
                alive.add_metric([device], float(ok))
            yield alive
