"""Faults in a scale-out deployment on PostgreSQL: the front-end killed while workers render, a /cancel that
must reach another process, the database going away mid-run, and a worker's own metrics endpoint.

Same set-up as tests/bot/test_scale_out.py (tests.support.cluster): renders are held with each process's
gate where a test needs them under way, nothing assumes a render speed, and the limits are generous.
The database outage is scoped to the test's own database (`postgres.cut_off`: new connections refused, every
open one dropped, as a restart does to its clients) so that the other tests on the server are not disturbed.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import aiohttp
import pytest

from storage.records import JobRecord
from tests.support import postgres
from tests.support.bot_harness import ALICE, BOB, CAROL, reply_with, status_edits, status_message
from tests.support.cluster import POLL_FOR_DUPLICATES_S, Cluster, results_of, submit
from tests.support.fake_discord import FakeDiscord
from tests.support.sockets import listening
from tests.support.waiting import eventually

OUTAGE_S = 8.0  # longer than a few result polls, relay rounds and claim polls: every loop meets it


async def test_the_front_end_killed_while_workers_render_posts_their_results_once_when_it_returns(
    fake: FakeDiscord, cluster: Cluster
) -> None:
    w1, w2 = cluster.workers["w1"], cluster.workers["w2"]
    for worker in (w1, w2):
        worker.gate.hold_at(1)
    await asyncio.gather(cluster.front.start(), w1.start(), w2.start())
    done_meanwhile, still_running = await submit(fake, ALICE, "a lighthouse"), await submit(fake, BOB, "a red barn")
    await asyncio.gather(w1.gate.held(), w2.gate.held())
    for job_id in (done_meanwhile, still_running):
        await eventually(lambda j=job_id: "rendering" in status_message(fake, j)["content"], 60.0, "both running")

    # which worker holds which job is the claims' business: find out rather than assume
    finishing, rendering = (
        cluster.workers[j.worker_id or ""] for j in await cluster.jobs([done_meanwhile, still_running])
    )
    assert {finishing, rendering} == {w1, w2}

    await cluster.front.kill()  # SIGKILL: no drain, no goodbye
    finishing.gate.release()  # one job finishes while nobody is there to post it; the other renders on
    (job,) = await eventually(lambda: _done(cluster, [done_meanwhile]), 120.0, "the job finished without a front-end")
    assert not job.delivered
    assert not fake.results(done_meanwhile)

    await cluster.front.start()
    await eventually(lambda: fake.results(done_meanwhile), 120.0, "the result finished meanwhile")
    rendering.gate.hold_at(3)  # a little further: the running job's status message shows it
    await eventually(lambda: status_edits(fake, still_running, "(3/"), 60.0, "progress again after the return")
    rendering.gate.release()
    ids = [done_meanwhile, still_running]
    await eventually(lambda: all(results_of(fake, ids).values()), 120.0, "both results")
    await asyncio.sleep(POLL_FOR_DUPLICATES_S)
    assert {job_id: len(posted) for job_id, posted in results_of(fake, ids).items()} == dict.fromkeys(ids, 1)
    assert all(j.delivered for j in await cluster.jobs(ids))
    assert {j.worker_id for j in await cluster.jobs(ids)} == {"w1", "w2"}
    assert [w.proc.returncode for w in (w1, w2) if w.proc is not None] == [None, None]  # they never noticed


async def _done(cluster: Cluster, ids: list[int]) -> list[JobRecord] | None:
    jobs = await cluster.jobs(ids)
    return jobs if all(j.state == "done" for j in jobs) else None


async def test_a_cancel_reaches_a_job_on_a_worker_within_seconds_through_the_relay(
    fake: FakeDiscord, tmp_path: Path, cluster_database: str
) -> None:
    # the longest lease: its heartbeat (which also carries cancels) comes only every 20 s
    cluster = Cluster(fake, tmp_path, cluster_database, workers=("w1",), BOT_LEASE_SECONDS="60")
    try:
        w1 = cluster.workers["w1"]
        w1.gate.hold_at(1)
        await asyncio.gather(cluster.front.start(), w1.start())
        job_id = await submit(fake, ALICE, "an endless stair", iterations=2000)
        await w1.gate.held()
        await eventually(lambda: "rendering" in status_message(fake, job_id)["content"], 60.0, "the job running")
        asked = time.monotonic()
        sent = await fake.slash("cancel", user_id=ALICE, job=job_id)
        await reply_with(fake, sent, f"#{job_id}", within=60.0)
        (job,) = await eventually(lambda: _ended(cluster, job_id), 60.0, "the job to stop")
        stopped_after = time.monotonic() - asked
        assert stopped_after < 15.0, stopped_after  # the relay's round (1 s), not the heartbeat (20 s)
        assert f"job {job_id}: cancel requested through the database" in w1.logs()
        assert job.state == "cancelled"
        assert job.partial
        partial = (await eventually(lambda: fake.results(job_id), 60.0, "the partial result"))[0]
        assert "partial" in partial["content"]
        await eventually(lambda: "cancelled" in status_message(fake, job_id)["content"], 60.0, "the status")
        await asyncio.sleep(POLL_FOR_DUPLICATES_S)
        assert len(fake.results(job_id)) == 1
    finally:
        await cluster.stop()


async def _ended(cluster: Cluster, job_id: int) -> list[JobRecord] | None:
    jobs = await cluster.jobs([job_id])
    return jobs if jobs[0].finished else None


@pytest.mark.parametrize(
    "how",
    [
        "cut_off",
        pytest.param(
            "restart",
            marks=pytest.mark.skipif(
                not postgres.RESTART, reason="VQBOT_TEST_PG_RESTART unset: a real restart drops every session"
            ),
        ),
    ],
)
async def test_the_database_going_away_mid_run_loses_nothing_and_posts_nothing_twice(
    fake: FakeDiscord, tmp_path: Path, cluster_database: str, how: str
) -> None:
    # a lease longer than the outage: no job is taken over for a heartbeat the database could not take
    cluster = Cluster(fake, tmp_path, cluster_database, BOT_LEASE_SECONDS="45")
    try:
        w1, w2 = cluster.workers["w1"], cluster.workers["w2"]
        for worker in (w1, w2):
            worker.gate.hold_at(1)
        await asyncio.gather(cluster.front.start(), w1.start(), w2.start())
        ids = [await submit(fake, ALICE, "a lighthouse"), await submit(fake, BOB, "a red barn")]
        await asyncio.gather(w1.gate.held(), w2.gate.held())
        ids.append(await submit(fake, CAROL, "a tunnel"))  # queued: claimed once a worker is free

        async with postgres.outage(cluster_database, how):
            for worker in (w1, w2):
                worker.gate.release()  # the held jobs finish while their ends cannot be recorded
            refused = await fake.slash("imagine", user_id=CAROL, prompt="a moon", iterations=8)
            answer = await reply_with(fake, refused, "database", within=60.0)
            assert "try again" in answer
            await asyncio.sleep(OUTAGE_S)

        await eventually(lambda: all(results_of(fake, ids).values()), 180.0, "every accepted job's result")
        ids.append(await submit(fake, CAROL, "a moon"))  # the front-end takes jobs again by itself
        await eventually(lambda: fake.results(ids[-1]), 120.0, "the job submitted after the outage")
        await asyncio.sleep(POLL_FOR_DUPLICATES_S)
        assert {job_id: len(posted) for job_id, posted in results_of(fake, ids).items()} == dict.fromkeys(ids, 1)
        jobs = await cluster.jobs(ids)
        assert all(j.delivered and j.state == "done" for j in jobs)
        assert all(j.interruptions == 0 for j in jobs)  # nothing was taken over: every end was recorded
        for process in (cluster.front, w1, w2):
            assert process.proc is not None
            assert process.proc.returncode is None  # nobody died of it
        assert "recording its end failed" in w1.logs() + w2.logs()
    finally:
        await cluster.stop()


async def test_a_worker_serves_metrics_and_its_device_health_on_the_metrics_port(
    fake: FakeDiscord, tmp_path: Path, cluster_database: str
) -> None:
    cluster = Cluster(fake, tmp_path, cluster_database, workers=("w1",), BOT_METRICS_PORT="0")
    try:
        w1 = cluster.workers["w1"]
        await w1.start()
        found = await eventually(
            lambda: re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", w1.logs()), 60.0, "the port"
        )
        port = int(found.group(1))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
                health = json.loads(await response.text())
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                metrics = await response.text()
        assert health == {"ok": True, "gateway": None, "devices": {"cpu": True}}
        assert "vqbot_" in metrics
        assert w1.proc is not None
        assert listening(w1.proc.pid) == {("127.0.0.1", port)}  # nothing else listens on a worker
    finally:
        await cluster.stop()
