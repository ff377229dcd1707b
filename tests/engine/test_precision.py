"""The precision setting: what `auto` chooses, where the choice is recorded, and that a replay uses it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import precision
from engine.bench import main as bench_main
from engine.cli.main import main as cli_main
from engine.config import VQGAN_CLIP_Config
from engine.generate import image as generate_image
from engine.jobs import JobKind, Progress
from engine.media import ffmpeg
from engine.pipelines import images
from engine.precision import resolve_precision
from engine.renderer import Renderer
from tests.support.images import pixels
from tests.support.specs import tiny_spec

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
BF16_RUNS = precision.bf16_support(CPU).runs
needs_bf16 = pytest.mark.skipif(not BF16_RUNS, reason="bf16 convolutions cannot run on this CPU at all")
TINY_IMAGE = ["image", "--model", "tiny", "--prompts", "a red apple", "--size", "32", "32", "--iterations", "2",
              "--seed", "3", "--cutn", "2"]  # fmt: skip


@pytest.fixture
def fresh_detection() -> Iterator[None]:
    """Detection measured anew in this test, and again as it really is afterwards."""
    precision._cpu_bf16_support.cache_clear()
    yield
    precision._cpu_bf16_support.cache_clear()


def test_fp32_is_fp32_anywhere_and_an_unknown_name_is_refused(tmp_path: Path, tiny_config: VQGAN_CLIP_Config) -> None:
    chosen = resolve_precision("FP32", CPU)
    assert (chosen.name, chosen.dtype, chosen.dtype_name) == ("fp32", torch.float32, "float32")
    with pytest.raises(ValueError, match="precision 'fp16'; choose one of auto, fp32, bf16"):
        resolve_precision("fp16", CPU)
    tiny_config.precision = "half"
    with pytest.raises(ValueError, match="precision 'half'"):  # before any model loads
        generate_image(tmp_path / "a.png", tiny_config, text_prompts="a red apple")


@pytest.mark.parametrize(("ratio", "expected"), [(0.3, "bf16"), (1.7, "fp32")])
def test_auto_takes_native_bf16_only_where_it_measures_faster(
    fresh_detection: None, monkeypatch: pytest.MonkeyPatch, ratio: float, expected: str
) -> None:
    monkeypatch.setattr(precision, "_cpu_native_bf16_missing", lambda: "")
    monkeypatch.setattr(precision, "bf16_time_ratio", lambda: ratio)
    chosen = resolve_precision("auto", CPU)
    assert (chosen.name, chosen.requested) == (expected, "auto")
    assert f"{ratio:.2f}×" in chosen.reason


def test_auto_without_the_bf16_instructions_is_fp32_without_measuring(
    fresh_detection: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"amx_bf16": False, "avx512_bf16": False})
    monkeypatch.setattr(precision, "bf16_time_ratio", lambda: pytest.fail("measured where bf16 is not native"))
    support = precision.bf16_support(CPU)
    assert (support.native, support.faster) == (False, False)
    assert "neither avx512_bf16 nor amx_bf16" in support.reason
    assert resolve_precision("auto", CPU).name == "fp32"


_UNDER_A_CAP = """
import logging, torch
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from engine.precision import bf16_support
from engine.renderer import Renderer
support = bf16_support(torch.device("cpu"))
print("native", support.native, "|", support.reason)
for _ in range(2):
    print("auto", Renderer("cpu").context.precision.name)
print("forced", Renderer("cpu", precision="bf16").context.precision.name)
"""


@pytest.mark.parametrize("cap", ["ONEDNN_MAX_CPU_ISA=AVX2", "DNNL_MAX_CPU_ISA=AVX512_CORE"])
def test_an_isa_cap_without_bf16_makes_auto_fp32_and_a_forced_bf16_says_it_is_slow(cap: str) -> None:
    # the CPU's flags still say avx512_bf16 under these caps; oneDNN does not use it
    variable, value = cap.split("=")
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **{variable: value})
    result = subprocess.run(
        [sys.executable, "-c", _UNDER_A_CAP], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "native False" in result.stdout
    assert result.stdout.count("auto fp32") == 2
    assert "forced bf16" in result.stdout
    assert result.stderr.count("INFO cpu computes in fp32 (auto)") == 1  # once per device and choice
    assert "WARNING cpu: bf16 is emulated here" in result.stderr
    if precision.cpu_flags()["avx512_bf16"] or precision.cpu_flags()["amx_bf16"]:
        assert f"capped at {value}" in result.stdout


def test_png_jpg_and_mp4_record_the_precision_they_were_rendered_in(renderer: Renderer, tmp_path: Path) -> None:
    chosen = renderer.context.precision
    renderer.render(tiny_spec(iterations=1), tmp_path / "a.png")
    renderer.render(tiny_spec(iterations=1), tmp_path / "a.jpg")
    video = Renderer("cpu", max_frames=2)
    video.render(tiny_spec(kind=JobKind.ANIMATION, frames=2, iterations=1, zoom=1.1), tmp_path / "a.mp4")
    recorded = [
        images.read_params(tmp_path / "a.png"),
        images.read_params(tmp_path / "a.jpg"),
        json.loads(ffmpeg.read_tags(tmp_path / "a.mp4")["comment"]),
    ]
    for params in recorded:
        assert params["dtype"] == chosen.dtype_name
        assert params["precision"]["requested"] == "auto"
        assert params["precision"]["threads"] == torch.get_num_threads()


def test_the_bench_json_says_what_it_computed_in(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--model", "tiny", "--clip-model", "tiny", "--size", "32", "32", "--cutn", "1", "--iterations", "1"]
    assert bench_main([*args, "--warmup", "0", "--threads", "1", "--precision", "fp32"]) == 0
    settings = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["settings"]
    assert (settings["dtype"], settings["precision"]["requested"]) == ("float32", "fp32")
    if BF16_RUNS:  # --bf16 is the old spelling of --precision bf16
        assert bench_main([*args, "--warmup", "0", "--threads", "1", "--bf16"]) == 0
        settings = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["settings"]
        assert (settings["dtype"], settings["precision"]["requested"]) == ("bfloat16", "bf16")


@needs_bf16
def test_a_replay_renders_in_the_recorded_precision_unless_told_otherwise(tmp_path: Path) -> None:
    made, again, other = tmp_path / "bf16.png", tmp_path / "again.png", tmp_path / "fp32.png"
    assert cli_main([*TINY_IMAGE, "--precision", "bf16", "--output", str(made)]) == 0
    assert cli_main(["image", "--replay", str(made), "--output", str(again)]) == 0
    assert cli_main(["image", "--replay", str(made), "--precision", "fp32", "--output", str(other)]) == 0
    assert images.read_params(again)["dtype"] == "bfloat16"
    assert np.array_equal(pixels(made), pixels(again))
    assert images.read_params(other)["dtype"] == "float32"


@needs_bf16
def test_the_seed_api_takes_the_precision_from_its_config(tmp_path: Path, tiny_config: VQGAN_CLIP_Config) -> None:
    tiny_config.precision = "bf16"
    generate_image(tmp_path / "a.png", tiny_config, text_prompts="a red apple", iterations=1)
    assert images.read_params(tmp_path / "a.png")["dtype"] == "bfloat16"


@needs_bf16
def test_a_job_resumed_in_another_precision_continues_and_says_its_result_will_differ(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = tiny_spec(iterations=3)
    saved: list[bytes] = []
    cancel = threading.Event()

    def on_progress(p: Progress) -> None:
        saved.append(p.checkpoint())
        cancel.set()

    Renderer("cpu", precision="bf16").render(spec, tmp_path / "part.png", on_progress=on_progress, cancel=cancel)
    with caplog.at_level(logging.WARNING, logger="engine"):
        resumed = Renderer("cpu", precision="fp32").render(spec, tmp_path / "a.png", resume=saved[0])
    assert (resumed.steps_done, resumed.partial) == (3, False)
    assert "resuming a job started in bfloat16 in float32" in caplog.text
