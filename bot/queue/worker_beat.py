"""`WorkerBeat`: a render worker's row in the shared `workers` table, written at start and every third of a lease.

Several processes (on several hosts) may render from one database; their rows say who is alive (/queue
counts the workers that beat within `ALIVE_LEASES` leases) and on which host and devices each runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Sequence

from bot.queue.backoff import Backoff
from storage.records import WorkerRecord
from storage.store import JobStore

log = logging.getLogger(__name__)

ALIVE_LEASES = 3  # a worker whose last heartbeat is older than this many leases counts as gone


KNOWN_S = 24 * 3600.0  # a worker silent for a day is no longer counted as one that should be up


def known(workers: Sequence[WorkerRecord], *, now: float) -> list[WorkerRecord]:
    """The workers that beat within `KNOWN_S` (one retired long ago or renamed does not count as down)."""
    return [w for w in workers if now - w.heartbeat_at <= KNOWN_S]


def alive(workers: Sequence[WorkerRecord], *, now: float, lease_s: float) -> list[WorkerRecord]:
    """The workers that beat within `ALIVE_LEASES` leases of `now`."""
    return [w for w in workers if now - w.heartbeat_at <= ALIVE_LEASES * lease_s]


class WorkerBeat:
    """Upserts `worker_id`'s row in `store` at `start()` and every `lease_s / 3` until `stop()`."""

    def __init__(
        self,
        store: JobStore,
        worker_id: str,
        devices: Sequence[str],
        *,
        lease_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.clock, self.every_s = store, clock, lease_s / 3
        self.host = socket.gethostname()
        self.worker_id, self.devices = worker_id, tuple(devices)
        self.started_at = clock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The first beat (its failure is raised: a worker that cannot write its row should not start), then the loop."""
        await self.beat()
        self._task = asyncio.get_running_loop().create_task(self._every(), name=f"worker-beat-{self.worker_id}")

    async def beat(self) -> None:
        row = WorkerRecord(
            worker_id=self.worker_id,
            host=self.host,
            devices=self.devices,
            started_at=self.started_at,
            heartbeat_at=self.clock(),
        )
        await self.store.upsert_worker(row)

    async def _every(self) -> None:
        # the beat keeps its pace while it fails ("alive" has slack); the backoff only logs
        backoff = Backoff(f"worker {self.worker_id}: heartbeat", log, every_s=self.every_s, longest_s=self.every_s)
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.beat()
                backoff.succeeded()
            except Exception as e:  # a busy or restarting database: the next beat tries again
                backoff.failed(e)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
