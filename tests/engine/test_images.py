"""Saving by extension with the generation parameters, and reading them back."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from engine.pipelines import images
from engine.renderer import Renderer
from tests.support.specs import tiny_spec


def test_png_carries_the_seeds_keys_and_the_engine_params(renderer: Renderer, tmp_path: Path, picture: Path) -> None:
    spec = tiny_spec(text_prompts="ünïcödé 🍎:1|b:-0.5", image_prompts=str(picture), seed=11, save_every=2)
    renderer.render(spec, tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as img:
        text = dict(img.text)
    assert text["text_prompts"] == "ünïcödé 🍎:1|b:-0.5"
    assert text["seed"] == "11"
    assert text["save_every"] == "2"
    assert text["init_image"] == ""
    assert text["cut_method"] == "kornia"
    params = images.read_params(tmp_path / "a.png")
    config = params["config"]
    assert params["schema"] == 2
    assert params["device"] == "cpu"
    assert params["dtype"] == renderer.context.precision.dtype_name  # float32 unless this CPU is faster in bf16
    assert params["torch"]
    assert config["seed"] == 11
    assert config["vqgan_model_name"] == "tiny"
    assert config["output_image_size"] == [64, 64]
    assert config["num_cuts"] == 4
    assert config["optimizer"] == "Adam"
    assert params["iterations"] == 3
    assert params["prompts"]["text"] == "ünïcödé 🍎:1|b:-0.5"
    # by name and checksum only: no folder of the machine that made it
    assert params["files"]["image_prompts"] == [{"name": picture.name, "sha256": images.sha256_file(picture)}]
    assert text["image_prompts"] == params["prompts"]["image"] == picture.name


def test_jpeg_carries_the_params_in_exif(renderer: Renderer, tmp_path: Path) -> None:
    renderer.render(tiny_spec(seed=12, text_prompts="a fish"), tmp_path / "a.jpeg")
    assert images.read_params(tmp_path / "a.jpeg")["config"]["seed"] == 12
    with Image.open(tmp_path / "a.jpeg") as img:
        assert "seed: 12" in img.getexif()[0x9C9C].decode("utf-16-le")


@pytest.mark.parametrize("suffix", [".bmp", ".webp", ".tif"])
def test_other_formats_save_without_metadata(renderer: Renderer, tmp_path: Path, suffix: str) -> None:
    renderer.render(tiny_spec(iterations=1), tmp_path / f"a{suffix}")
    with Image.open(tmp_path / f"a{suffix}") as img:
        assert img.size == (64, 64)
    with pytest.raises(ValueError, match="no engine parameters"):
        images.read_params(tmp_path / f"a{suffix}")


def test_aspect_size_keeps_the_area() -> None:
    assert images.aspect_size(256, 256, 2.0) == (362, 181)
    assert images.aspect_size(100, 100, 1.0) == (100, 100)
