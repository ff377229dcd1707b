"""`VQGAN_CLIP_Config`: the seed's fields and defaults, no typos, no silent fallbacks."""

from __future__ import annotations

import pytest

from engine import VQGAN_CLIP_Config
from engine.config import check_config, config_to_spec


def test_the_seeds_field_names_and_code_defaults() -> None:
    config = VQGAN_CLIP_Config()
    assert config.output_image_size == [256, 256]
    assert (config.init_image, config.init_noise, config.init_weight) == (None, None, 0.0)
    assert config.init_image_method == "original"
    assert config.seed is None
    assert (config.clip_model, config.vqgan_model_name) == ("ViT-B/32", "vqgan_imagenet_f16_16384")
    assert (config.learning_rate, config.cut_method, config.num_cuts, config.cut_power) == (0.1, "kornia", 32, 1.0)
    assert (config.optimizer, config.adaptiveLR, config.cudnn_determinism) == ("Adam", False, False)
    assert (config.cuda_device, config.model_dir) == ("cuda:0", None)


def test_a_misspelt_field_fails() -> None:
    config = VQGAN_CLIP_Config()
    with pytest.raises(AttributeError):
        config.vqgan_checkpoint = "x"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cut_method", "latest", "unknown cut_method"),
        ("optimizer", "SGD", "unknown optimizer"),
        ("init_image_method", "decay2", "unknown init_image_method"),
        ("init_noise", "snow", "unknown init_noise"),
        ("output_image_size", [256], "output_image_size"),
    ],
)
def test_unknown_choices_are_rejected_not_replaced(field: str, value: object, message: str) -> None:
    config = VQGAN_CLIP_Config()
    setattr(config, field, value)
    with pytest.raises(ValueError, match=message):
        check_config(config)


def test_choices_are_case_insensitive_and_spelt_as_the_seed_in_the_spec() -> None:
    config = VQGAN_CLIP_Config(optimizer="adamw", cut_method="ORIGINAL")
    spec = config_to_spec(config, text_prompts="x")
    assert (spec.optimizer, spec.cut_method) == ("AdamW", "original")


def test_copy_does_not_share_the_size_list() -> None:
    config = VQGAN_CLIP_Config()
    clone = config.copy()
    clone.output_image_size[0] = 64
    assert config.output_image_size == [256, 256]
