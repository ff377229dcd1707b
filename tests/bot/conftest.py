"""Fixtures: a fake Discord on 127.0.0.1 (the bot harness itself is tests.support.bot_harness)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, fresh_database
from tests.support.fake_discord import FakeDiscord


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tests that run the real engine use one torch thread: the two cores are shared by everyone."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cluster_database() -> Iterator[str]:
    """A fresh PostgreSQL database for a front-end and its workers (skips or fails without a server)."""
    yield from fresh_database()


@pytest.fixture
async def cluster(fake: FakeDiscord, tmp_path: Path, cluster_database: str) -> AsyncIterator[Cluster]:
    """A front-end and two workers on `cluster_database`, not started; stopped after the test."""
    made = Cluster(fake, tmp_path, cluster_database)
    try:
        yield made
    finally:
        await made.stop()
