"""Suite-wide settings: no network for models; the render-speed switch (tests.support.speed) when it is set."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import postgres, speed

os.environ.setdefault("HF_HUB_OFFLINE", "1")
speed.install()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh migrated database for this session (dropped at its end); skips or fails when there is no server."""
    try:
        name = postgres.run_sync(postgres.migrated_database())
    except Exception as e:  # refused, timed out, no such role, asyncpg missing: any of them means no server to test on
        postgres.unavailable(f"{type(e).__name__}: {e}")
    try:
        yield postgres.database_url(name)
    finally:
        postgres.run_sync(postgres.drop_database(name))
