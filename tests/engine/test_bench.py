"""`python -m engine.bench` on the tiny preset prints one JSON object as its last stdout line."""

from __future__ import annotations

import json

import pytest
import torch

from engine.bench import main
from engine.precision import resolve_precision


def test_bench_prints_valid_json_last(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--model", "tiny", "--clip-model", "tiny", "--size", "64", "48", "--cutn", "2", "--iterations", "1"]
    assert main([*args, "--warmup", "0", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["sec_per_iter"]) == {"median", "min", "max"}
    assert result["sec_per_iter"]["median"] > 0
    assert result["peak_memory_bytes"] > 0
    assert len(result["samples"]) == 1
    assert result["cpu_sec_per_iter"]["median"] > 0
    settings = result["settings"]
    assert settings["size"] == [64, 48]
    assert settings["cutn"] == 2
    assert settings["cut_method"] == "kornia"
    assert settings["dtype"] == resolve_precision("auto", torch.device("cpu")).dtype_name
    assert settings["device"] == "cpu"
    assert settings["torch"]
    assert settings["threads"] == 1


def test_profile_prints_the_costliest_ops_on_stderr_and_keeps_the_json_last(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--model", "tiny", "--clip-model", "tiny", "--size", "32", "32", "--cutn", "1", "--iterations", "1"]
    assert main([*args, "--warmup", "0", "--threads", "1", "--profile", "3"]) == 0
    out, err = capsys.readouterr()
    assert "Self CPU" in err
    assert json.loads(out.strip().splitlines()[-1])["samples"]
