"""Memory admission as a member and an operator meet it: a job that would not fit is refused at submit."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.__main__ import device_memory, service_config
from bot.queue.admission import largest_fitting
from bot.settings import load_settings
from engine.jobs import JobSpec
from tests.support.bot_harness import ALICE, BOB, make_config, reply_with, running_bot
from tests.support.fake_discord import FakeDiscord
from tests.support.waiting import eventually


async def test_a_job_too_big_for_the_memory_is_refused_naming_the_largest_size_that_fits(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    # the tiny preset's estimate: 0.5 GB + 2e-6 GB per pixel + 0.005 GB per cut; 8 cuts: 30,000 pixels fit in 0.6
    async with running_bot(fake, make_config(tmp_path), memory_gb=0.6) as h:
        big = await fake.slash("imagine", user_id=ALICE, prompt="a lighthouse", width=256, height=256)
        refusal = await reply_with(fake, big, "GB")
        small = await fake.slash("imagine", user_id=BOB, prompt="a lighthouse", width=64, height=64)
        await reply_with(fake, small, "#1")
        await eventually(lambda: fake.results(1), 30.0, "the small job's result")
        assert await h.count() == 1
    assert "256×256" in refusal
    assert "the largest that fits is 160×160" in refusal


def test_the_largest_size_keeps_the_shape_and_counts_the_real_models_figures() -> None:
    # the seed's figures: about 8 GB at 380² with 32 cuts
    assert largest_fitting(JobSpec(width=512, height=512, num_cuts=32), 8.0) == (368, 368)
    assert largest_fitting(JobSpec(width=768, height=384, num_cuts=32), 8.0) == (528, 256)
    assert largest_fitting(JobSpec(width=512, height=512, num_cuts=128), 4.0) is None


def test_engine_memory_gb_sets_the_limit_and_without_it_the_cpu_s_available_ram_is_measured(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    settings = load_settings(
        discord_token="x", engine_device=("cpu",), engine_memory_gb=0.6, bot_data_dir=tmp_path, _env_file=None
    )
    assert service_config(settings).queue.admission.memory_gb == 0.6
    measured, where = device_memory(("cpu",), None)
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    available = int(meminfo["MemAvailable"].split()[0]) / (1 << 20)
    assert where == "the CPU's RAM"
    assert measured is not None
    assert abs(measured - available) < 1.0
