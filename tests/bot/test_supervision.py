"""`python -m bot` under a supervisor: a device that keeps failing makes the process exit with status 3,
its members' other jobs wait in the queue, and the restarted bot renders them."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.bot_harness import ALICE, BOB, CAROL, reply_with
from tests.support.bot_process import BotProcess
from tests.support.fake_discord import FakeDiscord
from tests.support.waiting import eventually


async def test_a_device_in_a_sticky_error_exits_3_keeps_the_other_jobs_and_the_restart_renders_them(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    data, log = tmp_path / "data", tmp_path / "bot.log"
    sick = BotProcess(fake, data, log, VQBOT_TEST_STICKY_ERROR="1", BOT_DEVICE_FAILURE_LIMIT="3")
    sick.gate.hold_at(0)  # nothing renders until every job is in (so the order is the queue's, not the test's)
    await sick.start()
    try:
        sent = [
            await fake.slash("imagine", user_id=u, prompt=f"a lighthouse {n}")
            for n, u in enumerate([ALICE, BOB, CAROL, ALICE])
        ]
        for interaction in sent:
            await reply_with(fake, interaction, "accepted", within=60.0)
        sick.gate.release()
        assert await sick.exit_code(within=120.0) == 3, sick.logs()[-3000:]
    finally:
        await sick.kill()
    failures = [
        m["content"]
        for m in fake.channel_messages()
        if re.search(r"job \*\*#\d+\*\* failed: internal error", m["content"])
    ]
    assert len(failures) == 3  # three members told; the fourth job was not failed for the device
    (waiting,) = {1, 2, 3, 4} - {int(re.search(r"#(\d+)\*\* failed", text).group(1)) for text in failures}  # type: ignore[union-attr]
    assert "device cpu failed 3 jobs in a row" in sick.logs()
    assert "illegal memory access" in sick.logs()

    healthy = BotProcess(fake, data, log)  # the supervisor starts it again; the GPU works after a reset
    await healthy.start()
    try:
        await eventually(lambda: fake.results(waiting), 120.0, "the waiting job's result after the restart")
    finally:
        await healthy.kill()


async def test_a_render_thread_that_hangs_makes_the_bot_exit_4_and_the_job_waits_for_the_restart(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    data, log = tmp_path / "data", tmp_path / "bot.log"
    hung = BotProcess(fake, data, log, VQBOT_TEST_STUCK="1", BOT_STALL_SECONDS="1")
    await hung.start()
    try:
        sent = await fake.slash("imagine", user_id=ALICE, prompt="a lighthouse")
        await reply_with(fake, sent, "accepted", within=60.0)
        assert await hung.exit_code(within=120.0) == 4, hung.logs()[-3000:]
    finally:
        await hung.kill()
    assert "the render thread of job 1 did not stop" in hung.logs()
    healthy = BotProcess(fake, data, log)
    await healthy.start()
    try:
        await eventually(lambda: fake.results(1), 120.0, "the job's result after the restart")
    finally:
        await healthy.kill()
