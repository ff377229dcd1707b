"""`generate.image`: the seed package's own image tests, as behaviours, on the tiny preset."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from engine import VQGAN_CLIP_Config, generate
from engine.jobs import JobSpec
from engine.models.cache import ModelCache
from tests.support.images import pixels


def test_validation_messages_in_the_seeds_order_before_any_model_loads(
    tmp_path: Path, tiny_config: VQGAN_CLIP_Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before validation finished")

    monkeypatch.setattr(ModelCache, "for_job", no_loading)
    out = tmp_path / "out.png"
    cases = [
        ({"text_prompts": 1, "image_prompts": 2, "noise_prompts": 3, "init_image": "nope", "save_every": "x"},
         "text_prompts must be a string"),
        ({"image_prompts": 2, "noise_prompts": 3, "init_image": "nope", "save_every": "x"},
         "image_prompts must be a string"),
        ({"noise_prompts": 3, "init_image": "nope", "save_every": "x"}, "noise_prompts must be a string"),
        ({"init_image": str(tmp_path / "nope.png"), "save_every": "x"}, "init_image does not exist."),
        ({"save_every": "x"}, "save_every must be an int."),
        ({}, "No valid prompts were provided"),
        ({"text_prompts": "a cat:abc"}, "weight must be a number"),
        ({"image_prompts": str(tmp_path / "missing.png")}, "does not exist"),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            generate.image(str(out), tiny_config, iterations=1, **kwargs)  # type: ignore[arg-type]
    assert not out.exists()


def test_story_prompt_with_save_every_beyond_iterations_writes_a_png(
    tmp_path: Path, tiny_config: VQGAN_CLIP_Config
) -> None:
    out = tmp_path / "story.png"
    with pytest.warns(UserWarning, match="first '\\^' phrase"):
        info = generate.image(
            str(out), tiny_config, text_prompts="A painting of flowers in the renaissance style:0.5|rocks:-0.1^a field",
            iterations=2, save_every=50, leave_progress_bar=False,
        )  # fmt: skip
    with Image.open(out) as img:
        assert img.size == (64, 64)
        assert img.text["text_prompts"].startswith("A painting of flowers")
    assert "iterations: 2" in info
    assert "seed 1" in info


def test_bmp_output_has_no_metadata_and_no_error(tmp_path: Path, tiny_config: VQGAN_CLIP_Config) -> None:
    out = tmp_path / "out.bmp"
    generate.image(str(out), tiny_config, text_prompts="a fish", iterations=1)
    with Image.open(out) as img:
        assert img.format == "BMP"
        assert img.size == (64, 64)


def test_jpg_with_interim_saves_carries_exif(tmp_path: Path, tiny_config: VQGAN_CLIP_Config) -> None:
    out = tmp_path / "out.jpg"
    generate.image(str(out), tiny_config, text_prompts="a red rose", iterations=3, save_every=2)
    with Image.open(out) as img:
        assert img.format == "JPEG"
        exif = img.getexif()
        assert exif[0x9C9B].decode("utf-16-le").rstrip("\0") == "a red rose"  # XPTitle
        assert exif.get_ifd(0x8769)[0x9286].startswith(b"ASCII\0\0\0")  # UserComment with its charset header


def test_weighted_noise_prompts_and_a_noise_story(tmp_path: Path, tiny_config: VQGAN_CLIP_Config) -> None:
    generate.image(str(tmp_path / "a.png"), tiny_config, noise_prompts="123:0.1|234:0.2|345:0.3", iterations=2)
    with pytest.warns(UserWarning, match="first"):
        generate.image(str(tmp_path / "b.png"), tiny_config, noise_prompts="123:0.1|234:0.2^700", iterations=2)
    assert pixels(tmp_path / "a.png").shape == pixels(tmp_path / "b.png").shape == (64, 64, 3)


def test_two_weighted_image_prompts_by_absolute_path(
    tmp_path: Path, tiny_config: VQGAN_CLIP_Config, picture: Path, picture2: Path
) -> None:
    out = tmp_path / "out.png"
    generate.image(
        str(out), tiny_config, image_prompts=f"{picture.resolve()}:0.5|{picture2.resolve()}:-0.2", iterations=2
    )
    assert pixels(out).shape == (64, 64, 3)


def test_init_image_sets_the_aspect_ratio_at_the_same_area(
    tmp_path: Path, tiny_config: VQGAN_CLIP_Config, picture: Path
) -> None:
    tiny_config.output_image_size = [128, 128]
    out = tmp_path / "out.png"
    info = generate.image(str(out), tiny_config, text_prompts="a fish", init_image=str(picture), iterations=1)
    # area 128² at 2:1: y = int(sqrt(16384 / 2)) = 90, x = 181, floored to the tiny stride 4
    with Image.open(out) as img:
        assert img.size == (180, 88)
    assert "size 180x88" in info
    assert f"init_image {picture}" in info


def test_init_weight_with_an_init_image_adds_the_anchor_term(
    tmp_path: Path, tiny_config: VQGAN_CLIP_Config, picture: Path
) -> None:
    from engine.config import config_to_spec

    renderer = generate.renderer_for("cpu")
    losses: dict[float, list[float]] = {}
    for weight in (0.0, 50.0):
        config = tiny_config.copy()
        config.init_image, config.init_weight, config.learning_rate = str(picture), weight, 0.5
        spec = config_to_spec(config, text_prompts="a fish", iterations=3)
        seen: list[float] = []
        renderer.render(spec, tmp_path / f"w{weight}.png", on_progress=lambda p, seen=seen: seen.append(p.loss))
        losses[weight] = seen
    assert losses[0.0][0] == pytest.approx(losses[50.0][0])  # z == z_orig at the first step
    assert losses[50.0][2] > losses[0.0][2]  # afterwards the anchor adds MSE(z, z_orig)·w/2


def test_all_three_prompt_types_together_and_as_stories(
    tmp_path: Path, tiny_config: VQGAN_CLIP_Config, picture: Path
) -> None:
    generate.image(
        str(tmp_path / "a.png"), tiny_config, text_prompts="a red rose|a fish:0.5", image_prompts=str(picture),
        noise_prompts="5:0.2", iterations=2,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="first"):
        generate.image(
            str(tmp_path / "b.png"), tiny_config, text_prompts="a red rose^a fish", image_prompts=f"{picture}^{picture}",
            noise_prompts="5^6", iterations=2,
        )  # fmt: skip
    assert (tmp_path / "a.png").is_file()
    assert (tmp_path / "b.png").is_file()


def test_a_bare_file_name_is_written_to_the_working_directory(
    tmp_path: Path, tiny_config: VQGAN_CLIP_Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    generate.image("bare.png", tiny_config, text_prompts="a fish", iterations=1)
    assert (tmp_path / "bare.png").is_file()


def test_prompts_as_empty_lists_or_none_mean_none(tmp_path: Path, tiny_config: VQGAN_CLIP_Config) -> None:
    generate.image(str(tmp_path / "x.png"), tiny_config, text_prompts="a fish", image_prompts=None, init_image=[],
                   iterations=1)  # fmt: skip
    assert (tmp_path / "x.png").is_file()


def test_the_callers_config_is_not_changed_and_defaults_are_not_shared(
    tmp_path: Path, tiny_config: VQGAN_CLIP_Config, picture: Path
) -> None:
    tiny_config.seed = None
    before = repr(tiny_config)
    info = generate.image(str(tmp_path / "x.png"), tiny_config, text_prompts="a fish", init_image=str(picture),
                          init_weight=0.5, iterations=1)  # fmt: skip
    assert repr(tiny_config) == before  # the drawn seed, init image and size were not written back
    assert "seed " in info
    first, second = VQGAN_CLIP_Config(), VQGAN_CLIP_Config()
    first.output_image_size.append(3)
    assert second.output_image_size == [256, 256]


def test_one_prompt_with_different_seeds_gives_different_pixels(tmp_path: Path, tiny_config: VQGAN_CLIP_Config) -> None:
    for seed in (0, 1, 0):
        tiny_config.seed = seed
        generate.image(str(tmp_path / f"s{seed}.png"), tiny_config, text_prompts="a fish", iterations=2)
    assert (pixels(tmp_path / "s0.png") != pixels(tmp_path / "s1.png")).any()


def test_the_same_renderer_serves_repeated_calls(tiny_config: VQGAN_CLIP_Config, tmp_path: Path) -> None:
    tiny = JobSpec(vqgan_model="tiny", clip_model="tiny")
    generate.image(str(tmp_path / "a.png"), tiny_config, text_prompts="a fish", iterations=1)
    renderer = generate.renderer_for("cpu")
    first = renderer.models(tiny)
    generate.image(str(tmp_path / "b.png"), tiny_config, text_prompts="a cat", iterations=1)
    assert generate.renderer_for("cpu") is renderer
    again = renderer.models(tiny)
    assert again.vqgan is first.vqgan  # the same model objects, not loaded again
    assert again.clip is first.clip


def test_cuda_device_falls_back_to_the_cpu_with_a_warning(tmp_path: Path, tiny_config: VQGAN_CLIP_Config) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    tiny_config.cuda_device = "cuda:0"
    with pytest.warns(UserWarning, match="CUDA is not available"):
        generate.image(str(tmp_path / "x.png"), tiny_config, text_prompts="a fish", iterations=1)
    assert (tmp_path / "x.png").is_file()


def test_importing_engine_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, engine, engine.prompts, engine.jobs; from engine import VQGAN_CLIP_Config; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert result.stdout.strip() == "False"
