"""`python -m bot migrate-db`: a single-host installation (SQLite, files on disk) copied into PostgreSQL, read
back by the PostgreSQL store and by the shared-files code a front-end and a worker on other hosts run."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import pytest

from bot import migrate_db
from bot.queue.inputs import escape_path
from bot.queue.shared_files import SharedFiles
from engine.jobs import JobSpec, JobStatus
from storage.postgres.store import PostgresJobStore
from storage.records import Claim, JobRecord, Owner, QueueState, SubmitLimits
from storage.sqlite.store import SqliteJobStore
from storage.store import Chooser
from tests.support import postgres

ROOT = Path(__file__).resolve().parents[2]
SPEC = JobSpec(text_prompts="a fox", width=64, height=64, iterations=10, vqgan_model="tiny", clip_model="tiny")
ALICE = Owner(user_id=1, guild_id=10, channel_id=100)


def member(n: int) -> Owner:
    """A member of ALICE's server: one job each, so a claim may pick any of them (fair share offers only a
    member's oldest queued job)."""
    return dataclasses.replace(ALICE, user_id=n)


NO_LIMITS = SubmitLimits(max_queued_per_member=None, max_queued_per_guild=None)
RESULT = b"\x89PNG the result " * 100_000  # over one 1 MiB chunk
FRAME = b"a rendered frame"
INIT, PROMPT = b"\x89PNG the init image", b"\x89PNG the image prompt"


@pytest.fixture
def target(postgres_url: str) -> str:
    postgres.run_sync(postgres.empty(postgres_url))
    return postgres_url


def _pick(job_id: int) -> Chooser:
    def choose(state: QueueState) -> int | None:
        return job_id if any(c.id == job_id for c in state.queued) else None

    return choose


async def _claim(store: SqliteJobStore | PostgresJobStore, job_id: int, *, now: float) -> Claim:
    claim = await store.claim_next("host-a/cuda:0", lease_s=30.0, now=now, choose=_pick(job_id))
    assert claim is not None
    assert claim.job.id == job_id
    return claim


# a single host's database in every state, with its files where the bot keeps them; the records by id
async def _single_host(data: Path) -> dict[int, JobRecord]:
    store = await SqliteJobStore.open(data / "jobs.sqlite3")
    try:
        queued = await store.create(member(1), SPEC, now=1.0, limits=NO_LIMITS)
        running = await store.create(member(2), SPEC, now=2.0, limits=NO_LIMITS)
        done = await store.create(member(3), SPEC, now=3.0, limits=NO_LIMITS, interaction_id=77)
        failed = await store.create(Owner(user_id=2), SPEC, now=4.0, limits=NO_LIMITS, priority=True)
        cancelled = await store.create(member(4), SPEC, now=5.0, limits=NO_LIMITS)

        async def with_inputs(job_id: int) -> JobSpec:
            folder = data / "inputs" / str(job_id)
            folder.mkdir(parents=True)
            (folder / "init.png").write_bytes(INIT)
            (folder / "prompt:1.png").write_bytes(PROMPT)
            prompts = escape_path(folder / "prompt:1.png") + ":0.5"
            return dataclasses.replace(SPEC, init_image=str(folder / "init.png"), image_prompts=prompts)

        inputs = await store.create(member(5), SPEC, now=6.0, limits=NO_LIMITS, prepare=with_inputs)

        async def gone_input(job_id: int) -> JobSpec:
            return dataclasses.replace(SPEC, init_image=str(data / "inputs" / str(job_id) / "gone.png"))

        lost = await store.create(member(6), SPEC, now=7.0, limits=NO_LIMITS, prepare=gone_input)
        await store.set_status_message(queued.id, 555)

        claim = await _claim(store, running.id, now=10.0)
        assert await store.save_checkpoint(claim, b"checkpoint-5", step=5, frame=1, now=11.0)
        frame = data / "work" / str(running.id) / "frames" / "frame_00001.png"  # what a video's checkpoint names
        frame.parent.mkdir(parents=True)
        frame.write_bytes(FRAME)
        claim = await _claim(store, done.id, now=12.0)
        result = data / "outputs" / str(done.id) / f"a{claim.attempt}" / "result.png"
        result.parent.mkdir(parents=True)
        result.write_bytes(RESULT)
        await store.finish(claim, JobStatus.DONE, now=13.0, gpu_seconds=2.5, step=10, frame=1,
                           result_paths=[str(result)], seed=42)  # fmt: skip
        claim = await _claim(store, failed.id, now=14.0)
        await store.finish(claim, JobStatus.FAILED, now=15.0, gpu_seconds=0.5, step=3, frame=1, error="boom")
        await store.cancel_queued(cancelled.id, now=16.0)
        await store.record_speed("tiny|tiny|64x64|4|cuda", 0.25, now=17.0)
        await store.set_guild_setting(10, "max_size", "256", now=18.0, by_user=1)
        ids = [queued.id, running.id, done.id, failed.id, cancelled.id, inputs.id, lost.id]
        return {job.id: job for job in await store.many(ids)}
    finally:
        await store.close()


def _migrate(source: Path, url: str, data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "BOT_"))}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "bot", "migrate-db", "--from", f"sqlite:///{source}", "--to", url]
    return subprocess.run(
        [*command, "--data-dir", str(data), *extra], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _source_rows(path: Path) -> dict[int, dict[str, object]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return {int(r["id"]): dict(r) for r in conn.execute("SELECT * FROM jobs")}
    finally:
        conn.close()


async def _target_rows(url: str) -> dict[int, dict[str, object]]:
    conn = await asyncpg.connect(url)
    try:
        rows = [dict(r) for r in await conn.fetch("SELECT * FROM jobs")]
    finally:
        await conn.close()
    as_sqlite = [{k: int(v) if isinstance(v, bool) else v for k, v in row.items()} for row in rows]  # 0/1 booleans
    return {int(r["id"]): r for r in as_sqlite}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _NoRelease:
    async def release(
        self, claim: Claim, *, gpu_seconds: float, step: int, frame: int, interrupted: bool = False
    ) -> bool:
        raise AssertionError("the migrated inputs should have been found")


async def test_a_single_host_installation_moves_to_postgres_with_its_files(target: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    before = await _single_host(data)
    source = data / "jobs.sqlite3"
    digest = _digest(source)

    ran = await asyncio.to_thread(_migrate, source, target, data)
    assert ran.returncode == 0, ran.stderr
    out = ran.stdout
    assert "jobs copied: 7 (1 cancelled, 1 done, 1 failed, 4 queued)" in out
    assert "job #2 was running: copied as queued (its checkpoint at step 5); the new deployment resumes it" in out
    assert f"files copied: 4 ({len(RESULT) + len(INIT) + len(PROMPT) + len(FRAME)} bytes)" in out
    assert "job #7: input gone.png" in out
    assert "warning" not in out  # the running job's lease had expired: the bot is not running
    assert "speeds: 1 rows, guild_settings: 1 rows" in out
    assert _digest(source) == digest  # the source is not written
    target_rows = await _target_rows(target)  # before the claims below change them

    store = await PostgresJobStore.open(target)
    try:
        after = {job.id: job for job in await store.many(list(before))}
        running = before[2]
        expected = {
            **before,
            2: dataclasses.replace(
                running, state=JobStatus.QUEUED, lease_owner=None, lease_until=None, heartbeat_at=None
            ),
        }
        assert after == expected
        assert running.state == JobStatus.RUNNING
        assert running.checkpoint_step == 5
        assert await store.speeds() == {"tiny|tiny|64x64|4|cuda": 0.25}
        assert await store.guild_settings() == {10: {"max_size": "256"}}

        # a front-end on another host posts the migrated result: fetched from the database, byte for byte
        await asyncio.to_thread(Path(before[3].result_paths[0]).unlink)  # not on the front-end's host
        front = SharedFiles(store.files, tmp_path / "front")
        assert await front.result_file(after[3]) == tmp_path / "front" / "outputs" / "3" / "a1" / "result.png"
        assert (
            await asyncio.to_thread((tmp_path / "front" / "outputs" / "3" / "a1" / "result.png").read_bytes) == RESULT
        )

        # a worker on another host resumes the running job from its checkpoint, and renders the one with inputs
        worker = SharedFiles(store.files, tmp_path / "worker")
        resumed = await worker.claimed(await _claim(store, 2, now=100.0), _NoRelease())
        assert resumed.checkpoint == b"checkpoint-5"
        frame = tmp_path / "worker" / "work" / "2" / "frames" / "frame_00001.png"
        assert await asyncio.to_thread(frame.read_bytes) == FRAME  # its finished frames came along
        claim = await worker.claimed(await _claim(store, 6, now=101.0), _NoRelease())
        assert claim.job.spec.init_image == str(tmp_path / "worker" / "inputs" / "6" / "init.png")
        folder = tmp_path / "worker" / "inputs" / "6"
        assert await asyncio.to_thread((folder / "init.png").read_bytes) == INIT
        assert await asyncio.to_thread((folder / "prompt:1.png").read_bytes) == PROMPT

        new = await store.create(ALICE, SPEC, now=200.0, limits=NO_LIMITS)
        assert new.id > max(before)
    finally:
        await store.close()
    for row in (source_rows := _source_rows(source)).values():
        if row["state"] == "running":  # handed over: queued, lease gone, the rest (checkpoint included) kept
            row.update(state="queued", lease_owner=None, lease_until=None, run_started_at=None, heartbeat_at=None)
    assert source_rows[3]["interaction_id"] == 77
    assert source_rows[2]["checkpoint"] == b"checkpoint-5"
    assert {k: v for k, v in target_rows.items() if k in source_rows} == source_rows  # every column

    again = await asyncio.to_thread(_migrate, source, target, data)
    assert again.returncode != 0
    assert again.stdout == ""
    assert again.stderr.strip().splitlines() == [
        "migrate-db: refused: the target database already holds 8 jobs: migrate-db copies only into a database "
        "without jobs (--resume continues an interrupted copy)"
    ]
    assert _digest(source) == digest


async def test_resume_copies_what_an_interrupted_run_left_out(target: str, tmp_path: Path) -> None:
    before = await _single_host(tmp_path / "data")
    data = tmp_path / "moved"  # the data directory moved since: the files are found under --data-dir
    await asyncio.to_thread(shutil.move, tmp_path / "data", data)
    source = data / "jobs.sqlite3"
    first = await asyncio.to_thread(_migrate, source, target, data)
    assert first.returncode == 0, first.stderr
    assert f"files copied: 4 ({len(RESULT) + len(INIT) + len(PROMPT) + len(FRAME)} bytes)" in first.stdout
    assert "files missing (the jobs were copied without them): 1" in first.stdout  # only job #7's
    conn = await asyncpg.connect(target)
    try:
        await conn.execute("DELETE FROM jobs WHERE id > 4")  # as if the copy had stopped after job #4
    finally:
        await conn.close()

    ran = await asyncio.to_thread(_migrate, source, target, data, "--resume")
    assert ran.returncode == 0, ran.stderr
    assert "jobs copied: 3 (1 cancelled, 2 queued)" in ran.stdout
    assert "skipped: 4" in ran.stdout
    store = await PostgresJobStore.open(target)
    try:
        assert [job.id for job in await store.many(list(before))] == sorted(before)
        assert [f.name for f in await store.files.list_files(6, "input")] == ["init.png", "prompt:1.png"]
        assert [(f.name, f.size) for f in await store.files.list_files(3, "result")] == [("a1-result.png", len(RESULT))]
        assert (await store.create(ALICE, SPEC, now=200.0, limits=NO_LIMITS)).id == 8
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "{missing}", "--to", "postgresql://127.0.0.1:1/x"], "migrate-db: refused: no SQLite database at "),
        (
            ["--from", "{missing}", "--to", "sqlite:///other.sqlite3"],
            "migrate-db: refused: --to must be a postgresql://",
        ),
        (
            ["--from", "mysql://h/db", "--to", "postgresql://127.0.0.1:1/x"],
            "migrate-db: refused: no job store for 'mysql'",
        ),
    ],
)
def test_wrong_arguments_are_refused_in_one_line(
    args: Sequence[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("{missing}", str(tmp_path / "nothing.sqlite3")) for a in args]
    assert migrate_db.main([*argv, "--data-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith(message)


async def _empty_sqlite(path: Path) -> None:
    store = await SqliteJobStore.open(path)
    await store.close()


def test_an_unreachable_target_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "jobs.sqlite3"
    postgres.run_sync(_empty_sqlite(source))
    assert migrate_db.main(["--from", str(source), "--to", "postgresql://postgres@127.0.0.1:1/none"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("migrate-db: failed: ")
    assert lines[0].endswith("(fix it and rerun with --resume)")
