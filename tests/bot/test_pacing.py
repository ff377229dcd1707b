"""Edits in one channel share one pace (about one per second) across jobs; button clicks use their token once."""

from __future__ import annotations

import itertools
from pathlib import Path

from tests.support.bot_harness import ALICE, BOB, make_config, reply_with, running_bot, status_message
from tests.support.fake_discord import FakeDiscord, Request
from tests.support.waiting import eventually


async def test_two_jobs_in_one_channel_share_about_one_edit_per_second(fake: FakeDiscord, tmp_path: Path) -> None:
    config = make_config(tmp_path, preview_seconds=3.0, channel_seconds=1.0)

    def progress_edits() -> list[Request]:
        ids = {status_message(fake, 1)["id"], status_message(fake, 2)["id"]}
        return [
            r
            for r in fake.requests
            if r.method == "PATCH" and r.path.rsplit("/", 1)[1] in ids and "rendering" in r.payload["content"]
        ]

    async with running_bot(fake, config, hold_at=1, devices=("cpu:0", "cpu:1")) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="one", iterations=60)  # two devices: both run at once
        await fake.slash("imagine", user_id=BOB, prompt="two", iterations=60)
        await h.gate.held(count=2)
        while len(progress_edits()) < 5:  # both jobs move on after every edit, so both always have one waiting
            seen = len(progress_edits())
            h.gate.allow(1)
            await eventually(lambda s=seen: len(progress_edits()) > s, 30.0, "the next progress edit")
        h.gate.release()
        await eventually(lambda: fake.results(1) and fake.results(2), 30.0, "both results")
    progress = progress_edits()
    ids = {status_message(fake, 1)["id"], status_message(fake, 2)["id"]}
    assert {r.path for r in progress} == {f"/api/v10/channels/{fake.channel_id}/messages/{i}" for i in ids}
    assert len(progress) >= 4
    gaps = [b.at - a.at for a, b in itertools.pairwise(progress)]
    assert min(gaps) >= 0.95  # across both jobs, not per job


async def test_a_button_click_uses_its_token_for_the_ack_only(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path)):
        await fake.slash("imagine", user_id=ALICE, prompt="a bridge")
        first = (await eventually(lambda: fake.results(1), 20.0, "the result"))[0]
        click = await fake.click(first, "v1:j:1:reroll", user_id=BOB)
        await reply_with(fake, click, "accepted")
        second = (await eventually(lambda: fake.results(2), 20.0, "the rerolled result"))[0]
        await eventually(lambda: "✅ done" in status_message(fake, 2)["content"], 20.0, "the final status")
    assert f"<@{BOB}>" in second["content"]  # status and result went through the channel
    used = fake.token_requests(click.token)
    assert [r.method for r in used] == ["POST", "PATCH"]  # the defer, then the ack in its place
