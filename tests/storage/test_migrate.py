"""`storage.migrate`'s rules on their own: which targets are refused, how a running job is handed over, which
sources are read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.migrate import MigrationRefused, MigrationReport, check_target, handed_over, open_source
from storage.sqlite.db import open_database
from storage.sqlite.migrations import LATEST


def test_a_target_with_jobs_is_refused_naming_the_count() -> None:
    with pytest.raises(MigrationRefused, match=r"^the target database already holds 3 jobs: .* \(--resume"):
        check_target({1, 2, 3}, {1, 2, 3, 4}, resume=False)
    with pytest.raises(MigrationRefused, match=r"already holds 1 job: "):
        check_target({1}, {1}, resume=False)
    check_target(set(), {1, 2}, resume=False)
    check_target({1, 2}, {1, 2, 3}, resume=True)  # an interrupted copy of this source
    with pytest.raises(
        MigrationRefused, match=r"cannot resume: the target holds 1 job that the source does not \(#9\)"
    ):
        check_target({1, 9}, {1, 2}, resume=True)


def _running(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {"id": 4, "state": "running", "lease_owner": "w/cuda:0", "lease_until": 50.0,
                              "run_started_at": 10.0, "heartbeat_at": 20.0, "cancel_requested": 0,
                              "checkpoint": b"c", "checkpoint_step": 7, "finished_at": None}  # fmt: skip
    return {**row, **changes}


def test_a_running_job_is_handed_over_queued_with_its_checkpoint_or_cancelled_when_asked() -> None:
    report = MigrationReport()
    queued = handed_over(_running(), now=99.0, report=report)
    assert queued == _running(
        state="queued", lease_owner=None, lease_until=None, run_started_at=None, heartbeat_at=None
    )
    assert report.requeued == [(4, 7)]
    assert report.live_leases == []  # expired at 50
    live = MigrationReport()
    handed_over(_running(), now=40.0, report=live)  # the lease runs to 50: the bot may still be running
    assert live.live_leases == [4]
    cancelled = handed_over(_running(cancel_requested=1), now=99.0, report=report)
    assert cancelled["state"] == "cancelled"
    assert cancelled["finished_at"] == 99.0
    assert cancelled["lease_owner"] is None
    assert report.cancelled == [4]
    done = {"id": 5, "state": "done", "lease_owner": None}
    assert handed_over(done, now=99.0, report=report) is done


async def test_a_source_at_another_schema_version_or_not_a_database_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite3"
    async with open_database(old, migrate_to=LATEST - 1):
        pass
    with pytest.raises(MigrationRefused, match=f"schema version {LATEST - 1}, this program copies version {LATEST}"):
        open_source(old)
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(MigrationRefused, match="is not a readable SQLite database"):
        open_source(junk)
    with pytest.raises(MigrationRefused, match="no SQLite database at"):
        open_source(tmp_path / "absent.sqlite3")


async def test_the_source_is_opened_read_only(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    async with open_database(path):
        pass
    conn = open_source(path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM speeds")
    finally:
        conn.close()
