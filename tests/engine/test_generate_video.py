"""The seed's video API (`generate.video_frames`, `style_transfer`) and the `video`/`style` command lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import VQGAN_CLIP_Config, esrgan, generate, video_tools
from engine.cli.main import main
from engine.errors import InvalidJob
from engine.media import probe
from engine.pipelines.images import read_params
from tests.engine.rrdbnet import RRDBNet, save_official
from tests.support.mediafiles import make_stills, make_video


def seed_config(seed: int | None = 3) -> VQGAN_CLIP_Config:
    return VQGAN_CLIP_Config(
        output_image_size=[64, 64], vqgan_model_name="tiny", clip_model="tiny", num_cuts=8, cuda_device="cpu", seed=seed
    )


def frames_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("frame_"))


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(int)


@pytest.fixture(scope="module")
def clip_with_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hostile = 'it\'s a "clip"; vidéo.mp4'  # quotes, ';', spaces and non-ASCII broke the seed's shell strings
    return make_video(tmp_path_factory.mktemp("src") / hostile, seconds=2, fps=10, audio="aac")


# -- video_frames ---------------------------------------------------------------------------------


def test_video_frames_validation_messages(tmp_path: Path) -> None:
    cases = [
        ({"text_prompts": 5}, "text_prompts must be a string"),
        ({"image_prompts": 5}, "image_prompts must be a string"),
        ({"noise_prompts": 5}, "noise_prompts must be a string"),
        ({"init_image": str(tmp_path / "missing.png")}, "init_image does not exist."),
        ({"num_video_frames": "string"}, "num_video_frames must be an int."),
        ({"text_prompts": []}, "No valid prompts were provided"),
    ]
    for changes, message in cases:
        kwargs = {"num_video_frames": 2, "eng_config": seed_config(), "text_prompts": "a forest"}
        kwargs.update(changes)
        kwargs["generated_video_frames_path"] = tmp_path / "frames"
        with pytest.raises(ValueError, match=message):
            generate.video_frames(**kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "frames").exists()


def test_video_frames_phrases_change_after_the_listed_frames_and_stay_on_the_last(
    tmp_path: Path, picture: Path, picture2: Path
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    for stale in make_stills(folder, 9):  # an earlier, longer run of ours
        assert stale.exists()
    info = generate.video_frames(
        6, iterations_per_frame=1, iterations_for_first_frame=1, eng_config=seed_config(),
        text_prompts="a forest ^ a city ^ a sea", image_prompts=f"{picture} ^ {picture2}:0.5", noise_prompts="7 ^ 8",
        change_prompts_on_frame=[2, 3, 4], generated_video_frames_path=folder,
    )  # fmt: skip
    frames = frames_in(folder)
    assert [p.name for p in frames] == [f"frame_{k:012d}.jpg" for k in range(1, 7)]
    seen = [read_params(p)["frame"] for p in frames]
    assert [f["number"] for f in seen] == [1, 2, 3, 4, 5, 6]
    assert [f["text_prompts"] for f in seen] == ["a forest", "a forest", "a city", "a sea", "a sea", "a sea"]
    # all three kinds move together; a kind with fewer phrases stays on its last one
    assert [f["image_prompts"] for f in seen] == [picture.name] * 2 + [picture2.name] * 4  # by name only
    assert [f["noise_prompts"] for f in seen] == ["7", "7", "8", "8", "8", "8"]
    assert (folder / "notes.txt").read_text() == "keep me"
    assert "seed 3" in info
    assert "size 64x64" in info
    assert "num_video_frames: 6" in info


def test_video_frames_zoom_and_shift_as_functions_of_the_frame_number(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="barely show"):
        generate.video_frames(
            4, iterations_per_frame=1, iterations_for_first_frame=1, eng_config=seed_config(), text_prompts="a spiral",
            zoom_scale=lambda k: 1 + k / 10, shift_x=lambda k: k, shift_y=-2, generated_video_frames_path=tmp_path / "f",
        )  # fmt: skip
    moves = [read_params(p)["frame"] for p in frames_in(tmp_path / "f")]
    assert [(m["zoom_scale"], m["shift_x"], m["shift_y"]) for m in moves] == [
        (1.0, 0, 0), (1.2, 2, -2), (1.3, 3, -2), (1.4, 4, -2)
    ]  # fmt: skip
    with pytest.raises(InvalidJob, match="shift_x 64"), pytest.warns(UserWarning, match="barely show"):
        generate.video_frames(
            4,
            1,
            1,
            seed_config(),
            "a spiral",
            shift_x=lambda k: 32 * (k - 1),
            generated_video_frames_path=tmp_path / "g",
        )
    assert frames_in(tmp_path / "g") == []


def test_video_frames_same_seed_same_frames_and_the_smoother_changes_only_later_frames(tmp_path: Path) -> None:
    def run(name: str, smoother: bool) -> list[np.ndarray]:
        with pytest.warns(UserWarning, match="barely show"):
            generate.video_frames(
                3, iterations_per_frame=2, iterations_for_first_frame=1, eng_config=seed_config(seed=9),
                text_prompts="a forest", zoom_scale=1.2, shift_x=3, generated_video_frames_path=tmp_path / name,
                z_smoother=smoother, z_smoother_alpha=0.3,
            )  # fmt: skip
        return [pixels(p) for p in frames_in(tmp_path / name)]

    plain, again, smooth = run("a", False), run("b", False), run("c", True)
    assert len(plain) == len(smooth) == 3
    assert all(np.array_equal(x, y) for x, y in zip(plain, again, strict=True))
    assert np.array_equal(plain[0], smooth[0])  # s_1 = z_1
    assert not np.array_equal(plain[2], smooth[2])
    assert not np.array_equal(plain[0], plain[1])  # the frames move


# -- style_transfer -------------------------------------------------------------------------------


def test_style_transfer_validation_messages(tmp_path: Path) -> None:
    sources = [str(p) for p in make_stills(tmp_path / "src", 2)]
    for bad in ("a string", [], [str(tmp_path / "missing.jpg")], [*sources, 5]):
        with pytest.raises(ValueError, match=r"video_frames must be a list of paths to files\."):
            generate.style_transfer(bad, seed_config(), generated_video_frames_path=tmp_path / "out")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="text_prompts must be a string"):
        generate.style_transfer(sources, seed_config(), text_prompts=3, generated_video_frames_path=tmp_path / "out")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overwrite the source frames"):
        generate.style_transfer(sources, seed_config(), generated_video_frames_path=tmp_path / "src")
    assert not (tmp_path / "out").exists()


def test_style_transfer_writes_one_frame_per_source_frame(clip_with_audio: Path, tmp_path: Path) -> None:
    sources = video_tools.extract_video_frames(clip_with_audio, 2, tmp_path / "src")
    assert len(sources) == 4
    info = generate.style_transfer(
        sources, seed_config(), text_prompts="a red rose|a fish^the last horse", iterations_per_frame=1,
        iterations_for_first_frame=1, current_source_frame_image_weight=0.1, current_source_frame_prompt_weight=0.1,
        change_prompts_on_frame=[3], generated_video_frames_path=tmp_path / "out", z_smoother=True,
    )  # fmt: skip
    out = frames_in(tmp_path / "out")
    assert [p.name for p in out] == [Path(s).name for s in sources]
    phrases = [read_params(p)["frame"]["text_prompts"] for p in out]
    assert phrases == [
        "a red rose | a fish",
        "a red rose | a fish",
        "the last horse",
        "the last horse",
    ]  # before frame 3
    with Image.open(out[0]) as img:
        assert img.size == (72, 52)  # the source's 4:3 at the configured area, floored to the stride
    assert "current_source_frame_image_weight 0.10" in info


def test_restyle_video_frames_warns_and_runs_style_transfer(tmp_path: Path) -> None:
    sources = [str(p) for p in make_stills(tmp_path / "src", 2)]
    with pytest.warns(DeprecationWarning, match="style_transfer"):
        generate.restyle_video_frames(
            sources, seed_config(), "a fish", iterations=1, generated_video_frames_path=tmp_path / "out"
        )
    assert len(frames_in(tmp_path / "out")) == 2


# -- the command line -----------------------------------------------------------------------------


def test_cli_video_writes_an_mp4_of_the_frames_under_a_hostile_name(tmp_path: Path) -> None:
    out = tmp_path / "my anim; 'x'.mp4"
    argv = [
        "video", "--model", "tiny", "--prompts", "a forest ^ a city", "--frames", "6", "--iterations-per-frame", "2",
        "--zoom", "1.05", "--change-prompts-on-frame", "3", "--size", "64", "64", "--fps", "6", "--seed", "4",
        "--output", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    info = probe.probe_video(out)
    assert (info.frames, info.fps, info.width, info.height) == (6, 6.0, 64, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_cli_style_keeps_the_audio_and_the_length(clip_with_audio: Path, tmp_path: Path) -> None:
    out = tmp_path / "styled.mp4"
    argv = [
        "style", "--model", "tiny", "--video", str(clip_with_audio), "--prompts", "oil painting", "--size", "64", "64",
        "--extraction-fps", "4", "--iterations-per-frame", "2", "--cutn", "8", "--smoother", "--output", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    info = probe.probe_video(out)
    assert info.has_audio
    assert 7 <= info.frames <= 9
    assert info.fps == 4.0
    assert abs(info.seconds - 2.0) < 0.3


def test_cli_a_text_file_as_video_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    argv = ["style", "--model", "tiny", "--video", str(notes), "--prompts", "oil", "--output", str(tmp_path / "o.mp4")]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: notes.txt is not a video file we accept (MP4/MOV, MKV/WebM, AVI or GIF)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--zoom", "0"], "zoom"),
        (["--zoom", "50"], "zoom"),
        (["--shift-x", "64"], "shift_x"),
        (["--frames", "100000"], "allowed"),
        (["--max-bytes", "10"], "max_bytes"),
        (["--frames", "x"], "invalid int"),
    ],
)
def test_cli_bad_video_flags_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    argv = ["video", "--model", "tiny", "--prompts", "a", "--size", "64", "64", "--output", str(tmp_path / "a.mp4")]
    assert main([*argv, *flags]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: ")
    assert message in err[0]
    assert list(tmp_path.iterdir()) == []


# -- the seed's examples, end to end ----------------------------------------------------------------


@pytest.fixture(scope="module")
def upscaler_x2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_official(RRDBNet(scale=2).eval(), tmp_path_factory.mktemp("weights") / "tiny_x2.pth")


def test_example_zoom_video_frames_upscaled_and_encoded(upscaler_x2: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="barely show"):
        generate.video_frames(
            3, 1, 1, seed_config(), "a tunnel", zoom_scale=1.05, shift_x=1, shift_y=1,
            generated_video_frames_path=tmp_path / "frames",
        )  # fmt: skip
    upscaled = esrgan.inference_realesrgan(tmp_path / "frames", str(upscaler_x2), output_images_path=tmp_path / "up")
    assert len(upscaled) == 3
    assert read_params(upscaled[2])["frame"]["number"] == 3  # the frames' metadata survives the upscale
    info = probe.probe_video(video_tools.encode_video(tmp_path / "zoom.mp4", 30, tmp_path / "up", 30))
    assert (info.frames, info.width, info.height) == (3, 128, 128)


def test_example_video_extracted_restyled_upscaled_encoded_with_audio(
    clip_with_audio: Path, upscaler_x2: Path, tmp_path: Path
) -> None:
    sources = video_tools.extract_video_frames(clip_with_audio, 2, tmp_path / "src")
    generate.style_transfer(
        sources, seed_config(), "charcoal", iterations_per_frame=1, iterations_for_first_frame=1,
        generated_video_frames_path=tmp_path / "styled",
    )  # fmt: skip
    esrgan.inference_realesrgan(tmp_path / "styled", str(upscaler_x2), output_images_path=tmp_path / "up")
    silent = video_tools.encode_video(tmp_path / "silent.mp4", 2, tmp_path / "up", 2, "charcoal", "restyled")
    final = video_tools.copy_video_audio(clip_with_audio, silent, tmp_path / "final.mp4")
    info = probe.probe_video(final)
    assert (info.frames, info.width, info.height, info.has_audio) == (4, 144, 104, True)
