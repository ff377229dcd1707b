"""Edits in one channel share one pace (about one per second) across jobs; button clicks use their token once."""

from __future__ import annotations

import itertools
from pathlib import Path

from tests.bot.conftest import make_config, running_bot
from tests.bot.fake_discord import FakeDiscord
from tests.bot.test_inprocess import ALICE, BOB, reply_with, status_message


async def test_two_jobs_in_one_channel_share_about_one_edit_per_second(fake: FakeDiscord, tmp_path: Path) -> None:
    config = make_config(tmp_path, preview_seconds=3.0, channel_seconds=1.0)
    async with running_bot(fake, config, step_s=0.1, devices=("cpu:0", "cpu:1")):
        await fake.slash("imagine", user_id=ALICE, prompt="one", iterations=60)  # two devices: both run at once
        await fake.slash("imagine", user_id=BOB, prompt="two", iterations=60)
        await fake.wait_for(lambda: fake.results(1) and fake.results(2), 30.0, "both results")
    ids = {status_message(fake, 1)["id"], status_message(fake, 2)["id"]}
    progress = [
        r
        for r in fake.requests
        if r.method == "PATCH" and r.path.rsplit("/", 1)[1] in ids and "rendering" in r.payload["content"]
    ]
    assert {r.path for r in progress} == {f"/api/v10/channels/{fake.channel_id}/messages/{i}" for i in ids}
    assert len(progress) >= 4
    gaps = [b.at - a.at for a, b in itertools.pairwise(progress)]
    assert min(gaps) >= 0.95  # across both jobs, not per job


async def test_a_button_click_uses_its_token_for_the_ack_only(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path)):
        await fake.slash("imagine", user_id=ALICE, prompt="a bridge")
        first = (await fake.wait_for(lambda: fake.results(1), 20.0, "the result"))[0]
        click = await fake.click(first, "v1:j:1:reroll", user_id=BOB)
        await reply_with(fake, click, "accepted")
        second = (await fake.wait_for(lambda: fake.results(2), 20.0, "the rerolled result"))[0]
    assert f"<@{BOB}>" in second["content"]
    assert "✅ done" in status_message(fake, 2)["content"]  # status and result went through the channel
    used = fake.token_requests(click.token)
    assert [r.method for r in used] == ["POST", "PATCH"]  # the defer, then the ack in its place
