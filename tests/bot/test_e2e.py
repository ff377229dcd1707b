"""End to end: `python -m bot` (real discord.py, real queue and runner, the tiny engine) against the fake Discord.

A test that needs a render to be under way holds it at a step with the process's gate; nothing here
assumes a render is slow or fast.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.support.bot_harness import ALICE, BOB, CAROL, reply_with, status_edits, status_message
from tests.support.bot_process import BOT_TOKEN, BotProcess
from tests.support.fake_discord import FakeDiscord
from tests.support.mediafiles import make_video
from tests.support.waiting import eventually


@pytest.fixture
async def bot(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[BotProcess]:
    process = BotProcess(fake, tmp_path / "data", tmp_path / "bot.log")
    await process.start()
    try:
        yield process
    finally:
        process.gate.release()
        await process.kill()


def job_id_in(ack: str) -> int:
    match = re.search(r"#(\d+)", ack)
    assert match, ack
    return int(match.group(1))


async def ack_of(fake: FakeDiscord, sent: Any, word: str = "accepted") -> str:
    return await reply_with(fake, sent, word, within=60.0)


async def test_imagine_burst_is_acked_in_time_and_results_carry_parameters(fake: FakeDiscord, bot: BotProcess) -> None:
    bot.gate.hold_at(1)  # every job waits after its first iteration until the test lets it go
    long = await fake.slash("imagine", user_id=ALICE, prompt="a lighthouse", iterations=80, seed=11)
    first = job_id_in(await ack_of(fake, long))
    await bot.gate.held()
    progress = await eventually(lambda: status_edits(fake, first, "rendering"), 60.0, "a progress edit")
    assert any(name == "preview.webp" for r in progress for name, _ in r.files)

    bot.gate.release()  # it renders on the CPU while the burst comes in
    burst = [
        await fake.slash("imagine", user_id=u, prompt=f"a lighthouse {n}") for n, u in enumerate([BOB, CAROL, BOB])
    ]
    for sent in [long, *burst]:
        await ack_of(fake, sent)
        assert fake.first_response_at(sent) - sent.sent_at < 3.0
        assert len(fake.token_requests(sent.token)) == 1  # the ack; nothing later touches the token

    results = await eventually(lambda: len(fake.results()) == 4 and fake.results(), 120.0, "four results")
    result = next(m for m in results if m["attachments"][0]["filename"] == f"job-{first}.png")
    assert f"<@{ALICE}>" in result["content"]
    assert "seed 11" in result["content"]
    png = Image.open(io.BytesIO(fake.attachment_bytes(result["attachments"][0])))
    assert png.size == (64, 64)
    assert png.text["text_prompts"] == "a lighthouse"  # the file carries its parameters

    # cancel rights on a running job: another member is refused, the owner stops it and keeps the partial
    bot.gate.hold_at(1)
    stair = await fake.slash("imagine", user_id=ALICE, prompt="an endless stair", iterations=2000)
    stair_id = job_id_in(await ack_of(fake, stair))
    await bot.gate.held()
    await eventually(lambda: "rendering" in status_message(fake, stair_id)["content"], 60.0, "the job to show running")
    other = await fake.click(status_message(fake, stair_id), f"v1:j:{stair_id}:cancel", user_id=BOB)
    assert "only the member" in await ack_of(fake, other, "only")
    own = await fake.click(status_message(fake, stair_id), f"v1:j:{stair_id}:cancel", user_id=ALICE)
    await ack_of(fake, own, "job")
    partial = (await eventually(lambda: fake.results(stair_id), 60.0, "the partial result"))[0]
    assert "partial" in partial["content"]
    assert "cancelled" in status_message(fake, stair_id)["content"]

    logs = bot.logs()
    assert "job" in logs
    assert BOT_TOKEN not in logs
    for sent in [long, *burst]:
        assert sent.token not in logs


async def test_kill_9_then_sigterm_then_restart_delivers_once_and_old_buttons_work(
    fake: FakeDiscord, bot: BotProcess
) -> None:
    quick = await fake.slash("imagine", user_id=ALICE, prompt="a red barn", iterations=10)
    quick_id = job_id_in(await ack_of(fake, quick))
    old_result = (await eventually(lambda: fake.results(quick_id), 60.0, "the first result"))[0]

    def edits() -> list[object]:
        return [r for r in fake.requests if r.method == "PATCH" and "rendering" in (r.payload or {}).get("content", "")]

    bot.gate.hold_at(1)
    slow = await fake.slash("imagine", user_id=BOB, prompt="a slow moon", iterations=120)
    slow_id = job_id_in(await ack_of(fake, slow))
    await bot.gate.held()
    await eventually(edits, 60.0, "the slow job to show running")
    await bot.kill()  # mid-render, no cleanup

    seen = len(edits())
    await bot.start()  # the job resumes (same worker id: its lease is taken back at once), and waits again
    await bot.gate.held()
    await eventually(lambda: len(edits()) > seen, 60.0, "the job to run again")
    bot.stop()  # SIGTERM: checkpoint at the next iteration, give the job back, exit cleanly
    await eventually(lambda: "draining" in bot.logs(), 30.0, "the bot to start draining")
    bot.gate.release()
    assert await bot.exit_code() == 0

    await bot.start()
    await eventually(lambda: fake.results(slow_id), 120.0, "the interrupted job's result")
    reroll = await fake.click(old_result, f"v1:j:{quick_id}:reroll", user_id=CAROL)  # a button from two restarts ago
    new_id = job_id_in(await ack_of(fake, reroll))
    new_result = (await eventually(lambda: fake.results(new_id), 60.0, "the reroll's result"))[0]
    assert f"<@{CAROL}>" in new_result["content"]  # the clicker owns the new job
    assert "a red barn" in new_result["content"]
    assert len(fake.results(slow_id)) == 1  # delivered once
    assert len(fake.results(quick_id)) == 1


async def test_animate_and_style_give_mp4_results(fake: FakeDiscord, bot: BotProcess, tmp_path: Path) -> None:
    clip = await asyncio.to_thread(make_video, tmp_path / "clip.mp4", seconds=1.0, fps=10)
    video = fake.add_file("my clip.mp4", await asyncio.to_thread(clip.read_bytes), "video/mp4")
    animate = await fake.slash("animate", user_id=ALICE, prompt="a tunnel", frames=3, iterations_per_frame=5)
    style = await fake.slash("style", user_id=BOB, video=video, prompt="oil painting", fps=3.0, iterations_per_frame=5)
    ids = [job_id_in(await ack_of(fake, animate)), job_id_in(await ack_of(fake, style))]
    for job_id, owner in zip(ids, (ALICE, BOB), strict=True):
        result = (await eventually(lambda j=job_id: fake.results(j), 120.0, f"job {job_id}'s video"))[0]
        attachment = result["attachments"][0]
        assert attachment["filename"] == f"job-{job_id}.mp4"
        assert fake.attachment_bytes(attachment)[4:8] == b"ftyp"
        assert f"<@{owner}>" in result["content"]
    buttons = [c["custom_id"] for row in fake.results(ids[0])[0]["components"] for c in row["components"]]
    assert buttons == [f"v1:j:{ids[0]}:reroll"]
