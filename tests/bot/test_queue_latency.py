"""A smoke run of the queue benchmark: it runs end to end and prints its numbers."""

from __future__ import annotations

import re

import pytest

from benchmarks.queue_latency import bench


async def test_the_benchmark_prints_latency_and_loop_lag(capsys: pytest.CaptureFixture[str]) -> None:
    await bench(jobs=40, members=6, renderer="fake", run_s=0.6, guilds=2)
    out = capsys.readouterr().out
    assert re.search(r"submit \(40 jobs, 6 members, 2 busy servers\): p50 [\d.]+ ms, p99 [\d.]+ ms", out)
    # nothing has run yet, so every server's usage is 0: behind the first job of each busy server, not their 40
    assert "a small server's first job: position 3 of 41" in out
    assert re.search(r"snapshot of 40 jobs", out)
    assert re.search(r"loop lag: p50 [\d.]+ ms, p99 [\d.]+ ms", out)
