"""Two servers, one bot: each server's jobs stay its own (look-ups, moderators, buttons), and servers share the GPU fairly.

The fake Discord has two guilds with the bot in both: ALICE, BOB and CAROL are in the first, DAVE and
ERIN in the second (CAROL in both). A job of the other server must answer exactly like a job that does
not exist: no text, file or button that tells it is there.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.bot_harness import ALICE, BOB, CAROL, DAVE, ERIN, make_config, reply_with, running_bot
from tests.support.fake_discord import ADMINISTRATOR, MANAGE_MESSAGES, FakeDiscord, SentInteraction
from tests.support.waiting import eventually

MISSING = "there is no job #"


def answered_in_time(fake: FakeDiscord, sent: SentInteraction) -> bool:
    first = fake.first_response_at(sent)
    return first is not None and first - sent.sent_at < 3.0


async def only_reply(fake: FakeDiscord, sent: SentInteraction) -> str:
    texts = await eventually(lambda: fake.replies(sent), 10.0, "a reply")
    return str(texts[-1])


async def test_another_servers_job_answers_job_exactly_like_a_missing_one(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path)):
        await fake.slash("imagine", user_id=ALICE, prompt="a secret garden", seed=4)
        await eventually(lambda: fake.results(1), 20.0, "the result")
        own = await fake.slash("job", user_id=BOB, id=1)  # a member of the job's server sees it, file and all
        await reply_with(fake, own, "secret garden")
        other = await fake.slash("job", user_id=DAVE, guild_id=fake.second_guild_id, id=1)
        nowhere = await fake.slash("job", user_id=DAVE, guild_id=fake.second_guild_id, id=987)
        other_text, nowhere_text = await only_reply(fake, other), await only_reply(fake, nowhere)
        both = await fake.slash("job", user_id=CAROL, guild_id=fake.second_guild_id, id=1)  # in both servers
        both_text = await only_reply(fake, both)

    assert fake.token_requests(own.token)[0].files  # the result file, for its own server
    assert other_text == nowhere_text.replace("987", "1") == f"{MISSING}1"
    assert both_text == other_text  # asked from the other server, a member of both gets the same answer
    for sent in (other, both):
        (callback,) = fake.token_requests(sent.token)
        assert callback.files == []
        assert not callback.payload["data"].get("components")
        assert "secret" not in str(callback.payload)


async def test_queue_lists_this_servers_jobs_and_counts_the_others_without_their_prompts(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with running_bot(fake, make_config(tmp_path), run_jobs=False):
        for prompt in ("alice's private idea", "alice's second idea"):
            await reply_with(fake, await fake.slash("imagine", user_id=ALICE, prompt=prompt), "accepted")
        empty_here = await fake.slash("queue", user_id=DAVE, guild_id=fake.second_guild_id)
        before = await only_reply(fake, empty_here)
        dave = await fake.slash("imagine", user_id=DAVE, guild_id=fake.second_guild_id, prompt="dave's lake")
        ack = await reply_with(fake, dave, "accepted")
        listing = await fake.slash("queue", user_id=DAVE, guild_id=fake.second_guild_id)
        after = await only_reply(fake, listing)
        first = await fake.slash("queue", user_id=BOB)
        first_text = await only_reply(fake, first)

    for text in (before, after):
        assert "alice" not in text
        assert str(ALICE) not in text
    assert "2 job(s) from other servers" in before
    # servers first: the second server has used nothing, so its job comes right after the first server's first
    assert "position 2" in ack
    assert "**1 job(s)** from this server" in after
    assert "2. #3" in after
    assert "and 2 from other servers" in after
    assert "dave" not in first_text
    assert "1. #1" in first_text
    assert "3. #2" in first_text


async def test_a_moderator_or_admin_of_another_server_cannot_cancel_a_job(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path), run_jobs=False) as h:
        await reply_with(fake, await fake.slash("imagine", user_id=ALICE, prompt="a cat"), "accepted")
        second = fake.second_guild_id
        tries = [
            await fake.slash("cancel", user_id=DAVE, guild_id=second, moderator=True, job=1),  # the role there
            await fake.slash("cancel", user_id=DAVE, guild_id=second, permissions=ADMINISTRATOR, job=1),
            await fake.slash("cancel", user_id=ERIN, guild_id=second, permissions=MANAGE_MESSAGES, job=1),
            await fake.slash("cancel", user_id=ALICE, guild_id=second, job=1),  # even the owner, from elsewhere
        ]
        replies = [await only_reply(fake, sent) for sent in tries]
        latest = await fake.slash("cancel", user_id=CAROL, guild_id=second)  # her latest: none in this server
        latest_text = await only_reply(fake, latest)
        still = (await h.job(1)).state
        mod = await fake.slash("cancel", user_id=BOB, moderator=True, job=1)  # a moderator of its own server
        await reply_with(fake, mod, "job")
        after = (await h.job(1)).state
    assert replies == [f"{MISSING}1"] * 4
    assert "no queued or running job in this server" in latest_text
    assert still == "queued"
    assert after == "cancelled"


async def test_forged_button_ids_are_answered_in_time_and_do_nothing_outside_their_server(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    async with running_bot(fake, config):
        await fake.slash("imagine", user_id=ALICE, prompt="a private portrait", seed=1)
        await eventually(lambda: fake.results(1), 20.0, "the result")
    async with running_bot(fake, config, run_jobs=False) as h:
        dave = await fake.slash("imagine", user_id=DAVE, guild_id=fake.second_guild_id, prompt="a lake")
        await reply_with(fake, dave, "accepted")
        there = await eventually(lambda: fake.channel_messages(fake.second_channel_id)[-1:], 10.0, "a message there")
        forged = [f"v1:j:1:{action}" for action in ("cancel", "reroll", "vary", "animate", "upscale")]
        forged += ["v1:j:99999999999999999999:reroll", "v1:j:0:vary", "v1:j:1:delete", "v2:anything", "x" * 100]
        clicks = [
            await fake.click(fake.with_button(there[0], custom_id), custom_id, user_id=DAVE, permissions=ADMINISTRATOR)
            for custom_id in forged
        ]
        replies = [await only_reply(fake, sent) for sent in clicks]
        jobs = await h.count()
        first = await h.job(1)
    assert all(answered_in_time(fake, sent) for sent in clicks)
    assert replies[:5] == [f"{MISSING}1"] * 5
    assert replies[5] == f"{MISSING}99999999999999999999"
    assert replies[6] == f"{MISSING}0"
    assert "no longer supported" in replies[7].lower()
    assert replies[8] == replies[9] == "This button is no longer supported."
    assert jobs == 2  # Alice's and Dave's: no forged click made a job
    assert (first.state, first.owner.guild_id) == ("done", fake.guild_id)
    assert not any("portrait" in str(r.payload) for sent in clicks for r in fake.token_requests(sent.token))


async def test_a_small_servers_job_does_not_wait_behind_a_big_servers_backlog(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with running_bot(fake, make_config(tmp_path), hold_at=1) as h:
        await reply_with(fake, await fake.slash("imagine", user_id=ALICE, prompt="first"), "accepted")
        await h.gate.held()  # job 1 renders (and is held): the first server is using the GPU
        for member in (ALICE, BOB, CAROL):
            for n in range(2):
                sent = await fake.slash("imagine", user_id=member, prompt=f"backlog {n}")
                await reply_with(fake, sent, "accepted")
        small = await fake.slash("imagine", user_id=DAVE, guild_id=fake.second_guild_id, prompt="small")
        ack = await reply_with(fake, small, "accepted")
        order = [e.job.id for e in await h.queue.snapshot()]
        h.gate.release()
        await eventually(
            lambda: len(fake.results()) == 7 and fake.results(channel_id=fake.second_channel_id), 60.0, "all"
        )
        jobs = [await h.job(n) for n in range(1, 9)]
    assert "position 1" in ack  # next, ahead of the six the first server queued before it
    assert order[:2] == [1, 8]
    started = sorted(jobs, key=lambda j: j.started_at or 0.0)
    assert [j.id for j in started[:2]] == [1, 8]
