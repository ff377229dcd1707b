"""Copying a single-host SQLite installation into a PostgreSQL database (`python -m bot migrate-db`).

What moves: every job row (every column, ids kept; the identity sequence is moved past the highest id the
source ever gave out), the measured speeds, the per-server settings, and each job's files, which the
caller names (`FilePlanner`: the bot knows where its data directory keeps them and under which names the
shared-files code looks for them). Workers' rows and live progress are not copied: they describe
processes of the old installation.

Rules (docs/architecture.md, "Moving to PostgreSQL"):

- the source is opened read-only and never written;
- the target must hold no job; `resume=True` continues an interrupted copy instead: every job in the target
  must then be one of the source's ids, and those jobs are skipped (each job's files are stored before its
  row commits, so a job row in the target means its files are there too);
- a job the source shows running (the bot was stopped without handing it back) is copied as queued with its
  checkpoint, lease cleared, so the new deployment resumes it; one whose cancel was requested meanwhile is
  copied as cancelled instead, as its runner would have recorded it;
- a file that is not on disk is listed in the report, not fatal: the job is copied without it.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

from storage.postgres.store import PostgresJobStore
from storage.records import JobRecord
from storage.sqlite.migrations import LATEST
from storage.sqlite.rows import RECORD_COLUMNS, job_record

SIDE_TABLES = {"speeds": ("key",), "guild_settings": ("guild_id", "name")}  # table -> its primary key
_RECORD_COLUMNS = tuple(c.strip() for c in RECORD_COLUMNS.split(","))


class MigrationRefused(Exception):
    """The copy was not started (or stopped before writing more): the message says why, in one line."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FileToCopy:
    """One of a job's files to store in the target: its key in `job_files` and where it is on this host."""

    role: str
    name: str
    path: Path


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FilePlan:
    """A job's files to copy, and the ones it should have that are not on disk (described for the operator)."""

    files: tuple[FileToCopy, ...] = ()
    missing: tuple[str, ...] = ()


FilePlanner = Callable[[JobRecord], FilePlan]  # a job as it will be in the target -> its files


@dataclasses.dataclass(slots=True, kw_only=True)
class MigrationReport:
    """What a copy did, for the summary."""

    jobs_by_state: Counter[str] = dataclasses.field(default_factory=Counter)  # copied now, by their target state
    skipped: int = 0  # already in the target (resume)
    requeued: list[tuple[int, int | None]] = dataclasses.field(default_factory=list)  # (id, checkpoint step)
    cancelled: list[int] = dataclasses.field(default_factory=list)  # running with a cancel request
    live_leases: list[int] = dataclasses.field(default_factory=list)  # running under a lease not yet expired
    files: int = 0
    bytes: int = 0
    missing: list[str] = dataclasses.field(default_factory=list)
    side_rows: dict[str, int] = dataclasses.field(default_factory=dict)  # table -> rows copied
    next_id: int = 1  # the id the target's next new job gets (at least)


def open_source(path: Path) -> sqlite3.Connection:
    """The SQLite file at `path`, read-only, at this program's schema version; MigrationRefused otherwise."""
    if not path.is_file():
        raise MigrationRefused(f"no SQLite database at {path}")
    conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as e:
        conn.close()
        raise MigrationRefused(f"{path} is not a readable SQLite database: {e}") from e
    if version != LATEST:
        conn.close()
        raise MigrationRefused(
            f"{path} is at schema version {version}, this program copies version {LATEST}: "
            "start this version of the bot on it once (it migrates at start), stop it, then copy"
        )
    return conn


async def migrate_database(
    source: Path, target_url: str, plan_files: FilePlanner, *, resume: bool = False, now: float | None = None
) -> MigrationReport:
    """Copy the SQLite database at `source` into the PostgreSQL database at `target_url` (migrated first)."""
    now = time.time() if now is None else now
    src = open_source(source)
    try:
        store = await PostgresJobStore.open(target_url, pool_size=2)
        try:
            conn = await asyncpg.connect(target_url)
            try:
                return await _copy(src, conn, store, plan_files, resume=resume, now=now)
            finally:
                await conn.close()
        finally:
            await store.close()
    finally:
        src.close()


async def _copy(
    src: sqlite3.Connection,
    conn: asyncpg.Connection,
    store: PostgresJobStore,
    plan_files: FilePlanner,
    *,
    resume: bool,
    now: float,
) -> MigrationReport:
    report = MigrationReport()
    source_ids = [int(r[0]) for r in src.execute("SELECT id FROM jobs ORDER BY id")]
    present = {int(r[0]) for r in await conn.fetch("SELECT id FROM jobs")}
    check_target(present, set(source_ids), resume=resume)
    types = await _column_types(conn)
    for table, key in SIDE_TABLES.items():
        report.side_rows[table] = await _copy_side_table(src, conn, table, key, types[table])
    for job_id in source_ids:
        if job_id in present:
            report.skipped += 1
            continue
        row = dict(src.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
        row = handed_over(row, now=now, report=report)
        record = job_record(None, tuple(row[c] for c in _RECORD_COLUMNS))
        plan = plan_files(record)
        report.missing.extend(plan.missing)
        for file in plan.files:
            try:
                report.bytes += await store.files.put_file(job_id, file.role, file.name, file.path)
                report.files += 1
            except FileNotFoundError:
                report.missing.append(f"job #{job_id}: {file.role} {file.name} ({file.path}) vanished while copying")
        await _insert(conn, "jobs", row, types["jobs"])  # after its files: a job in the target has them all
        report.jobs_by_state[str(row["state"])] += 1
    report.next_id = await _move_sequence(conn, src)
    return report


def check_target(present: set[int], source_ids: set[int], *, resume: bool) -> None:
    """MigrationRefused unless the target may be written: empty, or (resuming) holding only source ids."""
    if not present:
        return
    if not resume:
        raise MigrationRefused(
            f"the target database already holds {len(present)} job{'s' if len(present) != 1 else ''}: "
            "migrate-db copies only into a database without jobs (--resume continues an interrupted copy)"
        )
    foreign = sorted(present - source_ids)
    if foreign:
        shown = ", ".join(f"#{i}" for i in foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise MigrationRefused(
            f"cannot resume: the target holds {len(foreign)} job{'s' if len(foreign) != 1 else ''} that the source "
            f"does not ({shown}), so it is not an interrupted copy of this database"
        )


def handed_over(row: dict[str, Any], *, now: float, report: MigrationReport) -> dict[str, Any]:
    """A source job row as the target gets it: a running job leaves its lease behind and waits to be resumed
    from its checkpoint (or, when its cancel was requested, ends cancelled); every other row is unchanged."""
    if row["state"] != "running":
        return row
    if row["lease_until"] is not None and float(row["lease_until"]) > now:
        report.live_leases.append(int(row["id"]))
    cleared = {"lease_owner": None, "lease_until": None, "run_started_at": None, "heartbeat_at": None}
    if row["cancel_requested"]:
        report.cancelled.append(int(row["id"]))
        return {**row, **cleared, "state": "cancelled", "finished_at": now}
    report.requeued.append((int(row["id"]), row["checkpoint_step"]))
    return {**row, **cleared, "state": "queued"}


async def _column_types(conn: asyncpg.Connection) -> dict[str, dict[str, str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ANY($1::text[])",
        ["jobs", *SIDE_TABLES],
    )
    types: dict[str, dict[str, str]] = {}
    for r in rows:
        types.setdefault(str(r[0]), {})[str(r[1])] = str(r[2])
    return types


def _value(value: Any, data_type: str) -> Any:
    """A SQLite value as the PostgreSQL column takes it (SQLite keeps booleans as integers, and a REAL
    column may hold an integer)."""
    if value is None:
        return None
    if data_type == "boolean":
        return bool(value)
    if data_type == "double precision":
        return float(value)
    if data_type in ("bigint", "integer"):
        return int(value)
    if data_type == "bytea":
        return bytes(value)
    return value


def _insert_sql(table: str, columns: Sequence[str], conflict: str = "") -> str:
    places = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({places}){conflict}"


async def _insert(conn: asyncpg.Connection, table: str, row: dict[str, Any], types: dict[str, str]) -> None:
    unknown = sorted(set(row) - set(types))
    if unknown:
        raise MigrationRefused(f"the target's {table} table has no column {', '.join(unknown)}")
    columns = list(row)
    await conn.execute(_insert_sql(table, columns), *(_value(row[c], types[c]) for c in columns))


async def _copy_side_table(
    src: sqlite3.Connection, conn: asyncpg.Connection, table: str, key: Sequence[str], types: dict[str, str]
) -> int:
    """Copy every row of `table`, a source row replacing the target's of the same key (a resumed copy)."""
    rows = [dict(r) for r in src.execute(f"SELECT * FROM {table}")]
    if not rows:
        return 0
    columns = list(rows[0])
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
    sql = _insert_sql(table, columns, f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")
    async with conn.transaction():
        await conn.executemany(sql, [tuple(_value(r[c], types[c]) for c in columns) for r in rows])
    return len(rows)


async def _move_sequence(conn: asyncpg.Connection, src: sqlite3.Connection) -> int:
    """Move the target's id sequence past every id the source gave out (AUTOINCREMENT never reuses one, not even
    a deleted job's) and past the target's own; the next id the target hands out."""
    try:
        given = src.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
    except sqlite3.OperationalError:  # no AUTOINCREMENT table ever had a row
        given = None
    highest_row = int(src.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()[0])
    source_max = max(int(given[0]) if given else 0, highest_row)
    target_max = int(await conn.fetchval("SELECT COALESCE(MAX(id), 0) FROM jobs"))
    highest = max(source_max, target_max)
    if highest > 0:
        await conn.execute("SELECT setval(pg_get_serial_sequence('jobs', 'id'), $1, true)", highest)
    return highest + 1
