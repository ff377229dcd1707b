"""Hostile files named like ordinary ones are refused at submit, before a job exists, with a clear message.

The bot hands every attachment to the engine's checks (bot.attachments.check_member_file); which
containers and still formats the engine accepts is the engine's rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import hostile
from tests.support.bot_harness import ALICE, make_config, running_bot
from tests.support.fake_discord import FakeDiscord
from tests.support.mediafiles import make_video
from tests.support.waiting import eventually

CASES: list[tuple[str, str, Callable[[Path], bytes]]] = [
    ("style", "clip.mp4", hostile.dash_manifest),
    ("style", "clip.mp4", hostile.hls_playlist),
    ("style", "clip.mp4", hostile.ffconcat_script),
    ("imagine", "picture.png", lambda _: hostile.eps_picture()),
    ("imagine", "picture.png", lambda _: hostile.psd_picture()),
]


@pytest.mark.parametrize(("command", "name", "content"), CASES, ids=["dash", "hls", "ffconcat", "eps", "psd"])
async def test_a_hostile_file_with_an_innocent_name_is_refused_before_a_job_exists(
    fake: FakeDiscord, tmp_path: Path, command: str, name: str, content: Callable[[Path], bytes]
) -> None:
    victim = await asyncio.to_thread(make_video, tmp_path / "someone-elses.mp4", seconds=1.0, fps=10)
    upload = fake.add_file(name, content(victim), "video/mp4" if command == "style" else "image/png")
    option = {"video": upload} if command == "style" else {"init_image": upload}
    async with running_bot(fake, make_config(tmp_path), run_jobs=False) as h:
        sent = await fake.slash(command, user_id=ALICE, prompt="oil painting", **option)
        text = (await eventually(lambda: [t for t in fake.replies(sent) if name in t or "accepted" in t], 30.0))[0]
        jobs = await h.count()
    assert str(tmp_path) not in text
    assert jobs == 0
    assert text.startswith(name) or f" {name}" in text
    assert "accepted" not in text
