"""A scale-out deployment for the process tests: a Discord front-end (`python -m bot`, ENGINE_DEVICE=none) and
render workers (`python -m bot worker`) on one fresh PostgreSQL database, against the fake Discord.

Each process has its own folder (its BOT_DATA_DIR and its gate). Used by tests/bot/test_scale_out*.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from storage.factory import open_store
from storage.records import JobRecord
from tests.support import postgres
from tests.support.bot_harness import reply_with
from tests.support.bot_process import BotProcess, WorkerProcess
from tests.support.fake_discord import FakeDiscord

PASSWORD = "hunter22-not-logged"  # the local server trusts its clients and never asks for it; the logs must not show it
LEASE_S = "4"  # short, so a killed worker's job is taken over soon; heartbeats come every third of it
POLL_FOR_DUPLICATES_S = 7.0  # a few of the front-end's result polls: a second post would show by then


def fresh_database() -> Iterator[str]:
    """A migrated database of its own (its URL with `PASSWORD`), dropped afterwards; skips without a server."""
    try:
        name = postgres.run_sync(postgres.migrated_database())
    except Exception as e:  # no server, no role, asyncpg missing: nothing to test on
        postgres.unavailable(f"{type(e).__name__}: {e}")
    try:
        yield with_password(postgres.database_url(name))
    finally:
        postgres.run_sync(postgres.drop_database(name))


def with_password(url: str) -> str:
    """`url` with `PASSWORD` when it has none (a server that checks passwords comes with its own)."""
    parts = urlsplit(url)
    if parts.password is not None or parts.username is None:
        return url
    netloc = f"{parts.username}:{PASSWORD}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Cluster:
    """The front-end and the workers (`w1`, `w2` by default), each in its own folder; `env` goes to all of them."""

    def __init__(
        self, fake: FakeDiscord, root: Path, url: str, *, workers: tuple[str, ...] = ("w1", "w2"), **env: str
    ) -> None:
        shared = {"BOT_DATABASE_URL": url, "BOT_LEASE_SECONDS": LEASE_S, **env}
        self.front = BotProcess(fake, root / "front" / "data", root / "front.log", ENGINE_DEVICE="none", **shared)
        self.workers = {
            name: WorkerProcess(fake, root / name / "data", root / f"{name}.log", BOT_WORKER_ID=name, **shared)
            for name in workers
        }
        for process in (self.front, *self.workers.values()):
            process.data_dir.mkdir(parents=True, exist_ok=True)
        self.url = url

    async def stop(self) -> None:
        for process in (self.front, *self.workers.values()):
            process.gate.release()
            await process.kill()

    async def jobs(self, ids: list[int]) -> list[JobRecord]:
        store = await open_store(self.url)
        try:
            return list(await store.many(ids))
        finally:
            await store.close()


def job_id_in(ack: str) -> int:
    match = re.search(r"#(\d+)", ack)
    assert match, ack
    return int(match.group(1))


async def submit(fake: FakeDiscord, user_id: int, prompt: str, iterations: int = 8) -> int:
    sent = await fake.slash("imagine", user_id=user_id, prompt=prompt, iterations=iterations)
    return job_id_in(await reply_with(fake, sent, "accepted", within=60.0))


def results_of(fake: FakeDiscord, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    return {job_id: fake.results(job_id) for job_id in ids}
