"""Every command answers within Discord's 3 seconds, checks cheap things first, and makes at most one job.

Slow work is made slow on purpose here (file checks held at a gate, the database held by another
connection), and the test then asserts only the bound Discord imposes: the first answer within 3 s.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.bot_harness import ALICE, BOB, make_config, reply_with, running_bot, status_message
from tests.support.fake_discord import FakeDiscord, SentInteraction
from tests.support.held_checks import HeldFileChecks
from tests.support.mediafiles import make_video
from tests.support.waiting import eventually

NAN, INF = float("nan"), float("inf")


def acked_in_time(fake: FakeDiscord, sent: SentInteraction) -> bool:
    first = fake.first_response_at(sent)
    return first is not None and first - sent.sent_at < 3.0


async def reply(fake: FakeDiscord, sent: SentInteraction, within: float = 10.0) -> str:
    texts = await eventually(lambda: fake.replies(sent), within, "a reply")
    return str(texts[-1])


def raw(name: str, kind: int, value: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "value": value}


@pytest.mark.parametrize(
    ("command", "options", "expected"),
    [
        ("imagine", [raw("height", 4, 0)], "height must be between 16 and 256 (the host's limit), got 0"),
        ("imagine", [raw("width", 4, -5)], "width must be between 16 and 256 (the host's limit), got -5"),
        ("imagine", [raw("width", 4, 300)], "width must be between 16 and 256 (the host's limit), got 300"),
        ("imagine", [raw("iterations", 4, 0)], "iterations must be between 1 and 100 (the host's limit), got 0"),
        ("imagine", [raw("seed", 4, -1)], "seed must be between 0 and 4294967295, got -1"),
        ("animate", [raw("frames", 4, 0)], "frames must be between 2 and 20 (the host's limit), got 0"),
        ("animate", [raw("frames", 4, -3)], "frames must be between 2 and 20"),
        ("animate", [raw("iterations_per_frame", 4, 0)], "iterations must be between 1 and 100"),
        ("animate", [raw("zoom", 10, NAN)], "zoom must be between 0.5 and 2, got nan"),
        ("animate", [raw("zoom", 10, INF)], "zoom must be between 0.5 and 2, got inf"),
    ],
)
async def test_values_out_of_range_are_refused_naming_the_range(
    fake: FakeDiscord, tmp_path: Path, command: str, options: list[dict[str, Any]], expected: str
) -> None:
    async with running_bot(fake, make_config(tmp_path), run_jobs=False) as h:
        sent = await fake.slash(command, user_id=ALICE, prompt="a lake", raw_options=options)
        text = await reply(fake, sent)
        assert await h.count() == 0
    assert expected in text


async def test_style_refuses_non_finite_numbers_before_downloading(fake: FakeDiscord, tmp_path: Path) -> None:
    clip = fake.add_file("clip.mp4", b"never downloaded", "video/mp4")
    async with running_bot(fake, make_config(tmp_path), run_jobs=False) as h:
        fps = await fake.slash("style", user_id=ALICE, video=clip, prompt="ink", raw_options=[raw("fps", 10, INF)])
        weight = await fake.slash(
            "style", user_id=ALICE, video=clip, prompt="ink", raw_options=[raw("source_weight", 10, NAN)]
        )
        texts = [await reply(fake, fps), await reply(fake, weight)]
        assert await h.count() == 0
    assert "fps must be between 0.5 and 30, got inf" in texts[0]
    assert "source_weight must be between 0 and 10, got nan" in texts[1]
    assert fake.downloads == []


async def test_a_burst_of_uploads_beyond_the_cap_is_refused_at_once_while_imagine_is_acked(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    video = await asyncio.to_thread(lambda: make_video(tmp_path / "clip.mp4", seconds=1.0, fps=10).read_bytes())
    clips = [fake.add_file(f"clip{n}.mp4", video, "video/mp4") for n in range(8)]
    checks = HeldFileChecks()
    async with running_bot(fake, make_config(tmp_path), run_jobs=False, file_check=checks) as h:
        burst = [await fake.slash("style", user_id=ALICE, video=clip, prompt="oil", fps=2.0) for clip in clips]
        await checks.busy(2)  # the pool's two threads are decoding (held)
        refusals = [await reply(fake, sent) for sent in burst[3:]]
        other = await fake.slash("imagine", user_id=BOB, prompt="a quick sketch")
        ack = await reply_with(fake, other, "accepted")
        held_then = (checks.running, checks.started)
        checks.release()
        accepted = [await reply_with(fake, sent, "accepted", within=60.0) for sent in burst[:3]]
        jobs = await h.count()
    assert all(acked_in_time(fake, sent) for sent in [*burst, other])
    assert "#" in ack
    for text in refusals:  # refused without being downloaded or checked
        assert "you already have 3 jobs waiting or being checked (the host's limit is 3)" in text
    assert held_then == (2, 2)  # two at once, the third waiting for the pool
    assert checks.most_at_once == 2
    assert checks.threads  # never the event loop's default executor
    assert all(name.startswith("file-check") for name in checks.threads)
    assert len(accepted) == 3
    assert jobs == 4
    assert len(fake.downloads) == 3  # the five over the cap were never downloaded
    assert checks.started == 3


def hold_database(path: Path, seconds: float, held: threading.Event) -> None:
    """Another process's long write: the database's write lock, taken and kept for `seconds`."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_commands_are_acked_in_time_while_another_connection_holds_the_database(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    async with running_bot(fake, config, run_jobs=False) as h:
        await reply_with(fake, await fake.slash("imagine", user_id=ALICE, prompt="before"), "accepted")
        held = threading.Event()
        holder = asyncio.create_task(asyncio.to_thread(hold_database, config.data_dir / "jobs.sqlite3", 5.0, held))
        await asyncio.to_thread(held.wait, 10.0)
        during = [
            await fake.slash("imagine", user_id=BOB, prompt="during the lock"),
            await fake.slash("cancel", user_id=ALICE, job=1),
            await fake.slash("queue", user_id=BOB),
            await fake.slash("job", user_id=BOB, id=1),
            await fake.slash(
                "settings", subcommand="set", user_id=ALICE, permissions=1 << 5, setting="max_size", value="128"
            ),
        ]
        await eventually(lambda: all(fake.first_response_at(s) for s in during), 10.0, "every first answer")
        still_locked = not holder.done()
        await holder
        texts = [await reply(fake, sent, within=30.0) for sent in during]
        jobs = [await h.job(n) for n in range(1, await h.count() + 1)]
    assert still_locked
    assert all(acked_in_time(fake, sent) for sent in during)
    assert "accepted" in texts[0]
    assert "Cancelled job **#1**" in texts[1]
    assert "job(s)** from this server" in texts[2]
    assert "before" in texts[3]
    assert "`max_size`: 128" in texts[4]
    assert [j.spec.text_prompts for j in jobs] == ["before", "during the lock"]  # made once


async def test_one_interaction_makes_one_job_whatever_happens_to_its_ack(fake: FakeDiscord, tmp_path: Path) -> None:
    fake.fail("POST", r"/interactions/\d+/[^/]+/callback", 404, {"code": 10062, "message": "Unknown interaction"})
    async with running_bot(fake, make_config(tmp_path), run_jobs=False) as h:
        lost = await fake.slash("imagine", user_id=ALICE, prompt="the ack is lost")
        await eventually(lambda: status_message(fake, 1)["id"] != "0", 10.0, "the status message")
        await fake.replay(lost)  # the same interaction again (a resumed gateway, a retry)
        ok = await fake.slash("imagine", user_id=BOB, prompt="an ordinary one")
        await reply_with(fake, ok, "accepted")
        await fake.replay(ok)
        await eventually(lambda: len(fake.token_requests(ok.token)) >= 2, 10.0, "the second answer attempt")
        await h.settled()
        jobs = await h.count()
    statuses = [m for m in fake.channel_messages() if m["content"].startswith("**#")]
    assert jobs == 2
    assert sorted(m["content"][:4] for m in statuses) == ["**#1", "**#2"]  # one status message each
