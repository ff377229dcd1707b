"""`PostgresJobFiles`: a job's files as bytea chunks in `job_files`, so workers on other hosts share them."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from storage.file_chunks import PartFile, check_file_key, read_chunks
from storage.postgres.db import connection, transaction
from storage.records import StoredFile

_KEY = "job_id = $1 AND role = $2 AND name = $3"


class PostgresJobFiles:
    """`storage.store.JobFileStore` on the store's pool. Each put is one transaction; a fetch reads through a
    cursor one chunk at a time, in one snapshot (a put committing meanwhile is not seen half-way)."""

    shares_files = True  # workers on other hosts see only the database

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def put_file(self, job_id: int, role: str, name: str, source: Path) -> int:
        check_file_key(role, name)
        size = 0
        async with transaction(self._pool) as conn:
            await conn.execute(f"DELETE FROM job_files WHERE {_KEY}", job_id, role, name)
            async for index, data in read_chunks(Path(source)):
                await conn.execute(
                    "INSERT INTO job_files (job_id, role, name, chunk, data) VALUES ($1, $2, $3, $4, $5)",
                    job_id,
                    role,
                    name,
                    index,
                    data,
                )
                size += len(data)
        return size

    async def fetch_file(self, job_id: int, role: str, name: str, target: Path) -> bool:
        check_file_key(role, name)
        async with transaction(self._pool) as conn, PartFile(Path(target)) as part:  # a cursor needs a transaction
            found = False
            query = f"SELECT data FROM job_files WHERE {_KEY} ORDER BY chunk"
            async for row in conn.cursor(query, job_id, role, name, prefetch=1):
                found = True
                await part.write(bytes(row[0]))
            if found:
                await part.commit()
            return found

    async def list_files(self, job_id: int, role: str) -> list[StoredFile]:
        async with connection(self._pool) as conn:
            rows = await conn.fetch(
                "SELECT name, SUM(length(data)) FROM job_files WHERE job_id = $1 AND role = $2 "
                "GROUP BY name ORDER BY name",
                job_id,
                role,
            )
        return [StoredFile(name=str(r[0]), size=int(r[1])) for r in rows]

    async def delete_files(self, job_id: int, role: str) -> int:
        async with transaction(self._pool) as conn:
            count = await conn.fetchval(
                "WITH gone AS (DELETE FROM job_files WHERE job_id = $1 AND role = $2 RETURNING name) "
                "SELECT COUNT(DISTINCT name) FROM gone",
                job_id,
                role,
            )
        return int(count)
