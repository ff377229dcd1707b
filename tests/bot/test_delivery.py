"""Result delivery when Discord misbehaves: 5xx retried with backoff, then left for the next start; channels
that are gone or refuse the bot marked undeliverable; an archived thread's result posted in its parent."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

from bot.queue.api import JobNotFound
from engine.jobs import JobSpec
from storage.records import Owner
from tests.support.bot_harness import ALICE, BOB, Harness, make_config, running_bot, status_edits, status_message
from tests.support.fake_discord import FakeDiscord, Request
from tests.support.files import size_of
from tests.support.waiting import eventually

SPEC = JobSpec(text_prompts="a lighthouse", width=64, height=64, iterations=5, vqgan_model="tiny", clip_model="tiny")

CHANNEL_POSTS = r"/channels/\d+/messages$"
SERVER_ERROR = {"code": 0, "message": "503: Service Unavailable"}


def result_posts(fake: FakeDiscord, channel_id: int | None = None) -> list[Request]:
    """POSTs of a job's result file (status messages carry no file)."""
    cid = channel_id or fake.channel_id
    return [r for r in fake.requests if r.method == "POST" and r.path.endswith(f"/channels/{cid}/messages") and r.files]


async def test_a_result_post_that_meets_5xx_is_retried_and_posted_once(fake: FakeDiscord, tmp_path: Path) -> None:
    config = make_config(tmp_path, result_retry_delays=(0.2, 0.2, 0.2))
    async with running_bot(fake, config, hold_at=1) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="a harbour", iterations=15)
        await eventually(lambda: status_message(fake, 1)["id"] != "0", 30.0, "the status message")
        fake.fail("POST", CHANNEL_POSTS, 503, SERVER_ERROR, times=2)
        h.gate.release()
        result = (await eventually(lambda: fake.results(1), 30.0, "the result"))[0]
        await h.settled()  # the delivery is over: a stray retry would have been made
        job = await h.job(1)
    assert [r.status for r in result_posts(fake)] == [503, 503, 200]
    assert len(fake.results(1)) == 1
    assert job.result_message_id == int(result["id"])


async def test_a_result_that_keeps_failing_stays_undelivered_and_is_posted_at_the_next_start(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    config = make_config(tmp_path, result_retry_delays=(0.1, 0.1))
    async with running_bot(fake, config, hold_at=1) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="a harbour", iterations=10)
        await eventually(lambda: status_message(fake, 1)["id"] != "0", 30.0, "the status message")
        fake.fail("POST", CHANNEL_POSTS, 503, SERVER_ERROR, times=100)
        h.gate.release()
        await eventually(lambda: len(result_posts(fake)) == 3, 30.0, "three tries")
        await h.settled()  # the delivery gave up
        assert len(result_posts(fake)) == 3  # bounded: no fourth try while this bot runs
        assert (await h.job(1)).result_message_id is None  # done, undelivered
    fake.clear_faults()
    async with running_bot(fake, config, run_jobs=False) as h:
        result = (await eventually(lambda: fake.results(1), 20.0, "the result after the restart"))[0]
        await eventually(lambda: _delivered(h, 1), 5.0, "the row marked delivered")
        assert (await h.job(1)).result_message_id == int(result["id"])
    assert len(fake.results(1)) == 1


async def _delivered(h: Harness, job_id: int) -> bool:
    """Posted, or marked undeliverable (0)."""
    with contextlib.suppress(JobNotFound):
        return (await h.job(job_id)).result_message_id is not None
    return False


async def test_a_result_for_a_channel_that_is_gone_is_marked_undeliverable_and_job_says_so(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    gone = 900000000000000099  # the fake answers 10003 Unknown Channel
    async with running_bot(fake, make_config(tmp_path, result_retry_delays=(0.1, 0.1))) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="a harbour", channel_id=gone)
        await eventually(lambda: _delivered(h, 1), 30.0, "the job settled")
        await h.settled()  # the delivery is over: a retry would have been made
        job = await h.job(1)
        shown = await fake.slash("job", user_id=BOB, id=1)
        reply = (await eventually(lambda: fake.replies(shown), 10.0, "/job's reply"))[0]
    assert job.state == "done"
    assert job.result_message_id == 0
    assert size_of(job.result_paths[0]) > 0  # the file is kept
    posts = [r for r in fake.requests if r.method == "POST" and r.path.endswith(f"/channels/{gone}/messages")]
    assert len(posts) == 2  # the status message and one try at the result: never retried
    assert "could not be posted" in reply


async def test_a_result_for_an_archived_thread_is_posted_in_its_parent_channel(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    fake.archived.add(fake.thread_id)
    async with running_bot(fake, make_config(tmp_path)) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="a harbour", channel_id=fake.thread_id)
        result = (await eventually(lambda: fake.results(1), 20.0, "the result in the parent"))[0]
        await eventually(lambda: _delivered(h, 1), 5.0, "the row marked delivered")
    assert f"<#{fake.thread_id}> is archived" in result["content"]
    assert f"<@{ALICE}>" in result["content"]
    refused = [r for r in result_posts(fake, fake.thread_id)]
    assert [r.status for r in refused] == [400]


async def test_status_edits_stop_when_the_bot_loses_access_but_the_job_goes_on(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with running_bot(fake, make_config(tmp_path, preview_seconds=1.0), hold_at=1) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="fog", iterations=30)
        status = await eventually(lambda: status_edits(fake, 1, "rendering") and status_message(fake, 1))
        fake.fail("PATCH", r"/channels/\d+/messages/\d+", 403, {"code": 50013, "message": "Missing Permissions"})
        h.gate.allow(5)
        await eventually(lambda: any(r.status == 403 for r in status_edits(fake, 1)), 30.0, "the refused edit")
        h.gate.allow(5)  # more progress, and then the end: neither may edit again
        await h.gate.held()
        h.gate.release()
        await eventually(lambda: fake.results(1), 30.0, "the result")
        await h.settled()
    edits = [r.status for r in fake.requests if r.method == "PATCH" and r.path.endswith(f"/messages/{status['id']}")]
    assert 403 in edits
    assert edits[-1] == 403  # no edit after Discord refused one


async def test_a_record_read_before_its_result_was_posted_is_not_posted_again(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    """The front-end's results poll and the start's recovery may hold a record read before another path
    posted it: the poster tries each job once per process."""
    config = make_config(tmp_path)
    async with running_bot(fake, config, hold_at=1) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="a harbour", iterations=10)
        await eventually(lambda: status_message(fake, 1)["id"] != "0", 30.0, "the status message")
        h.gate.release()
        await eventually(lambda: fake.results(1), 30.0, "the result")
        await eventually(lambda: _delivered(h, 1), 5.0, "the row marked delivered")
        stale = dataclasses.replace(await h.job(1), result_message_id=None)  # as read before the post
        assert h.bot.publisher.results.tried(1)
        await h.bot.publisher.results.deliver(stale)
        await h.bot.publisher.on_finished(stale)
        await h.settled()
    assert len(fake.results(1)) == 1


async def test_a_job_asked_for_its_status_message_twice_at_once_gets_one(fake: FakeDiscord, tmp_path: Path) -> None:
    """The command that made a job and the recovery at a start can both ask for the status of a job made just then."""
    async with running_bot(fake, make_config(tmp_path), hold_at=1) as h:
        entry = await h.queue.submit(Owner(user_id=ALICE, guild_id=fake.guild_id, channel_id=fake.channel_id), SPEC)
        status = h.bot.publisher.status
        await asyncio.gather(*(status.post_status(entry.job, position=1, eta_done_s=None) for _ in range(3)))
        posted = [m for m in fake.channel_messages() if m["content"].startswith(f"**#{entry.job.id}**")]
        assert len(posted) == 1
        h.gate.release()
        await eventually(lambda: "✅ done" in status_message(fake, entry.job.id)["content"], 30.0, "the final status")
