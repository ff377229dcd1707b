"""The metrics endpoint as an operator's Prometheus and health checks read it: over HTTP, from a running bot."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import BotMetrics, record_rate_limit
from bot.metrics_server import MetricsConfig
from bot.queue.api import Renderer
from engine.jobs import Artifact, JobSpec
from storage.records import WorkerRecord
from storage.sqlite.store import SqliteJobStore
from tests.support.bot_harness import ALICE, BOB, DAVE, make_config, reply_with, running_bot
from tests.support.bot_process import BotProcess
from tests.support.fake_discord import FakeDiscord
from tests.support.renderer import FakeRenderer
from tests.support.sockets import free_port, listening
from tests.support.waiting import eventually

ANY_PORT = MetricsConfig(port=0)


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def healthz(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as response:
        return response.status, await response.json()


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_after_a_job_the_endpoint_counts_it_and_shows_queues_per_server_and_disk(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    async with running_bot(fake, config, metrics=ANY_PORT) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="a lighthouse", width=64, height=64)
        await eventually(lambda: fake.results(1), 30.0, "the first result")
        h.gate.hold_at(1)
        await fake.slash("imagine", user_id=ALICE, prompt="a storm")  # runs, held at its first step
        await h.gate.held()
        await reply_with(fake, await fake.slash("imagine", user_id=BOB, prompt="a cat"), "#3")
        second = await fake.slash("imagine", user_id=DAVE, guild_id=fake.second_guild_id, prompt="a dog")
        await reply_with(fake, second, "#4")
        await h.settled()
        samples = await scrape(h.metrics_url)
        status, health = await healthz(h.metrics_url)
        free = shutil.disk_usage(config.data_dir).free

    jobs = {state: sample(samples, "vqbot_jobs", state=state) for state in ("queued", "running", "done", "failed")}
    assert jobs == {"queued": 2, "running": 1, "done": 1, "failed": 0}
    assert sample(samples, "vqbot_queue_length", guild=str(fake.guild_id)) == 1
    assert sample(samples, "vqbot_queue_length", guild=str(fake.second_guild_id)) == 1
    assert sample(samples, "vqbot_jobs_finished_total", state="done") == 1
    assert sample(samples, "vqbot_job_wait_seconds_count") == 2  # the two jobs that have started
    assert sample(samples, "vqbot_job_render_seconds_count", kind="image") == 1
    render_sum = sample(samples, "vqbot_job_render_seconds_sum", kind="image")
    assert render_sum > 0
    assert sample(samples, "vqbot_gpu_seconds_total", device="cpu") == render_sum
    assert abs(sample(samples, "vqbot_disk_free_bytes") - free) < 512 * 1024 * 1024  # other tests write meanwhile
    assert sample(samples, "vqbot_gateway_connected") == 1, [k for k in samples if "gateway" in k[0] or "alive" in k[0]]
    assert sample(samples, "vqbot_device_alive", device="cpu") == 1
    assert (status, health) == (200, {"ok": True, "gateway": True, "devices": {"cpu": True}})


async def test_discord_429s_are_counted_by_route_and_the_bots_retries_through_record_rate_limit(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with running_bot(fake, make_config(tmp_path), metrics=ANY_PORT) as h:
        fake.rate_limit("POST", r"/channels/\d+/messages$", retry_after=0.2, times=1)  # discord.py waits it out
        await fake.slash("imagine", user_id=ALICE, prompt="a lighthouse", width=64, height=64)
        await eventually(lambda: fake.results(1), 30.0, "the result")
        record_rate_limit("PATCH /channels/:id/messages/:id")
        samples = await scrape(h.metrics_url)
    route = "POST /channels/:id/messages"
    assert sample(samples, "vqbot_discord_rate_limits_total", route=route, outcome="waited") == 1
    assert sample(samples, "vqbot_discord_rate_limit_retries_total", route="PATCH /channels/:id/messages/:id") == 1
    routes = [dict(labels)["route"] for name, labels in samples if name.startswith("vqbot_discord")]
    assert routes
    assert not [r for r in routes if re.search(r"\d", r)]


class DeviceLoopKiller(BaseException):
    """Nothing in the runner catches it: the device's loop ends, as after a bug in it."""


class FailingRenderer:
    """The fake renderer, except that "boom" fails (internal error) and "die" ends the device's loop."""

    def __init__(self, inner: FakeRenderer) -> None:
        self.inner = inner

    def render(self, spec: JobSpec, output: Path, **kwargs: Any) -> Artifact:
        if spec.text_prompts == "boom":
            raise RuntimeError("a CUDA fault, say")
        if spec.text_prompts == "die":
            raise DeviceLoopKiller
        return self.inner.render(spec, output, **kwargs)


async def test_a_failure_is_counted_by_kind_and_a_dead_device_turns_healthz_503(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    def renderer(device: str) -> Renderer:
        return FailingRenderer(FakeRenderer(device))

    async with running_bot(fake, make_config(tmp_path), metrics=ANY_PORT, renderer=renderer) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="boom", width=64, height=64)
        await eventually(lambda: any("internal error" in m["content"] for m in fake.channel_messages()), 30.0, "fail")
        await h.settled()
        assert (await healthz(h.metrics_url))[0] == 200
        await fake.slash("imagine", user_id=BOB, prompt="die", width=64, height=64)
        assert h.runner is not None
        await eventually(lambda: not h.runner.device_health()["cpu"], 30.0, "the device loop to end")
        status, health = await healthz(h.metrics_url)
        samples = await scrape(h.metrics_url)
    assert (status, health["devices"], health["gateway"]) == (503, {"cpu": False}, True)
    assert sample(samples, "vqbot_job_failures_total", kind="internal") == 1
    assert sample(samples, "vqbot_device_alive", device="cpu") == 0


async def test_healthz_is_503_while_the_gateway_is_down_and_200_once_it_is_back(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with running_bot(fake, make_config(tmp_path), metrics=ANY_PORT) as h:
        assert (await healthz(h.metrics_url))[0] == 200
        await fake.drop_gateway()
        down = await eventually_status(h.metrics_url, 503)
        fake.identified.clear()
        fake.refuse_gateway = False
        await fake.identified.wait()
        up = await eventually_status(h.metrics_url, 200)
    assert (down["gateway"], up["gateway"]) == (False, True)


async def eventually_status(url: str, want: int) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def check() -> bool:
        status, body = await healthz(url)
        seen[:] = [body]
        return status == want

    await eventually(check, 60.0, f"/healthz {want}")
    return seen[0]


async def test_off_by_default_no_port_opened_and_on_it_binds_127_0_0_1(fake: FakeDiscord, tmp_path: Path) -> None:
    before = listening()
    async with running_bot(fake, make_config(tmp_path / "off")) as h:
        assert h.metrics is None
        opened_when_off = listening() - before
    async with running_bot(fake, make_config(tmp_path / "on"), metrics=ANY_PORT) as h:
        opened_when_on = listening() - before
        assert h.metrics is not None
        port = h.metrics.port
    assert opened_when_off == set()
    assert opened_when_on == {("127.0.0.1", port)}


async def test_python_m_bot_serves_metrics_from_its_settings_and_refuses_what_engine_memory_gb_cannot_hold(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    port = free_port()
    # the tiny preset at 8 cuts needs 0.54 GB + 2e-6 GB per pixel: 0.56 holds 10,000 pixels (96×96 in steps of 16)
    bot = BotProcess(fake, tmp_path / "data", tmp_path / "bot.log", BOT_METRICS_PORT=str(port), ENGINE_MEMORY_GB="0.56")
    await bot.start()
    try:
        assert bot.proc is not None
        assert ("127.0.0.1", port) in listening(bot.proc.pid)
        big = await fake.slash("imagine", user_id=ALICE, prompt="a lighthouse", width=128, height=128)
        refusal = await reply_with(fake, big, "GB", within=60.0)
        await reply_with(fake, await fake.slash("imagine", user_id=BOB, prompt="a cat", width=64, height=64), "#1")
        await eventually(lambda: fake.results(1), 120.0, "the small job's result")
        url = f"http://127.0.0.1:{port}"
        await eventually(lambda: healthy(url), 60.0, "/healthz 200")
        samples = await scrape(url)
    finally:
        await bot.kill()
    assert "the largest that fits is 96×96" in refusal
    assert sample(samples, "vqbot_jobs", state="done") == 1
    assert sample(samples, "vqbot_job_render_seconds_count", kind="image") == 1


async def healthy(url: str) -> bool:
    return (await healthz(url))[0] == 200


async def test_render_workers_seen_in_the_last_day_are_reported_up_or_down(tmp_path: Path) -> None:
    store = await SqliteJobStore.open(tmp_path / "jobs.sqlite3")
    try:
        now = time.time()
        for worker_id, beat in (("gpu-a", now - 5), ("gpu-b", now - 600), ("retired", now - 3 * 86400)):
            await store.upsert_worker(
                WorkerRecord(worker_id=worker_id, host="h", devices=("cuda:0",), started_at=beat, heartbeat_at=beat)
            )
        metrics = BotMetrics(store, tmp_path, lease_s=30.0)
        await metrics.refresh()
        (family,) = [m for m in metrics.collect() if m.name == "vqbot_worker_up"]
        assert {s.labels["worker"]: s.value for s in family.samples} == {"gpu-a": 1.0, "gpu-b": 0.0}
    finally:
        await store.close()
