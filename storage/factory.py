"""`open_store`: the job store a URL names. The composition root calls it; nothing else builds a store."""

from __future__ import annotations

from pathlib import Path

from storage.sqlite.store import SqliteJobStore
from storage.store import JobStore

USAGE_WINDOW_S = 24 * 3600.0  # how far back fair share counts a member's GPU time


async def open_store(url: str | Path, *, usage_window_s: float = USAGE_WINDOW_S) -> JobStore:
    """Open (creating and migrating as needed) the store at `url`: `sqlite:///path/jobs.sqlite3` or a plain path.

    Another backend is one more scheme in `sqlite_path`'s place; the callers only ever see `JobStore`.
    """
    return await SqliteJobStore.open(sqlite_path(url), usage_window_s=usage_window_s)


def sqlite_path(url: str | Path) -> str | Path:
    """The database file a `sqlite:///` URL or a plain path names; ValueError for any other scheme."""
    if isinstance(url, Path):
        return url
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///")
    if "://" in url:
        raise ValueError(f"no job store for {url.split('://', 1)[0]!r} URLs (known: sqlite:///PATH or a plain path)")
    return url
