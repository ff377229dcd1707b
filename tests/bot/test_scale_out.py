"""Scale-out on PostgreSQL: a Discord front-end (`python -m bot`, ENGINE_DEVICE=none) and two render workers
(`python -m bot worker`, no token) on one fresh database, against the fake Discord, tiny model on the CPU.

Renders are held with each worker's gate where the test needs them under way; nothing assumes a speed.
Skips without a PostgreSQL server (fails instead under VQBOT_REQUIRE_POSTGRES=1), like the store tests.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from tests.support.bot_harness import ALICE, BOB, CAROL, reply_with
from tests.support.cluster import POLL_FOR_DUPLICATES_S, Cluster, results_of, submit
from tests.support.fake_discord import FakeDiscord
from tests.support.waiting import eventually


async def test_members_jobs_spread_over_two_workers_and_are_posted_once_by_the_front_end(
    fake: FakeDiscord, cluster: Cluster
) -> None:
    w1, w2 = cluster.workers["w1"], cluster.workers["w2"]
    for worker in (w1, w2):
        worker.gate.hold_at(1)  # each worker keeps the first job it takes, so the second must go to the other
    await asyncio.gather(cluster.front.start(), w1.start(), w2.start())
    first = [await submit(fake, ALICE, "a lighthouse"), await submit(fake, BOB, "a red barn")]
    await asyncio.gather(w1.gate.held(), w2.gate.held())

    queue = await fake.slash("queue", user_id=CAROL)
    assert "2 of 2 render workers are up." in await reply_with(fake, queue, "render workers", within=60.0)

    later = [await submit(fake, CAROL, "a tunnel"), await submit(fake, ALICE, "a moon")]
    for worker in (w1, w2):
        worker.gate.release()
    ids = first + later
    await eventually(lambda: all(results_of(fake, ids).values()), 120.0, "every result posted")
    await asyncio.sleep(POLL_FOR_DUPLICATES_S)
    assert {job_id: len(posted) for job_id, posted in results_of(fake, ids).items()} == dict.fromkeys(ids, 1)
    for job_id, owner in zip(ids, (ALICE, BOB, CAROL, ALICE), strict=True):
        assert f"<@{owner}>" in fake.results(job_id)[0]["content"]

    jobs = await cluster.jobs(ids)
    assert all(j.delivered for j in jobs)
    assert {j.worker_id for j in jobs[:2]} == {"w1", "w2"}  # the held pair: one on each worker
    assert {j.worker_id for j in jobs} <= {"w1", "w2"}

    shown = await fake.slash("job", user_id=ALICE, id=ids[0])
    assert f"on worker `{jobs[0].worker_id}` (cpu)" in await reply_with(fake, shown, "worker", within=60.0)

    front_log = cluster.front.logs()
    password = urlsplit(cluster.url).password
    assert password
    assert f"database PostgreSQL {cluster.url.replace(password, '***')}" in front_log
    for process in (cluster.front, w1, w2):
        assert password not in process.logs()
    assert "devices none (no rendering here)" in front_log
    assert "database PostgreSQL" in w1.logs()
    assert "worker id w1" in w1.logs()


async def test_a_killed_workers_job_is_finished_by_the_other_after_its_lease_and_posted_once(
    fake: FakeDiscord, cluster: Cluster
) -> None:
    w1, w2 = cluster.workers["w1"], cluster.workers["w2"]
    w1.gate.hold_at(2)
    await asyncio.gather(cluster.front.start(), w1.start())
    job_id = await submit(fake, BOB, "a slow moon")
    await w1.gate.held()
    await w2.start()  # idle: the job is w1's while its lease lasts
    await w1.kill()  # mid-render, no cleanup: its lease runs out
    posted = await eventually(lambda: fake.results(job_id), 120.0, "the result, rendered by w2")
    assert f"<@{BOB}>" in posted[0]["content"]
    await asyncio.sleep(POLL_FOR_DUPLICATES_S)
    assert len(fake.results(job_id)) == 1
    (job,) = await cluster.jobs([job_id])
    assert job.worker_id == "w2"
    assert job.interruptions == 1
    assert job.attempt == 2
    assert "lease expired, resuming it" in w2.logs()


async def test_sigterm_drains_a_worker_its_job_goes_back_and_another_worker_finishes_it(
    fake: FakeDiscord, cluster: Cluster
) -> None:
    w1, w2 = cluster.workers["w1"], cluster.workers["w2"]
    w1.gate.hold_at(2)
    await asyncio.gather(cluster.front.start(), w1.start())
    job_id = await submit(fake, CAROL, "a quiet harbour")
    await w1.gate.held()
    w1.stop()  # SIGTERM: checkpoint at the next iteration, give the job back, exit 0
    await eventually(lambda: "draining" in w1.logs(), 30.0, "the worker to start draining")
    w1.gate.release()
    assert await w1.exit_code() == 0
    (job,) = await cluster.jobs([job_id])
    assert job.state == "queued"
    assert job.checkpoint_step is not None
    await w2.start()
    await eventually(lambda: fake.results(job_id), 120.0, "the result, rendered by w2")
    (job,) = await cluster.jobs([job_id])
    assert job.worker_id == "w2"
    assert job.interruptions == 0  # a clean stop is no interruption
