"""`Fleet`: the devices the ETAs divide the queue among, and how fresh the measured speeds must be.

On one host these are the runner's own devices. With workers on a shared database the render devices
are theirs, whichever process asks: the live workers' devices (heartbeat within `ALIVE_LEASES`
leases), read at most every `refresh_s`, and the speeds every worker records are read again as often.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.queue.worker_beat import alive
from storage.store import JobStore


class Fleet:
    def __init__(
        self,
        store: JobStore,
        own: tuple[str, ...],
        *,
        shared: bool,
        lease_s: float = 30.0,
        refresh_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.own, self.shared = store, own, shared
        self.lease_s, self.refresh_s, self._clock = lease_s, refresh_s, clock
        self._devices = own
        self._read_at: float | None = None

    def stale(self, read_at: float | None) -> bool:
        """Whether something read at `read_at` (None: never) should be read again."""
        return read_at is None or (self.shared and self._clock() - read_at >= self.refresh_s)

    async def devices(self) -> tuple[str, ...]:
        """One entry per device that renders (a name may repeat across hosts); this process's own when no
        worker is alive or the database is not shared."""
        if self.shared and self.stale(self._read_at):
            now = self._clock()
            live = alive(await self.store.workers(), now=now, lease_s=self.lease_s)
            self._devices = tuple(d for w in live for d in w.devices) or self.own
            self._read_at = now
        return self._devices
