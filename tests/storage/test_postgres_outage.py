"""PostgreSQL going away under a running store: every call raises `StoreUnavailable` (never a raw asyncpg or socket
error) while it is away, and the same store works again once it is back, with no reopening: its pool connects
again at the next acquire. The outage is the test database's own (`postgres.cut_off`), so nothing else on the
server notices."""

from __future__ import annotations

import errno

import asyncpg
import pytest

from engine.jobs import JobSpec
from storage.postgres.db import is_connection_error
from storage.records import Owner, SubmitLimits
from storage.store import StoreUnavailable
from tests.support import postgres
from tests.support.stores import Stores

SPEC = JobSpec(text_prompts="a harbour", width=64, height=64, iterations=10, vqgan_model="tiny", clip_model="tiny")
NO_LIMITS = SubmitLimits(max_queued_per_member=None, max_queued_per_guild=None)


async def test_calls_while_the_database_is_away_raise_store_unavailable_and_the_pool_reconnects(
    postgres_url: str, pg_stores: Stores
) -> None:
    store = await pg_stores.open()
    job = await store.create(Owner(user_id=1, guild_id=2), SPEC, now=0.0, limits=NO_LIMITS)
    assert await postgres.cut_off(postgres_url) > 0
    try:
        calls = (
            store.workers,
            lambda: store.get(job.id),
            store.undelivered,
            lambda: store.cancel_queued(job.id, now=1.0),
        )
        for call in calls:
            with pytest.raises(StoreUnavailable, match="cannot be reached"):
                await call()
    finally:
        await postgres.reconnectable(postgres_url)
    assert (await store.get(job.id)).state == "queued"  # the cancel never happened
    again = await store.create(Owner(user_id=1, guild_id=2), SPEC, now=2.0, limits=NO_LIMITS)
    assert again.id > job.id


def test_connection_errors_are_told_from_query_and_file_errors() -> None:
    assert is_connection_error(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert is_connection_error(asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"))
    assert is_connection_error(asyncpg.exceptions.AdminShutdownError("terminating connection"))
    assert is_connection_error(asyncpg.exceptions.CannotConnectNowError("the database system is starting up"))
    assert not is_connection_error(FileNotFoundError(errno.ENOENT, "no such file"))
    assert not is_connection_error(OSError(errno.ENOSPC, "no space left on device"))
    assert not is_connection_error(asyncpg.exceptions.UniqueViolationError("duplicate key"))
