"""A job's files in the database (`JobStore.files`), run on SQLite and on PostgreSQL: a round trip byte-exact,
chunks of at most 1 MiB streamed (never the whole file in memory), list and delete by role, and a put
that fails midway leaves nothing (or the version stored before)."""

from __future__ import annotations

import errno
import os
import sqlite3
import tracemalloc
from pathlib import Path

import asyncpg
import pytest

from storage import file_chunks
from storage.file_chunks import CHUNK_BYTES
from storage.records import StoredFile
from storage.store import DiskFull, JobStore


def _write(path: Path, size: int, seed: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(4096) if seed else b""
    with open(path, "wb") as f:
        whole, rest = divmod(size, len(block) or 1)
        for _ in range(whole):
            f.write(block)
        f.write(block[:rest])
    return path


async def _chunk_sizes(target: Path | str, job_id: int) -> list[int]:
    """Each stored chunk's size, read from the table itself."""
    sql = "SELECT length(data) FROM job_files WHERE job_id = {} ORDER BY role, name, chunk"
    if isinstance(target, Path):
        with sqlite3.connect(target) as conn:
            return [int(r[0]) for r in conn.execute(sql.format("?"), (job_id,))]
    conn = await asyncpg.connect(target)
    try:
        return [int(r[0]) for r in await conn.fetch(sql.format("$1"), job_id)]
    finally:
        await conn.close()


def test_only_postgres_shares_files(store: JobStore, store_target: Path | str) -> None:
    assert store.files.shares_files is (not isinstance(store_target, Path))


async def test_a_multi_chunk_file_round_trips_byte_exact(
    store: JobStore, store_target: Path | str, tmp_path: Path
) -> None:
    source = _write(tmp_path / "in.mp4", 3 * CHUNK_BYTES + 12345)
    assert await store.files.put_file(7, "result", "job-7.mp4", source) == source.stat().st_size
    target = tmp_path / "elsewhere" / "deep" / "job-7.mp4"
    assert await store.files.fetch_file(7, "result", "job-7.mp4", target)
    assert target.read_bytes() == source.read_bytes()
    assert await _chunk_sizes(store_target, 7) == [CHUNK_BYTES] * 3 + [12345]
    assert [p.name for p in target.parent.iterdir()] == ["job-7.mp4"]  # no part file left beside it


async def test_an_empty_file_is_stored_and_fetched(store: JobStore, tmp_path: Path) -> None:
    source = _write(tmp_path / "empty.png", 0)
    await store.files.put_file(1, "input", "empty.png", source)
    assert await store.files.list_files(1, "input") == [StoredFile(name="empty.png", size=0)]
    assert await store.files.fetch_file(1, "input", "empty.png", tmp_path / "out.png")
    assert (tmp_path / "out.png").read_bytes() == b""


async def test_fetching_what_is_not_stored_writes_nothing(store: JobStore, tmp_path: Path) -> None:
    assert not await store.files.fetch_file(1, "input", "nothing.png", tmp_path / "x" / "nothing.png")
    assert not (tmp_path / "x").exists() or list((tmp_path / "x").iterdir()) == []


async def test_list_and_delete_by_role(store: JobStore, tmp_path: Path) -> None:
    small = _write(tmp_path / "a.png", 10)
    big = _write(tmp_path / "b.mp4", CHUNK_BYTES + 1)
    await store.files.put_file(1, "input", "init_image.png", small)
    await store.files.put_file(1, "input", "video.mp4", big)
    await store.files.put_file(1, "result", "job-1.mp4", big)
    await store.files.put_file(2, "input", "init_image.png", small)
    assert await store.files.list_files(1, "input") == [
        StoredFile(name="init_image.png", size=10),
        StoredFile(name="video.mp4", size=CHUNK_BYTES + 1),
    ]
    assert await store.files.delete_files(1, "input") == 2
    assert await store.files.list_files(1, "input") == []
    assert await store.files.list_files(1, "result") == [StoredFile(name="job-1.mp4", size=CHUNK_BYTES + 1)]
    assert await store.files.list_files(2, "input") == [StoredFile(name="init_image.png", size=10)]
    assert await store.files.delete_files(1, "input") == 0


async def test_a_second_put_replaces_the_first(store: JobStore, tmp_path: Path) -> None:
    await store.files.put_file(1, "result", "r.mp4", _write(tmp_path / "long", 2 * CHUNK_BYTES + 5))
    short = _write(tmp_path / "short", 100)
    await store.files.put_file(1, "result", "r.mp4", short)
    assert await store.files.fetch_file(1, "result", "r.mp4", tmp_path / "got")
    assert (tmp_path / "got").read_bytes() == short.read_bytes()


async def test_a_put_that_fails_midway_leaves_nothing_or_the_old_version(
    store: JobStore, store_target: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _write(tmp_path / "in.mp4", 4 * CHUNK_BYTES)
    old = _write(tmp_path / "old.mp4", 77)
    await store.files.put_file(2, "result", "r.mp4", old)
    reads = 0
    real = file_chunks.read_chunk

    def failing(file: object, size: int) -> bytes:
        nonlocal reads
        reads += 1
        if reads == 3:
            raise OSError(errno.EIO, "the source went away")
        return real(file, size)  # type: ignore[arg-type]

    monkeypatch.setattr(file_chunks, "read_chunk", failing)
    with pytest.raises(OSError, match="went away"):
        await store.files.put_file(1, "result", "r.mp4", source)
    reads = 0
    with pytest.raises(OSError, match="went away"):
        await store.files.put_file(2, "result", "r.mp4", source)
    monkeypatch.undo()
    assert await store.files.list_files(1, "result") == []
    assert await _chunk_sizes(store_target, 1) == []
    assert await store.files.list_files(2, "result") == [StoredFile(name="r.mp4", size=77)]
    await store.files.put_file(1, "result", "r.mp4", source)  # the store is usable afterwards
    assert await store.files.list_files(1, "result") == [StoredFile(name="r.mp4", size=4 * CHUNK_BYTES)]


async def test_a_full_local_disk_while_fetching_is_disk_full_and_leaves_no_part_file(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.files.put_file(1, "result", "r.mp4", _write(tmp_path / "in", 2 * CHUNK_BYTES))
    folder = tmp_path / "cache"
    folder.mkdir()
    real_open = file_chunks.open_part

    def full(part: Path) -> object:
        file = real_open(part)

        def write(data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        file.write = write  # type: ignore[method-assign]
        return file

    monkeypatch.setattr(file_chunks, "open_part", full)
    with pytest.raises(DiskFull):
        await store.files.fetch_file(1, "result", "r.mp4", folder / "r.mp4")
    assert list(folder.iterdir()) == []


async def test_a_large_file_is_streamed_a_chunk_at_a_time(store: JobStore, tmp_path: Path) -> None:
    size = 24 * CHUNK_BYTES
    source = _write(tmp_path / "big.mp4", size)
    target = tmp_path / "got.mp4"
    tracemalloc.start()
    try:
        await store.files.put_file(1, "result", "big.mp4", source)
        assert await store.files.fetch_file(1, "result", "big.mp4", target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * CHUNK_BYTES  # a few chunks in flight, never the 24 MiB file
    assert target.stat().st_size == size
    assert target.read_bytes() == source.read_bytes()


@pytest.mark.parametrize(
    ("role", "name"), [("inputs", "a.png"), ("input", "../a.png"), ("input", "a/b"), ("input", "")]
)
async def test_a_bad_role_or_name_is_refused(store: JobStore, tmp_path: Path, role: str, name: str) -> None:
    with pytest.raises(ValueError, match=r"role|file name"):
        await store.files.put_file(1, role, name, _write(tmp_path / "x", 1))
