"""`python -m engine upscale` and `python -m engine image --timelapse N`."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from engine.cli.main import main
from engine.media import probe
from tests.support.mediafiles import make_video


def test_upscale_a_png_and_a_video(picture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["upscale", "--input", str(picture), "--model", "tiny"]) == 0
    default = picture.with_name("picture_upscaled.png")
    assert f"saved {default} (192x96)" in capsys.readouterr().out
    with Image.open(default) as img:
        assert img.size == (192, 96)
    clip = make_video(tmp_path / "a clip.mp4", seconds=0.5, fps=8, audio="aac")
    out = tmp_path / "out; 'x'.mp4"
    assert main(["upscale", "--input", str(clip), "--model", "tiny", "--tile", "32", "--output", str(out)]) == 0
    info = probe.probe_video(out)
    assert (info.frames, info.width, info.height, info.has_audio) == (4, 128, 96, True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "/nonexistent.png", "--model", "tiny"], "does not exist"),
        (["--input", "NOTES", "--model", "tiny"], "not a video file"),
        (["--input", "PICTURE", "--model", "nope"], "unknown upscaler 'nope'"),
        (["--input", "PICTURE", "--model", "tiny", "--tile", "-2"], "--tile must be 0 or more"),
        (["--input", "PICTURE", "--model", "tiny", "--output", "OUT.mp4"], "written as .png"),
    ],
)
def test_bad_upscale_input_is_one_line(
    args: list[str], message: str, picture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    files = {"NOTES": str(notes), "PICTURE": str(picture), "OUT.mp4": str(tmp_path / "out.mp4")}
    status = main(["upscale", *[files.get(a, a) for a in args]])
    err = capsys.readouterr().err
    assert status != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "picture.png"]


def test_image_timelapse_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "apple.png"
    args = ["image", "--model", "tiny", "--prompts", "an apple", "--size", "64", "64", "--cutn", "4"]
    assert main([*args, "--iterations", "4", "--timelapse", "2", "--seed", "1", "--output", str(out)]) == 0
    timelapse = tmp_path / "apple.timelapse.mp4"
    assert f"saved {timelapse}" in capsys.readouterr().out
    assert probe.probe_video(timelapse).frames == 2
