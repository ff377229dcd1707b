"""The store fixtures: each contract test runs on SQLite and on PostgreSQL (ids "sqlite" and "postgres")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.store import JobStore
from tests.support import postgres
from tests.support.stores import Stores, postgres_stores, sqlite_stores


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where the test's stores live: a SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "jobs.sqlite3"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def stores(store_target: Path | str) -> AsyncIterator[Stores]:
    """Opens stores on the test's database; every test starts on empty tables."""
    if isinstance(store_target, Path):
        made = sqlite_stores(store_target)
    else:
        await postgres.empty(store_target)
        made = postgres_stores(store_target)
    yield made
    await made.close_all()


@pytest.fixture
async def store(stores: Stores) -> JobStore:
    return await stores.open()


@pytest.fixture
async def pg_stores(postgres_url: str) -> AsyncIterator[Stores]:
    """PostgreSQL only: stores (separate pools, as separate processes would have) on the session's emptied database."""
    await postgres.empty(postgres_url)
    made = postgres_stores(postgres_url)
    yield made
    await made.close_all()
