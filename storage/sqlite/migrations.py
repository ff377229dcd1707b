"""Forward-only schema migrations, versioned with `PRAGMA user_version`.

Each entry of `MIGRATIONS` takes the schema from version i to i+1 and runs in one transaction, so a
crash mid-migration leaves the previous version intact. Never edit a released entry: append one.
"""

from __future__ import annotations

import logging

import aiosqlite

log = logging.getLogger(__name__)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the jobs table
    (
        """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            user_id INTEGER NOT NULL,
            guild_id INTEGER,
            channel_id INTEGER,
            spec TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
            priority INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            step INTEGER NOT NULL DEFAULT 0,
            steps INTEGER NOT NULL DEFAULT 0,
            frame INTEGER NOT NULL DEFAULT 0,
            frames INTEGER NOT NULL DEFAULT 1,
            gpu_seconds REAL NOT NULL DEFAULT 0,
            result_paths TEXT NOT NULL DEFAULT '[]',
            partial INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            status_message_id INTEGER,
            result_message_id INTEGER,
            upload_limit INTEGER,
            seed INTEGER
        )
        """,
        "CREATE INDEX jobs_state ON jobs (state, id)",
        "CREATE INDEX jobs_user ON jobs (user_id, id)",
    ),
    # 2: leases with fencing, heartbeats, checkpoints, cancel requests across processes
    (
        "ALTER TABLE jobs ADD COLUMN lease_owner TEXT",
        "ALTER TABLE jobs ADD COLUMN lease_until REAL",
        "ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN heartbeat_at REAL",
        "ALTER TABLE jobs ADD COLUMN run_started_at REAL",
        "ALTER TABLE jobs ADD COLUMN device TEXT",
        "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN checkpoint BLOB",
        "ALTER TABLE jobs ADD COLUMN checkpoint_step INTEGER",
        "ALTER TABLE jobs ADD COLUMN checkpoint_frame INTEGER",
        "ALTER TABLE jobs ADD COLUMN checkpoint_at REAL",
        "CREATE INDEX jobs_finished ON jobs (finished_at)",
    ),
    # 3: measured speed, so ETAs are right after a restart
    (
        """
        CREATE TABLE speeds (
            key TEXT PRIMARY KEY,
            seconds_per_step REAL NOT NULL,
            samples INTEGER NOT NULL,
            updated_at REAL NOT NULL
        )
        """,
    ),
    # 4: every server its own space: per-server settings; at most one job per interaction (a unique key, so a
    # replayed or retried interaction finds its job instead of making another); server look-ups by index
    (
        """
        CREATE TABLE guild_settings (
            guild_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_at REAL NOT NULL,
            updated_by INTEGER,
            PRIMARY KEY (guild_id, name)
        )
        """,
        "ALTER TABLE jobs ADD COLUMN interaction_id INTEGER",
        "CREATE UNIQUE INDEX jobs_interaction ON jobs (interaction_id)",
        "CREATE INDEX jobs_guild ON jobs (guild_id, state, id)",
    ),
    # 5: months unattended: how often a render was cut short by a dead process (poison jobs stop after
    # BOT_MAX_ATTEMPTS), and when a result file was deleted by retention (so /job can say it expired)
    (
        "ALTER TABLE jobs ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN results_expired_at REAL",
    ),
    # 6: several hosts on one database: which worker rendered a job, the workers' heartbeats (who is
    # alive), and a job's files (inputs, results) as chunks, for hosts that share nothing else
    (
        "ALTER TABLE jobs ADD COLUMN worker_id TEXT",
        """
        CREATE TABLE workers (
            worker_id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            devices TEXT NOT NULL,
            started_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL
        )
        """,
        """
        CREATE TABLE job_files (
            job_id INTEGER NOT NULL,
            role TEXT NOT NULL,
            name TEXT NOT NULL,
            chunk INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (job_id, role, name, chunk)
        )
        """,
    ),
    # 7: live progress across processes: a worker's latest progress per running job, read by front-ends;
    # the row goes when its job stops running (finished, given back), so a stale write cannot outlive it
    (
        """
        CREATE TABLE job_progress (
            job_id INTEGER PRIMARY KEY,
            step INTEGER NOT NULL,
            steps INTEGER NOT NULL,
            iteration INTEGER NOT NULL,
            total INTEGER NOT NULL,
            frame INTEGER NOT NULL,
            frames INTEGER NOT NULL,
            loss REAL NOT NULL,
            eta_done_s REAL,
            preview_version INTEGER NOT NULL DEFAULT 0,
            preview BLOB,
            updated_at REAL NOT NULL
        )
        """,
        """
        CREATE TRIGGER job_progress_ends AFTER UPDATE OF state ON jobs WHEN NEW.state != 'running'
        BEGIN
            DELETE FROM job_progress WHERE job_id = NEW.id;
        END
        """,
    ),
    # 8: a claim reads each (server, member) lane's oldest queued job: one index walk instead of a table scan
    ("CREATE INDEX jobs_lanes ON jobs (state, guild_id, user_id, id)",),
)

LATEST = len(MIGRATIONS)


async def schema_version(conn: aiosqlite.Connection) -> int:
    """The database's `PRAGMA user_version`."""
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def migrate(conn: aiosqlite.Connection, target: int = LATEST) -> int:
    """Apply the missing migrations up to `target`, each in its own transaction; return the version reached.

    The connection must be in autocommit mode (`isolation_level=None`), as `open_database` makes it.
    """
    current = await schema_version(conn)
    if current > LATEST:
        raise RuntimeError(f"database schema version {current} is newer than this program knows ({LATEST})")
    for version in range(current, target):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            # re-read inside the lock: another process may have migrated meanwhile
            if await schema_version(conn) > version:
                await conn.execute("ROLLBACK")
                continue
            for statement in MIGRATIONS[version]:
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {version + 1}")
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        log.info("database migrated to schema version %d", version + 1)
    return await schema_version(conn)
