"""`SqliteJobFiles`: a job's files as blob chunks in `job_files`, on the store's one connection.

The single-host bot does not use it (`shares_files` is False: its files stay in the data directory);
it is here so the SQLite store keeps the whole `JobStore` contract and the contract tests run on it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite

from storage.file_chunks import PartFile, check_file_key, read_chunks
from storage.records import StoredFile
from storage.sqlite.db import immediate

_KEY = "job_id = ? AND role = ? AND name = ?"


class SqliteJobFiles:
    """`storage.store.JobFileStore` sharing the store's connection and lock (aiosqlite runs one statement at a
    time; the lock keeps a put's transaction whole). A put holds the write lock until its last chunk. Not to
    be called from inside one of the store's own transactions (`create`'s `prepare`): the lock is not reentrant."""

    shares_files = False  # one host: the queue keeps files in its data directory

    def __init__(self, conn: aiosqlite.Connection, lock: asyncio.Lock) -> None:
        self._conn = conn
        self._lock = lock

    async def put_file(self, job_id: int, role: str, name: str, source: Path) -> int:
        check_file_key(role, name)
        size = 0
        async with self._lock, immediate(self._conn):
            await self._conn.execute(f"DELETE FROM job_files WHERE {_KEY}", (job_id, role, name))
            async for index, data in read_chunks(Path(source)):
                await self._conn.execute(
                    "INSERT INTO job_files (job_id, role, name, chunk, data) VALUES (?, ?, ?, ?, ?)",
                    (job_id, role, name, index, data),
                )
                size += len(data)
        return size

    async def fetch_file(self, job_id: int, role: str, name: str, target: Path) -> bool:
        """One SELECT stepped a row at a time: one snapshot, one chunk in memory."""
        check_file_key(role, name)
        async with self._lock, PartFile(Path(target)) as part:
            found = False
            sql = f"SELECT data FROM job_files WHERE {_KEY} ORDER BY chunk"
            async with self._conn.execute(sql, (job_id, role, name)) as cursor:
                while (row := await cursor.fetchone()) is not None:
                    found = True
                    await part.write(bytes(row[0]))
            if found:
                await part.commit()
            return found

    async def list_files(self, job_id: int, role: str) -> list[StoredFile]:
        async with self._lock:
            sql = "SELECT name, SUM(length(data)) FROM job_files WHERE job_id = ? AND role = ? GROUP BY name ORDER BY name"
            async with self._conn.execute(sql, (job_id, role)) as cursor:
                rows = await cursor.fetchall()
        return [StoredFile(name=str(r[0]), size=int(r[1])) for r in rows]

    async def delete_files(self, job_id: int, role: str) -> int:
        async with self._lock, immediate(self._conn):
            params = (job_id, role)
            async with self._conn.execute(
                "SELECT COUNT(DISTINCT name) FROM job_files WHERE job_id = ? AND role = ?", params
            ) as cursor:
                row = await cursor.fetchone()
            await self._conn.execute("DELETE FROM job_files WHERE job_id = ? AND role = ?", params)
        return int(row[0]) if row is not None else 0
