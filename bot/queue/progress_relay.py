"""`ProgressRelay`: live progress and cancels between processes that share only the database.

A worker renders where no Discord connection is; the front-end that owns the status messages may be
on another host. Every `every_s` the relay writes the latest progress of the jobs rendering in this
process to the store's progress board (the newest update per job only, so a fast render costs one
write a second), reads the board for the jobs rendering elsewhere and publishes what changed as if
it were local (a preview is fetched only when a new one was written), and asks the board which
local jobs a member cancelled, since the lease's heartbeat comes only every third of a lease.
Polling rather than LISTEN/NOTIFY keeps it the same on both backends and robust to reconnects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from bot.queue.api import ProgressUpdate
from bot.queue.backoff import Backoff
from bot.queue.events import EventHub
from storage.records import ProgressRecord
from storage.store import ProgressBoard

log = logging.getLogger(__name__)


class ProgressRelay:
    def __init__(
        self,
        board: ProgressBoard,
        hub: EventHub,
        *,
        every_s: float,
        cancel: Callable[[int], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.board, self.hub, self.every_s = board, hub, every_s
        self._cancel = cancel
        self._clock = clock
        self._pending: dict[int, ProgressUpdate] = {}
        self._seen: dict[int, tuple[int, int, int]] = {}  # remote job -> (step, frame, preview version)
        self._told: set[int] = set()  # local jobs whose cancel was passed on (logged once)

    def note(self, update: ProgressUpdate) -> None:
        """A local job's progress, to be written at the next round (a preview not yet written is kept)."""
        waiting = self._pending.get(update.job_id)
        if update.preview is None and waiting is not None and waiting.preview is not None:
            update = dataclasses.replace(update, preview=waiting.preview)
        self._pending[update.job_id] = update

    async def run(self) -> None:
        backoff = Backoff("relaying progress through the database", log, every_s=self.every_s, longest_s=10.0)
        while True:
            try:
                await self.round()
                wait = backoff.succeeded()
            except Exception as e:  # the database is away for a moment: the next round catches up
                wait = backoff.failed(e)
            await asyncio.sleep(wait)

    async def round(self) -> None:
        """One write, read and cancel check."""
        pending, self._pending = self._pending, {}
        for update in pending.values():
            if update.job_id in self.hub.local:
                await self.board.put(_record(update), now=self._clock())
        await self._read()
        self._told &= set(self.hub.local)
        if self.hub.local:
            for job_id in await self.board.cancel_requested(sorted(self.hub.local)):
                if job_id not in self._told:
                    log.info("job %s: cancel requested through the database; stopping it", job_id)
                    self._told.add(job_id)
                self._cancel(job_id)

    async def _read(self) -> None:
        rows = [r for r in await self.board.running() if r.job_id not in self.hub.local]
        for gone in set(self._seen) - {r.job_id for r in rows}:
            del self._seen[gone]
            self.hub.live.pop(gone, None)  # it ended elsewhere; its end comes with the delivery
        for row in rows:
            mark = (row.step, row.frame, row.preview_version)
            before = self._seen.get(row.job_id)
            if mark == before:
                continue
            self._seen[row.job_id] = mark
            new_preview = row.preview_version > 0 and (before is None or before[2] != row.preview_version)
            preview = await self.board.preview(row.job_id) if new_preview else None
            self.hub.progress(_update(row, preview))


def _record(u: ProgressUpdate) -> ProgressRecord:
    return ProgressRecord(
        job_id=u.job_id,
        step=u.step,
        steps=u.steps,
        iteration=u.iteration,
        total=u.total,
        frame=u.frame,
        frames=u.frames,
        loss=u.loss,
        eta_done_s=u.eta_done_s,
        preview=u.preview,
    )


def _update(r: ProgressRecord, preview: bytes | None) -> ProgressUpdate:
    return ProgressUpdate(
        job_id=r.job_id,
        step=r.step,
        steps=r.steps,
        iteration=r.iteration,
        total=r.total,
        frame=r.frame,
        frames=r.frames,
        loss=r.loss,
        preview=preview,
        eta_done_s=r.eta_done_s,
    )
