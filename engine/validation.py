"""Checks on a job spec that need no model, and the size and seed rules (engine.md §1.2, §3.1, §8)."""

from __future__ import annotations

import math
import secrets
from pathlib import Path

from engine import prompts
from engine.config import CUT_METHODS, INIT_IMAGE_METHODS, INIT_NOISE, OPTIMIZERS, canonical_choice
from engine.errors import InvalidJob
from engine.jobs import JobSpec

MAX_SEED = 2**64
MAX_SIDE = 4096


def check_spec(spec: JobSpec) -> prompts.ParsedPrompts:
    """Everything about a still-image spec that can be refused before a model loads; returns the prompts."""
    try:
        canonical_choice(spec.cut_method, CUT_METHODS, "cut_method")
        canonical_choice(spec.optimizer, OPTIMIZERS, "optimizer")
        canonical_choice(spec.init_image_method, INIT_IMAGE_METHODS, "init_image_method")
        if spec.init_noise is not None:
            canonical_choice(spec.init_noise, INIT_NOISE, "init_noise")
    except ValueError as e:
        raise InvalidJob(str(e)) from None
    if spec.seed is not None and not (isinstance(spec.seed, int) and 0 <= spec.seed < MAX_SEED):
        raise InvalidJob(f"seed must be an integer, 0 ≤ seed < 2^64, got {spec.seed!r}")
    for name, value in (("width", spec.width), ("height", spec.height)):
        if not isinstance(value, int) or not 0 < value <= MAX_SIDE:
            raise InvalidJob(f"{name} must be a whole number of pixels from 1 to {MAX_SIDE}, got {value!r}")
    if not isinstance(spec.iterations, int) or spec.iterations < 0:
        raise InvalidJob(f"iterations must be a whole number ≥ 0, got {spec.iterations!r}")
    if spec.save_every is not None and (not isinstance(spec.save_every, int) or spec.save_every < 1):
        raise InvalidJob(f"save_every must be a whole number ≥ 1, got {spec.save_every!r}")
    if not isinstance(spec.num_cuts, int) or spec.num_cuts < 1:
        raise InvalidJob(f"num_cuts must be a whole number ≥ 1, got {spec.num_cuts!r}")
    for name, value in (("cut_power", spec.cut_power), ("learning_rate", spec.learning_rate)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise InvalidJob(f"{name} must be a positive number, got {value!r}")
    if not (isinstance(spec.init_weight, int | float) and math.isfinite(spec.init_weight)):
        raise InvalidJob(f"init_weight must be a finite number, got {spec.init_weight!r}")
    parsed = prompts.validate(spec.text_prompts, spec.image_prompts, spec.noise_prompts)
    if parsed.empty:
        raise InvalidJob("No valid prompts were provided")
    if spec.init_image is not None and not Path(spec.init_image).is_file():
        raise InvalidJob(f"init image {spec.init_image!r} does not exist")
    for phrase in parsed.image:
        for part in phrase:
            if not Path(part.text).is_file():
                raise InvalidJob(f"image prompt {part.text!r} does not exist")
    return parsed


def floor_size(width: int, height: int, stride: int) -> tuple[int, int]:
    """Sizes floored to the model's stride; InvalidJob when a side comes out below it."""
    w, h = (width // stride) * stride, (height // stride) * stride
    if w < stride or h < stride:
        raise InvalidJob(f"the image is too small: {width}×{height} pixels, each side must be at least {stride}")
    return w, h


def draw_seed() -> int:
    """A fresh random seed (reported back, so the image can be made again)."""
    return secrets.randbits(63)
