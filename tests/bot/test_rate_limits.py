"""Discord rate limits longer than discord.py waits out (it raises `RateLimited`): every call path waits
and tries again, and nothing is lost: results are posted once the limit passes, without a restart; a
recovery goes on past one; progress edits and deferred answers resume.

The fake Discord answers 429 `retry_after: 60` for a short window; the bot's longest wait on one rate
limit (`rate_limit_max_wait_seconds`) is cut to half a second so the tests do not sit out a minute.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from bot.delivery.rate_limits import RATE_LIMITS, wait_for
from tests.support.bot_harness import ALICE, BOB, Harness, make_config, running_bot, status_edits, status_message
from tests.support.fake_discord import FakeDiscord, Request
from tests.support.images import png_bytes
from tests.support.waiting import eventually

CHANNEL_POSTS = r"/channels/\d+/messages$"
ORIGINAL_EDITS = r"/webhooks/\d+/[^/]+/messages/@original$"
SERVER_ERROR = {"code": 0, "message": "503: Service Unavailable"}
CAP_S = 0.5  # the bot's longest wait on one rate limit, in these tests


def result_posts(fake: FakeDiscord) -> list[Request]:
    """POSTs of a result file (status messages carry no file)."""
    return [r for r in fake.requests if r.method == "POST" and r.path.endswith("/messages") and r.files]


def test_the_wait_honours_retry_after_up_to_the_cap_and_never_undercuts_the_pacing() -> None:
    assert wait_for(60.0, floor_s=3.0, cap_s=300.0) == 60.0  # what Discord asked
    assert wait_for(3600.0, floor_s=3.0, cap_s=300.0) == 300.0  # a huge retry_after does not park the job
    assert wait_for(0.0, floor_s=3.0, cap_s=300.0) == 3.0  # a 429 without a retry_after: the path's own pace
    assert wait_for(60.0, floor_s=1.0, cap_s=0.5) == 1.0


async def test_a_result_post_rate_limited_for_a_minute_is_posted_once_the_limit_passes_without_a_restart(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    hits, retries = RATE_LIMITS.hits["result"], RATE_LIMITS.retries["result"]
    config = make_config(tmp_path, result_retry_delays=(0.1,), rate_limit_max_wait_seconds=CAP_S)
    async with running_bot(fake, config, hold_at=1) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="a harbour", iterations=10)
        await eventually(lambda: status_message(fake, 1)["id"] != "0", 30.0, "the status message")
        window = fake.rate_limit_for("POST", CHANNEL_POSTS, 2.0, retry_after=60.0)
        h.gate.release()
        result = (await eventually(lambda: fake.results(1), 30.0, "the result, once the limit passed"))[0]
        await h.settled()  # the delivery is over: a stray retry would have been made
        job = await h.job(1)
    statuses = [r.status for r in result_posts(fake)]
    assert window.answered >= 2  # more tries than the retries for other failures allow (one): none was given up
    assert statuses == [429] * window.answered + [200]
    refused = [r.at for r in result_posts(fake) if r.status == 429]
    assert min(b - a for a, b in itertools.pairwise(refused)) >= CAP_S * 0.9  # it waited between tries
    assert len(fake.results(1)) == 1
    assert job.result_message_id == int(result["id"])
    assert RATE_LIMITS.hits["result"] - hits == window.answered
    assert RATE_LIMITS.retries["result"] - retries == window.answered


async def test_two_undelivered_results_at_a_restart_are_both_posted_when_the_first_meets_a_rate_limit(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    config = make_config(tmp_path, result_retry_delays=(), rate_limit_max_wait_seconds=CAP_S)
    async with running_bot(fake, config, hold_at=1) as h:
        for prompt in ("a harbour", "a lighthouse"):
            await fake.slash("imagine", user_id=ALICE, prompt=prompt, iterations=4)
        await eventually(lambda: status_message(fake, 2)["id"] != "0", 30.0, "both status messages")
        fake.fail("POST", CHANNEL_POSTS, 503, SERVER_ERROR, times=100)
        h.gate.release()
        await eventually(lambda: len(result_posts(fake)) == 2, 30.0, "one refused try for each result")
        await h.settled()
        assert [(await h.job(n)).result_message_id for n in (1, 2)] == [None, None]  # done, undelivered
    fake.clear_faults()
    before = len(result_posts(fake))
    fake.rate_limit("POST", CHANNEL_POSTS, retry_after=60.0, times=1)  # the recovery's first post
    config = make_config(tmp_path, result_retry_delays=(0.1,), rate_limit_max_wait_seconds=CAP_S)
    async with running_bot(fake, config, run_jobs=False) as h:
        await eventually(lambda: fake.results(1) and fake.results(2), 30.0, "both results after the restart")
        await h.settled()
        marked = [(await h.job(n)).result_message_id for n in (1, 2)]
    assert [r.status for r in result_posts(fake)[before:]] == [429, 200, 200]
    assert len(fake.results(1)) == len(fake.results(2)) == 1
    assert marked == [int(fake.results(1)[0]["id"]), int(fake.results(2)[0]["id"])]


async def test_a_status_edit_meeting_a_rate_limit_does_not_stop_the_progress_updates(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    hits = RATE_LIMITS.hits["status"]
    config = make_config(tmp_path, preview_seconds=1.0, rate_limit_max_wait_seconds=CAP_S)
    async with running_bot(fake, config, hold_at=1) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="rain", iterations=30)
        await eventually(lambda: status_edits(fake, 1, "rendering"), 30.0, "the first progress edit")
        message = rf"/channels/\d+/messages/{status_message(fake, 1)['id']}$"
        window = fake.rate_limit_for("PATCH", message, 1.5, retry_after=60.0)
        while not window.answered:  # one more step after each edit until the limit is met
            seen = len(status_edits(fake, 1))
            h.gate.allow(1)
            await eventually(lambda s=seen: len(status_edits(fake, 1)) > s, 30.0, "the next status edit")
        await eventually(lambda: window.over, 10.0, "the end of the rate limit")
        seen = len(status_edits(fake, 1))
        h.gate.allow(5)
        await eventually(
            lambda: any(r.status == 200 for r in status_edits(fake, 1, "rendering")[seen:]), 30.0, "progress again"
        )
        h.gate.release()
        await eventually(lambda: fake.results(1), 30.0, "the result")
        await h.settled()
    assert RATE_LIMITS.hits["status"] > hits
    assert "✅ done" in status_message(fake, 1)["content"]


async def test_a_deferred_answer_whose_edit_meets_a_rate_limit_is_sent_again(fake: FakeDiscord, tmp_path: Path) -> None:
    # discord.py sleeps through an interaction webhook's 429 itself; what reaches the bot is one it
    # cannot handle: Cloudflare's, without a Via header
    retries = RATE_LIMITS.retries["ack"]
    picture = fake.add_file("start.png", png_bytes(), "image/png")
    async with running_bot(fake, make_config(tmp_path, rate_limit_max_wait_seconds=CAP_S), run_jobs=False) as h:
        fake.rate_limit("PATCH", ORIGINAL_EDITS, retry_after=60.0, via=False, times=2)
        sent = await fake.slash("imagine", user_id=BOB, prompt="a field", init_image=picture)

        def edits() -> list[int]:
            return [r.status for r in fake.token_requests(sent.token) if r.method == "PATCH"]

        await eventually(lambda: 200 in edits(), 30.0, "the ack, sent again")
        assert await h.count() == 1
    assert edits() == [429, 429, 200]
    assert "**#1** accepted" in fake.replies(sent)[-1]
    assert RATE_LIMITS.retries["ack"] - retries == 2


async def test_a_final_status_edit_meeting_a_rate_limit_is_sent_again_after_the_result(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with running_bot(fake, make_config(tmp_path, rate_limit_max_wait_seconds=CAP_S), hold_at=1) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="rain", iterations=4)
        await eventually(lambda: status_message(fake, 1)["id"] != "0", 30.0, "the status message")
        fake.rate_limit_for("PATCH", rf"/messages/{status_message(fake, 1)['id']}$", 600.0, retry_after=60.0)
        h.gate.release()
        await eventually(lambda: any(r.status == 429 for r in status_edits(fake, 1, "done")), 30.0, "a refused edit")
        await eventually(lambda: fake.results(1), 30.0, "the result, posted meanwhile")
        fake.clear_faults()  # the limit passes
        await eventually(lambda: "✅ done" in status_message(fake, 1)["content"], 30.0, "the final edit")
        await h.settled()
    assert status_message(fake, 1)["components"] == []  # the Cancel button is gone


async def test_a_status_message_meeting_a_rate_limit_is_posted_once_the_limit_passes(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with running_bot(fake, make_config(tmp_path, rate_limit_max_wait_seconds=CAP_S), run_jobs=False) as h:
        fake.rate_limit_for("POST", CHANNEL_POSTS, 600.0, retry_after=60.0)
        await fake.slash("imagine", user_id=ALICE, prompt="rain")
        await eventually(lambda: any(r.status == 429 for r in fake.requests if r.method == "POST"), 30.0, "a 429")
        fake.clear_faults()
        await eventually(lambda: status_message(fake, 1)["id"] != "0", 30.0, "the status message")
        await eventually(lambda: _status_id(h, 1), 10.0, "its id stored")
    assert len([m for m in fake.channel_messages() if m["content"].startswith("**#1**")]) == 1


async def _status_id(h: Harness, job_id: int) -> int | None:
    return (await h.job(job_id)).status_message_id
