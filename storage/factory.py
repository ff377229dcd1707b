"""`open_store`: the job store a URL names. The composition root calls it; nothing else builds a store."""

from __future__ import annotations

from pathlib import Path

from storage.postgres.store import PostgresJobStore
from storage.sqlite.store import SqliteJobStore
from storage.store import JobStore

USAGE_WINDOW_S = 24 * 3600.0  # how far back fair share counts a member's GPU time
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


async def open_store(url: str | Path, *, usage_window_s: float = USAGE_WINDOW_S) -> JobStore:
    """Open (creating and migrating as needed) the store at `url`.

    `postgresql://` or `postgres://` URLs open the PostgreSQL store (a queue several processes share);
    `sqlite:///path/jobs.sqlite3` or a plain path open the SQLite file. The callers only ever see `JobStore`.
    """
    if is_postgres_url(url):
        return await PostgresJobStore.open(str(url), usage_window_s=usage_window_s)
    return await SqliteJobStore.open(sqlite_path(url), usage_window_s=usage_window_s)


def is_postgres_url(url: str | Path) -> bool:
    return isinstance(url, str) and url.startswith(POSTGRES_SCHEMES)


def sqlite_path(url: str | Path) -> str | Path:
    """The database file a `sqlite:///` URL or a plain path names; ValueError for any other scheme."""
    if isinstance(url, Path):
        return url
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///")
    if "://" in url:
        raise ValueError(
            f"no job store for {url.split('://', 1)[0]!r} URLs (known: postgresql://..., sqlite:///PATH or a plain path)"
        )
    return url
