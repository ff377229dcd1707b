"""`python -m engine image`: the issue's done-when, replay, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli.main import main
from tests.support.images import pixels

ROOT = Path(__file__).resolve().parents[2]
DONE_WHEN = ["image", "--model", "tiny", "--prompts", "a red apple:1 | blurry:-0.5", "--size", "64", "64",
             "--iterations", "5", "--seed", "7", "--cutn", "4"]  # fmt: skip


def test_done_when_in_a_real_process(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "engine", *DONE_WHEN, "--output", str(tmp_path / "out.png")],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "pkg_resources" not in result.stderr
    assert "seed 7" in result.stdout
    with Image.open(tmp_path / "out.png") as img:
        assert img.size == (64, 64)
        assert img.text["text_prompts"] == "a red apple:1 | blurry:-0.5"
        assert img.text["seed"] == "7"


def test_twice_same_other_seed_differs_and_replay_matches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = [tmp_path / f"{n}.png" for n in ("a", "b", "c", "replay")]
    assert main([*DONE_WHEN, "--output", str(out[0])]) == 0
    assert main([*DONE_WHEN, "--output", str(out[1])]) == 0
    assert main([*DONE_WHEN[:-4], "--seed", "8", "--cutn", "4", "--output", str(out[2])]) == 0
    assert main(["image", "--replay", str(out[0]), "--output", str(out[3])]) == 0
    first = pixels(out[0])
    assert np.array_equal(first, pixels(out[1]))
    assert not np.array_equal(first, pixels(out[2]))
    assert np.array_equal(first, pixels(out[3]))


def test_replay_flags_override_the_saved_ones(tmp_path: Path) -> None:
    assert main([*DONE_WHEN, "--iterations", "1", "--output", str(tmp_path / "a.png")]) == 0
    assert (
        main(["image", "--replay", str(tmp_path / "a.png"), "--size", "48", "32", "--output", str(tmp_path / "b.png")])
        == 0
    )
    with Image.open(tmp_path / "b.png") as img:
        assert img.size == (48, 32)
        assert img.text["seed"] == "7"
        assert img.text["iterations"] == "1"


def test_replay_fails_clearly_when_an_input_changed_or_went(
    tmp_path: Path, picture: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["image", "--model", "tiny", "--image-prompts", str(picture), "--size", "32", "32", "--iterations", "1",
            "--cutn", "2", "--seed", "3"]  # fmt: skip
    assert main([*args, "--output", str(tmp_path / "a.png")]) == 0
    capsys.readouterr()
    Image.new("RGB", (8, 8)).save(picture)
    assert main(["image", "--replay", str(tmp_path / "a.png"), "--output", str(tmp_path / "b.png")]) == 2
    assert "has changed" in capsys.readouterr().err
    picture.unlink()
    assert main(["image", "--replay", str(tmp_path / "a.png"), "--output", str(tmp_path / "b.png")]) == 2
    err = capsys.readouterr().err
    assert "picture.png is not beside a.png nor in the current directory" in err
    assert "--image-prompts" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["image", "--model", "tiny", "--prompts", "a cat:abc"], "weight must be a number"),
        (["image", "--model", "tiny"], "No valid prompts"),
        (["image", "--model", "tiny", "--clip-model", "ViT-B/32", "--prompts", "x"], "cannot be mixed"),
        (["image", "--model", "tiny", "--prompts", "x", "--optimizer", "SGDX"], "unknown optimizer"),
        (["image", "--model", "tiny", "--prompts", "x", "--cut-method", "fancy"], "invalid choice"),
        (["image", "--model", "tiny", "--prompts", "x", "--size", "2", "2"], "too small"),
        (["image", "--model", "tiny", "--prompts", "x", "--seed", "-1"], "seed"),
        (
            ["image", "--model", "tiny", "--prompts", "x", "--init-image", "/nonexistent.png"],
            "init_image does not exist",
        ),
        (["image", "--replay", "/nonexistent.png"], "does not exist"),
        (["image", "--iterations", "x"], "invalid int value"),
        (["paint"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_a_failing_status(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main([*args, "--output", str(tmp_path / "x.png")] if args[0] == "image" else args)
    err = capsys.readouterr().err
    assert status != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert not (tmp_path / "x.png").exists()
