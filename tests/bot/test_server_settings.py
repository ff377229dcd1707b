"""/settings: a server's admins lower its limits, pick its channels, role, model and blocked words; others cannot.

The host's values (the bot's environment) are every server's defaults and ceilings. A change holds in
its own server only, survives a restart (it is in the database), and `show` says where each value
comes from.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import BotConfig
from bot.errors import BadInput
from bot.server_settings import blocked, effective, parse
from tests.support.bot_harness import ALICE, BOB, CAROL, DAVE, make_config, reply_with, running_bot
from tests.support.fake_discord import ADMINISTRATOR, MANAGE_GUILD, MANAGE_MESSAGES, FakeDiscord, SentInteraction
from tests.support.waiting import eventually


async def reply(fake: FakeDiscord, sent: SentInteraction) -> str:
    texts = await eventually(lambda: fake.replies(sent), 10.0, "a reply")
    return str(texts[-1])


async def settings(
    fake: FakeDiscord, what: str, *, user_id: int = ALICE, permissions: int = MANAGE_GUILD, **options: object
) -> str:
    sent = await fake.slash("settings", subcommand=what, user_id=user_id, permissions=permissions, **options)
    return await reply(fake, sent)


async def test_only_members_who_manage_the_server_may_use_settings(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path), run_jobs=False):
        member = await settings(fake, "show", user_id=BOB, permissions=0)
        moderator = await settings(
            fake, "set", user_id=BOB, permissions=MANAGE_MESSAGES, setting="max_size", value="64"
        )
        admin = await settings(fake, "set", user_id=CAROL, permissions=ADMINISTRATOR, setting="max_size", value="64")
        manager = await settings(fake, "show", user_id=ALICE)
    for refused in (member, moderator):
        assert "only members with the Manage Server or Administrator permission" in refused
    assert "Changed for this server: `max_size`: 64 · this server (host limit 256)" in admin
    assert "`max_size`: 64 · this server (host limit 256)" in manager
    assert "`max_iterations`: 100 · host default" in manager
    assert "`channels`: every channel · host default" in manager
    assert int(fake.commands["settings"]["default_member_permissions"]) == MANAGE_GUILD  # hidden from the others


async def test_a_lowered_limit_holds_in_its_server_only_and_survives_a_restart(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    async with running_bot(fake, config, run_jobs=False) as h:
        assert "64" in await settings(fake, "set", setting="max_size", value="64")
        assert "10" in await settings(fake, "set", setting="max_iterations", value="10")
        here = await fake.slash("imagine", user_id=BOB, prompt="x", width=128)
        assert "width must be between 16 and 64 (this server's limit), got 128" in await reply(fake, here)
        steps = await fake.slash("imagine", user_id=BOB, prompt="x", iterations=20)
        assert "iterations must be between 1 and 10 (this server's limit), got 20" in await reply(fake, steps)
        there = await fake.slash(
            "imagine", user_id=DAVE, guild_id=fake.second_guild_id, prompt="x", width=128, iterations=20
        )
        await reply_with(fake, there, "accepted")
        assert await h.count() == 1
    async with running_bot(fake, config, run_jobs=False):
        again = await fake.slash("imagine", user_id=BOB, prompt="x", width=100)
        assert "this server's limit" in await reply(fake, again)
        assert "`max_size`: 256 · host default" in await settings(fake, "reset", setting="max_size")
        back = await fake.slash("imagine", user_id=BOB, prompt="x", width=100)
        await reply_with(fake, back, "accepted")


async def test_a_limit_above_the_hosts_is_refused_naming_it(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path, max_video_seconds=5.0), run_jobs=False):
        size = await settings(fake, "set", setting="max_size", value="1000")
        frames = await settings(fake, "set", setting="max_frames", value="21")
        seconds = await settings(fake, "set", setting="max_video_seconds", value="9")
        queued = await settings(fake, "set", setting="max_queued_per_member", value="50")
        words = await settings(fake, "set", setting="max_size", value="big")
        nan = await settings(fake, "set", setting="max_video_seconds", value="nan")
        shown = await settings(fake, "show")
    assert "max_size can be at most 256 (the host's limit); got 1000" in size
    assert "max_frames can be at most 20 (the host's limit); got 21" in frames
    assert "max_video_seconds can be at most 5 seconds (the host's limit); got 9" in seconds
    assert "max_queued_per_member can be at most 3 (the host's limit); got 50" in queued
    assert "max_size must be a whole number from 16 to 256" in words
    assert "more than 0 and at most 5 seconds" in nan
    assert "`max_size`: 256 · host default" in shown  # nothing was stored


async def test_blocked_words_refuse_whole_words_of_any_case_without_repeating_the_list(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with running_bot(fake, make_config(tmp_path), run_jobs=False) as h:
        await settings(fake, "set", setting="blocked_words", value="Gore, red wine")
        refused = []
        for prompt in ("a GORE scene", "gore:2 | calm", "a glass of Red Wine"):
            refused.append(await reply(fake, await fake.slash("imagine", user_id=BOB, prompt=prompt)))
        for prompt in ("a gorey ocean", "a red winery", "gorge"):  # part of a longer word: allowed
            await reply_with(fake, await fake.slash("imagine", user_id=BOB, prompt=prompt), "accepted")
        elsewhere = await fake.slash("imagine", user_id=DAVE, guild_id=fake.second_guild_id, prompt="gore")
        await reply_with(fake, elsewhere, "accepted")
        shown = await settings(fake, "show")
        jobs = await h.count()
    for text in refused:
        assert "uses a word this server does not allow" in text
        assert "gore" not in text.lower()
        assert "wine" not in text.lower()
    assert jobs == 4
    assert "`gore`, `red wine`" in shown


async def test_a_finished_jobs_button_follows_the_servers_rules_of_today(fake: FakeDiscord, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_bot(fake, config):
        await fake.slash("imagine", user_id=ALICE, prompt="a storm at sea", width=128, height=128)
        result = (await eventually(lambda: fake.results(1), 20.0, "the result"))[0]
        await settings(fake, "set", setting="blocked_words", value="storm")
        reroll = await fake.click(result, "v1:j:1:reroll", user_id=BOB)
        assert "does not allow" in await reply_with(fake, reroll, "allow")
        await settings(fake, "reset", setting="blocked_words")
        await settings(fake, "set", setting="max_size", value="64")
        vary = await fake.click(result, "v1:j:1:vary", user_id=BOB)
        assert "this server's limit" in await reply_with(fake, vary, "limit")


async def test_channels_role_and_model_are_the_servers_own(fake: FakeDiscord, tmp_path: Path) -> None:
    config = make_config(tmp_path, models=("tiny", "tiny2"), moderator_role=None)
    async with running_bot(fake, config, run_jobs=False) as h:
        assert "<#" in await settings(fake, "set", setting="channels", value=f"<#{fake.other_channel_id}>")
        wrong = await fake.slash("imagine", user_id=BOB, prompt="x")
        assert f"use <#{fake.other_channel_id}>" in await reply(fake, wrong)
        foreign = await settings(fake, "set", setting="channels", value=str(fake.second_channel_id))
        right = await fake.slash("imagine", user_id=BOB, prompt="x", channel_id=fake.other_channel_id)
        await reply_with(fake, right, "accepted")
        there = await fake.slash("imagine", user_id=DAVE, guild_id=fake.second_guild_id, prompt="x")
        await reply_with(fake, there, "accepted")

        await settings(fake, "set", setting="default_model", value="tiny2")
        unknown = await settings(fake, "set", setting="default_model", value="gpt")
        later = await fake.slash("imagine", user_id=BOB, prompt="x", channel_id=fake.other_channel_id)
        await reply_with(fake, later, "accepted")
        there_later = await fake.slash("imagine", user_id=DAVE, guild_id=fake.second_guild_id, prompt="y")
        await reply_with(fake, there_later, "accepted")

        no_role_yet = await fake.slash("cancel", user_id=CAROL, moderator=True, channel_id=fake.other_channel_id, job=1)
        refused = await reply(fake, no_role_yet)
        await settings(fake, "set", setting="moderator_role", value="Render Mods")
        no_role = await settings(fake, "set", setting="moderator_role", value="Nobody")
        modded = await fake.slash("cancel", user_id=CAROL, moderator=True, channel_id=fake.other_channel_id, job=1)
        await reply_with(fake, modded, "Cancelled")
        shown = await settings(fake, "show")
        models = [(await h.job(n)).spec.vqgan_model for n in range(1, 5)]
    assert "is not a channel of this server" in foreign
    assert models == ["tiny", "tiny", "tiny2", "tiny"]  # the second server keeps the host's default
    assert "unknown model 'gpt'" in unknown
    assert "only the member" in refused
    assert "no role named 'Nobody'" in no_role
    assert f"<@&{fake.moderator_role_id}> · this server" in shown
    assert "`default_model`: tiny2 · this server" in shown
    assert f"<#{fake.other_channel_id}> · this server" in shown


def test_values_are_normalised_and_stored_limits_never_pass_the_hosts() -> None:
    config = BotConfig(data_dir=Path("unused"), max_size=256, allowed_channels=(123456789012345678,))
    assert parse("blocked_words", " Gore,  RED   wine,gore ,", config) == "gore,red wine"
    assert parse("max_video_seconds", "2.50", config) == "2.5"
    with pytest.raises(BadInput, match="not one of the host's allowed channels"):
        parse("channels", "<#223456789012345678>", config)
    with pytest.raises(BadInput, match="at least 16"):
        parse("max_size", "0", config)
    limits = effective(config, {"max_size": "400", "blocked_words": "gore"})  # the host lowered its limit since
    assert limits.max_size == 256
    assert blocked("GORE!", limits.blocked_words)
    assert not blocked("gorey", limits.blocked_words)
