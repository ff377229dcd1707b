"""Start-up: the configured model is loaded before the first job, and global commands are synced only when changed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.__main__ import build_renderer
from tests.support.bot_harness import make_config, running_bot
from tests.support.fake_discord import FakeDiscord
from tests.support.waiting import eventually


def test_the_renderer_comes_up_with_the_configured_model_loaded(caplog: pytest.LogCaptureFixture) -> None:
    import torch

    torch.set_num_threads(1)
    with caplog.at_level(logging.INFO):
        build_renderer("cpu", "tiny")
    loads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loading ")]
    assert loads == ["loading VQGAN tiny on cpu", "loading CLIP tiny on cpu"]  # before any job asked for them
    assert any(r.getMessage().startswith("preloaded tiny on cpu in ") for r in caplog.records)


def global_syncs(fake: FakeDiscord) -> int:
    return sum(1 for r in fake.requests if r.method == "PUT" and r.path.endswith(f"/{fake.app_id}/commands"))


async def test_global_commands_are_synced_again_only_when_they_changed_or_when_forced(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    config = make_config(tmp_path, guild_id=None)
    async with running_bot(fake, config, run_jobs=False):
        pass
    assert global_syncs(fake) == 1
    assert "imagine" in fake.commands
    async with running_bot(fake, config, run_jobs=False):
        pass
    assert global_syncs(fake) == 1  # unchanged: no second sync
    async with running_bot(fake, make_config(tmp_path, guild_id=None, force_sync=True), run_jobs=False):
        pass
    assert global_syncs(fake) == 2  # `python -m bot --sync`


async def test_only_the_application_owner_may_sync_commands(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path, guild_id=None), run_jobs=False):
        assert global_syncs(fake) == 1
        member = await fake.slash("sync", user_id=111111111111111111, moderator=True)
        refused = await eventually(lambda: [t for t in fake.replies(member) if "owner" in t], 10.0, "a refusal")
        assert "only the bot's owner" in refused[0]
        assert global_syncs(fake) == 1
        owner = await fake.slash("sync", user_id=fake.owner_id)
        done = await eventually(lambda: [t for t in fake.replies(owner) if "Synced" in t], 10.0, "a reply")
        assert "global" in done[0]
        assert global_syncs(fake) == 2
