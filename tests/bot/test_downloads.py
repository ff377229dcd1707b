"""Attachments leave nothing behind in data/downloads: the queue keeps its own copy, a refused job's files go."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.support.bot_harness import ALICE, make_config, reply_with, running_bot
from tests.support.fake_discord import FakeDiscord
from tests.support.files import names_in, read_bytes
from tests.support.images import png_bytes


async def test_an_image_prompt_is_copied_into_the_job_and_the_download_removed(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    picture = fake.add_file("look.png", png_bytes((40, 30)), "image/png")
    async with running_bot(fake, make_config(tmp_path), run_jobs=False) as h:
        sent = await fake.slash("imagine", user_id=ALICE, prompt="a harbour", image_prompt=picture)
        await reply_with(fake, sent, "accepted")
        spec = (await h.job(1)).spec
    copy = spec.image_prompts.replace("\\:", ":")
    assert "inputs" in copy
    assert read_bytes(copy) == png_bytes((40, 30))
    assert names_in(tmp_path / "data" / "downloads") == []


async def test_a_refused_job_leaves_none_of_its_downloads(fake: FakeDiscord, tmp_path: Path) -> None:
    good = fake.add_file("start.png", png_bytes(), "image/png")
    bad = fake.add_file("look.png", b"not an image" * 20, "image/png")
    async with running_bot(fake, make_config(tmp_path), run_jobs=False) as h:
        sent = await fake.slash("imagine", user_id=ALICE, prompt="x", init_image=good, image_prompt=bad)
        assert "look.png" in await reply_with(fake, sent, "look.png")
        limited = await fake.slash("imagine", user_id=ALICE, prompt="x", iterations=101, init_image=good)
        await reply_with(fake, limited, "iterations")
        assert await h.count() == 0
    assert names_in(tmp_path / "data" / "downloads") == []


async def test_downloads_left_by_a_crash_are_removed_at_start(fake: FakeDiscord, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config.downloads_dir.mkdir(parents=True)
    old = config.downloads_dir / "123-init.png"
    old.write_bytes(png_bytes())  # killed between download and submit, an hour ago
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    (config.downloads_dir / "456-init.png").write_bytes(png_bytes())  # another process, downloading now
    async with running_bot(fake, config, run_jobs=False):
        pass
    assert names_in(config.downloads_dir) == ["456-init.png"]
