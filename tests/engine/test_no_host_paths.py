"""No host path leaves the host: results name their inputs by file name and SHA-256, errors by file name,
and `--replay` finds the inputs again beside the replayed file or in the current directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from engine.cli.main import main
from engine.errors import InvalidJob
from engine.jobs import JobKind, JobSpec
from engine.media import ffmpeg
from engine.pipelines import images
from engine.renderer import Renderer
from tests.support.images import pixels
from tests.support.mediafiles import make_video

TINY = {"vqgan_model": "tiny", "clip_model": "tiny", "num_cuts": 2, "width": 32, "height": 32, "seed": 3}
SECRET = "host-secret-folder"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A folder of the host's holding the inputs, named so that any leak of it is easy to find."""
    folder = tmp_path / SECRET / "inputs"
    folder.mkdir(parents=True)
    Image.fromarray(np.arange(48 * 32 * 3, dtype=np.uint8).reshape(32, 48, 3)).save(folder / "init.png")
    Image.new("RGB", (24, 24), (30, 160, 90)).save(folder / "prompt.jpg")
    return folder


def _needles(tmp_path: Path) -> list[bytes]:
    texts = [str(tmp_path), SECRET]
    return [t.encode(encoding) for t in texts for encoding in ("utf-8", "utf-16-le")]


def assert_no_host_path(tmp_path: Path, *blobs: bytes | str) -> None:
    """No byte of any blob holds the host's folders (UTF-8, or UTF-16 as in EXIF's XP tags)."""
    for blob in blobs:
        data = blob.encode() if isinstance(blob, str) else blob
        for needle in _needles(tmp_path):
            assert needle not in data, f"{needle!r} leaked"


def metadata_of(path: Path) -> str:
    """Every piece of metadata of a result, decoded: PNG text chunks, EXIF, or the MP4's tags."""
    if path.suffix == ".mp4":
        return json.dumps(ffmpeg.read_tags(path))
    with Image.open(path) as img:
        parts = [json.dumps(getattr(img, "text", {}))]
        exif = img.getexif()
        parts += [repr(value) for value in exif.values()]
        parts += [repr(value) for value in exif.get_ifd(0x8769).values()]
        return "\n".join(parts)


def _check_output(tmp_path: Path, path: Path) -> None:
    assert_no_host_path(tmp_path, path.read_bytes(), metadata_of(path))


def test_stills_name_their_inputs_by_name_and_checksum(renderer: Renderer, tmp_path: Path, host: Path) -> None:
    out = tmp_path / "out"
    prompts = f"{host / 'prompt.jpg'}:0.5 | {host / 'init.png'}"
    for suffix in (".png", ".jpg"):
        spec = JobSpec(
            text_prompts="a red apple", image_prompts=prompts, init_image=str(host / "init.png"), iterations=2,
            timelapse_every=1, **TINY,  # type: ignore[arg-type]
        )  # fmt: skip
        artifact = renderer.render(spec, out / f"still{suffix}")
        for path in artifact.paths:
            _check_output(tmp_path, Path(path))
        params = images.read_params(out / f"still{suffix}")
        assert params["files"]["init_image"] == {"name": "init.png", "sha256": images.sha256_file(host / "init.png")}
        assert [f["name"] for f in params["files"]["image_prompts"]] == ["prompt.jpg", "init.png"]
        assert params["prompts"]["image"] == "prompt.jpg:0.5 | init.png"
        assert params["spec"]["init_image"] == "init.png"
    with Image.open(out / "still.png") as img:
        assert (img.text["init_image"], img.text["image_prompts"]) == ("init.png", "prompt.jpg:0.5 | init.png")


def test_videos_name_their_inputs_by_name(renderer: Renderer, tmp_path: Path, host: Path) -> None:
    clip = make_video(host / "clip.mp4", seconds=1, fps=4, audio="aac")
    out = tmp_path / "out"
    animation = JobSpec(
        kind=JobKind.ANIMATION, text_prompts="a forest", image_prompts=str(host / "prompt.jpg"),
        init_image=str(host / "init.png"), iterations=1, frames=2, zoom=1.1, fps=4.0, **TINY,  # type: ignore[arg-type]
    )  # fmt: skip
    style = JobSpec(
        kind=JobKind.STYLE_TRANSFER, text_prompts="oil", image_prompts=str(host / "prompt.jpg"), video=str(clip),
        iterations=1, extraction_fps=2.0, fps=0.0, source_prompt_weight=0.5, **TINY,  # type: ignore[arg-type]
    )  # fmt: skip
    upscale = JobSpec(kind=JobKind.UPSCALE, video=str(clip), upscale_model="tiny")
    for spec, name in ((animation, "anim.mp4"), (style, "style.mp4"), (upscale, "up.mp4")):
        renderer.render(spec, out / name, work_dir=tmp_path / "work" / name)
        _check_output(tmp_path, out / name)
    comment = json.loads(ffmpeg.read_tags(out / "style.mp4")["comment"])
    assert comment["spec"]["video"] == "clip.mp4"
    assert ffmpeg.read_tags(out / "anim.mp4")["title"] == "a forest"
    assert json.loads(ffmpeg.read_tags(out / "up.mp4")["comment"])["upscale"]["source"] == "clip.mp4"


def test_an_upscaled_still_drops_the_paths_an_older_file_carried(
    renderer: Renderer, tmp_path: Path, host: Path
) -> None:
    old = host / "old.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("init_image", str(host / "init.png"))
    info.add_text("image_prompts", f"{host / 'prompt.jpg'}:0.5")
    legacy = {
        "schema": 1,
        "prompts": {"text": "a cat", "image": f"{host / 'prompt.jpg'}:0.5"},
        "files": {"init_image": {"path": str(host / "init.png"), "sha256": "ab"}, "image_prompts": []},
        "spec": {"init_image": str(host / "init.png"), "image_prompts": f"{host / 'prompt.jpg'}:0.5"},
    }
    info.add_text(images.PARAMS_KEY, json.dumps(legacy))
    Image.new("RGB", (16, 16)).save(old, pnginfo=info)
    out = tmp_path / "out" / "up.png"
    renderer.render(JobSpec(kind=JobKind.UPSCALE, init_image=str(old), upscale_model="tiny"), out)
    _check_output(tmp_path, out)
    params = images.read_params(out)
    assert params["files"]["init_image"]["name"] == "init.png"
    assert params["upscale"]["source"] == "old.png"


@pytest.mark.parametrize(
    ("make_spec", "message"),
    [
        (lambda h: JobSpec(text_prompts="x", init_image=str(h / "gone.png"), **TINY), "init image 'gone.png' does"),
        (lambda h: JobSpec(image_prompts=str(h / "bad.png"), **TINY), "image prompt bad.png: not an image"),
        (lambda h: JobSpec(image_prompts=f"{h / 'init.png'}:abc", **TINY), "'init.png:abc'"),
        (
            lambda h: JobSpec(kind=JobKind.STYLE_TRANSFER, text_prompts="x", video=str(h / "cut.mp4"), **TINY),
            "cut.mp4: not a video that can be read",
        ),
        (
            lambda h: JobSpec(kind=JobKind.STYLE_TRANSFER, text_prompts="x", video=str(h / "notes.mp4"), **TINY),
            "notes.mp4 is not a video file we accept",
        ),
    ],
    ids=["missing init image", "corrupt image prompt", "bad weight", "truncated video", "not a video"],
)
def test_errors_name_files_without_their_folders(
    renderer: Renderer, tmp_path: Path, host: Path, make_spec: object, message: str
) -> None:
    (host / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    whole = make_video(host / "whole.mp4", seconds=1, fps=10)
    (host / "cut.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (host / "notes.mp4").write_text("<?xml version='1.0'?><MPD/>")
    output = tmp_path / "out" / ("o.mp4" if "video" in message or ".mp4" in message else "o.png")
    with pytest.raises(InvalidJob) as caught:
        renderer.render(make_spec(host), output)  # type: ignore[operator]
    assert message in str(caught.value)
    assert_no_host_path(tmp_path, str(caught.value))


# -- replay ---------------------------------------------------------------------------------------------

REPLAYED = ["image", "--model", "tiny", "--prompts", "a cat", "--size", "32", "32", "--iterations", "2",
            "--cutn", "2", "--seed", "3"]  # fmt: skip


@pytest.fixture
def original(tmp_path: Path, host: Path) -> Path:
    """A still rendered from the host folder's inputs, into another folder, with no input beside it."""
    out = tmp_path / "results" / "cat.png"
    out.parent.mkdir()
    inputs = ["--init-image", str(host / "init.png"), "--image-prompts", f"{host / 'prompt.jpg'}:0.5"]
    assert main([*REPLAYED, *inputs, "--output", str(out)]) == 0
    return out


def test_replay_finds_the_inputs_beside_the_replayed_file(tmp_path: Path, host: Path, original: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(original, elsewhere / "cat.png")
    for name in ("init.png", "prompt.jpg"):
        shutil.copy(host / name, elsewhere / name)
    shutil.rmtree(tmp_path / SECRET)  # the folders the inputs came from are gone
    again = tmp_path / "again.png"
    assert main(["image", "--replay", str(elsewhere / "cat.png"), "--output", str(again)]) == 0
    assert np.array_equal(pixels(again), pixels(original))


def test_replay_finds_the_inputs_in_the_current_directory(
    tmp_path: Path, host: Path, original: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for name in ("init.png", "prompt.jpg"):
        shutil.move(host / name, cwd / name)
    monkeypatch.chdir(cwd)
    again = tmp_path / "again.png"
    assert main(["image", "--replay", str(original), "--output", str(again)]) == 0
    assert np.array_equal(pixels(again), pixels(original))


def test_replay_says_which_input_is_missing_and_how_to_give_it(
    tmp_path: Path, host: Path, original: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.move(host / "init.png", tmp_path / "my init.png")
    shutil.copy(host / "prompt.jpg", tmp_path / "prompt.jpg")  # the image prompt is found; the init image is not
    capsys.readouterr()
    assert main(["image", "--replay", str(original), "--output", str(tmp_path / "b.png")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "error: --replay: the init image init.png is not beside cat.png nor in the current directory; "
        "put it there or give --init-image"
    )
    shutil.copy(host / "prompt.jpg", tmp_path / "init.png")  # a file of that name, not that file
    assert main(["image", "--replay", str(original), "--output", str(tmp_path / "b.png")]) == 2
    assert "init.png has changed since cat.png was made" in capsys.readouterr().err
    given = ["--init-image", str(tmp_path / "my init.png")]
    assert main(["image", "--replay", str(original), *given, "--output", str(tmp_path / "b.png")]) == 0
    assert np.array_equal(pixels(tmp_path / "b.png"), pixels(original))
