"""Opening stores of one backend on one database from a test, all closed when the test ends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from storage.postgres.store import PostgresJobStore
from storage.records import QueueState
from storage.sqlite.store import SqliteJobStore
from storage.store import JobStore

Opener = Callable[[float], Awaitable[JobStore]]
DAY_S = 24 * 3600.0


class Stores:
    """`await stores.open()` gives another store (another connection or pool) on the test's database."""

    def __init__(self, backend: str, opener: Opener) -> None:
        self.backend = backend  # "sqlite" or "postgres"
        self._opener = opener
        self._opened: list[JobStore] = []

    async def open(self, *, usage_window_s: float = DAY_S) -> JobStore:
        store = await self._opener(usage_window_s)
        self._opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in reversed(self._opened):
            await store.close()
        self._opened.clear()


def sqlite_stores(path: Path) -> Stores:
    async def opener(window: float) -> JobStore:
        return await SqliteJobStore.open(path, usage_window_s=window)

    return Stores("sqlite", opener)


def postgres_stores(url: str) -> Stores:
    async def opener(window: float) -> JobStore:
        return await PostgresJobStore.open(url, usage_window_s=window)

    return Stores("postgres", opener)


def oldest(state: QueueState) -> int | None:
    """A chooser: the first queued job (arrival order)."""
    return state.queued[0].id if state.queued else None


async def drain(store: JobStore, me: str, *, now: float = 1.0) -> list[int]:
    """Claim jobs as runner `me` until none is left; the ids claimed, in order."""
    got = []
    while (claim := await store.claim_next(me, lease_s=60, now=now, choose=oldest)) is not None:
        got.append(claim.job.id)
    return got
