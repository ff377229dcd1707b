"""The real bot against the fake Discord, with an in-memory queue (no torch): the Discord side in detail."""

from __future__ import annotations

from pathlib import Path

from tests.bot.conftest import make_config, running_bot
from tests.bot.fake_discord import FakeDiscord
from tests.bot.memory_queue import MemoryQueue

ALICE, BOB, MOD = 111111111111111111, 222222222222222222, 333333333333333333


async def test_imagine_acks_posts_status_and_result(fake: FakeDiscord, tmp_path: Path) -> None:
    queue = MemoryQueue(tmp_path)
    async with running_bot(fake, queue, make_config(tmp_path)):
        sent = await fake.slash("imagine", user_id=ALICE, prompt="a lighthouse", width=64, height=64)
        await fake.wait_for(lambda: fake.results(1), 20.0, "the result message")
        print([r.path for r in fake.requests])
        print(fake.replies(sent))
        print(fake.channel_messages())
