"""Command options checked again, bot-side, against the server's limits, and the specs built from them.

Discord does not re-check an option's declared range on receipt (docs/discord.md, "Messages"), and the
declared ranges are the host's, while a server may have lowered its limits with /settings: every
value is checked here, and a refusal names the range and whose limit it is. Pure functions.
"""

from __future__ import annotations

import dataclasses
import math

from bot.config import BotConfig, clip_for
from bot.errors import BadInput
from bot.server_settings import MIN_FRAMES, MIN_SIZE, ServerLimits, blocked
from engine import prompts
from engine.errors import InvalidJob
from engine.jobs import JobKind, JobSpec

MAX_SEED = 2**32 - 1
MAX_SHIFT = 64
BLOCKED = "your prompt uses a word this server does not allow; change the prompt and try again"


def check_prompt(text: str, limits: ServerLimits) -> None:
    """Refuse a prompt the engine could not parse (naming the part) or that holds a word the server blocks."""
    try:
        prompts.validate(text=text)
    except InvalidJob as e:
        raise BadInput(f"prompt: {e}") from None
    if blocked(text, limits.blocked_words):
        raise BadInput(BLOCKED)  # never repeats the list: it would teach how to get around it


def check_number(name: str, value: float, low: float, high: float, whose: str | None = None) -> None:
    """Refuse a value outside [low, high] or not finite, naming the range (and whose limit `high` is)."""
    limit = f" ({whose})" if whose else ""
    if not math.isfinite(value) or not low <= value <= high:
        raise BadInput(f"{name} must be between {_number(low)} and {_number(high)}{limit}, got {_number(value)}")


def _number(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and float(value).is_integer() else f"{value:g}"


def check_size(limits: ServerLimits, width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        check_number(name, value, MIN_SIZE, limits.max_size, limits.limit_name("max_size"))


def check_rules(spec: JobSpec, limits: ServerLimits) -> None:
    """A spec (also one a button derives from an older job) within the server's limits and word list."""
    if spec.kind is not JobKind.UPSCALE:
        check_size(limits, spec.width, spec.height)
        check_number("iterations", spec.iterations, 1, limits.max_iterations, limits.limit_name("max_iterations"))
    if spec.kind in (JobKind.ANIMATION, JobKind.STYLE_TRANSFER):
        low = MIN_FRAMES if spec.kind is JobKind.ANIMATION else 1
        check_number("frames", spec.frames, low, limits.max_frames, limits.limit_name("max_frames"))
    if blocked(spec.text_prompts, limits.blocked_words):
        raise BadInput(BLOCKED)


def base_spec(
    config: BotConfig,
    limits: ServerLimits,
    kind: JobKind,
    prompt: str,
    *,
    width: int | None,
    height: int | None,
    iterations: int | None,
    seed: int | None,
    model: str | None,
) -> JobSpec:
    """The spec every command starts from. A value given is checked as given: `height:0` is refused, not
    taken for "the default"."""
    check_prompt(prompt, limits)
    default_size = min(config.default_size, limits.max_size)
    width = default_size if width is None else width
    height = default_size if height is None else height
    check_size(limits, width, height)
    iterations = min(config.default_iterations, limits.max_iterations) if iterations is None else iterations
    check_number("iterations", iterations, 1, limits.max_iterations, limits.limit_name("max_iterations"))
    if seed is not None:
        check_number("seed", seed, 0, MAX_SEED)
    model = limits.default_model if model is None else model
    if model not in config.models:
        raise BadInput(f"unknown model {model[:60]!r}; choose one of: {', '.join(config.models)}")
    return JobSpec(
        kind=kind,
        text_prompts=prompt,
        width=width,
        height=height,
        iterations=iterations,
        seed=seed,
        vqgan_model=model,
        clip_model=clip_for(model),
        num_cuts=config.num_cuts,
    )


def animation(
    config: BotConfig,
    limits: ServerLimits,
    spec: JobSpec,
    *,
    frames: int | None,
    zoom: float,
    shift_x: int,
    shift_y: int,
) -> JobSpec:
    """`spec` as a zoom/pan animation."""
    frames = min(config.default_frames, limits.max_frames) if frames is None else frames
    check_number("frames", frames, MIN_FRAMES, limits.max_frames, limits.limit_name("max_frames"))
    check_number("zoom", zoom, 0.5, 2.0)
    check_number("shift_x", shift_x, -MAX_SHIFT, MAX_SHIFT)
    check_number("shift_y", shift_y, -MAX_SHIFT, MAX_SHIFT)
    if frames * spec.iterations > limits.max_iterations * limits.max_frames:
        raise BadInput("frames × iterations_per_frame is too large")
    return dataclasses.replace(
        spec, frames=frames, zoom=zoom, shift_x=shift_x, shift_y=shift_y, fps=min(30.0, max(1.0, frames / 4))
    )


def style_options(fps: float, source_weight: float) -> None:
    check_number("fps", fps, 0.5, 30.0)
    check_number("source_weight", source_weight, 0.0, 10.0)


def style_frames(limits: ServerLimits, seconds: float, fps: float) -> int:
    """How many frames a style transfer of `seconds` at `fps` takes; BadInput beyond the server's limit."""
    frames = max(1, math.ceil(seconds * fps))
    if frames > limits.max_frames:
        raise BadInput(
            f"{seconds:.1f} s at {fps:g} fps is {frames} frames; the limit is {limits.max_frames} "
            f"({limits.limit_name('max_frames')}); lower fps or trim the video"
        )
    return frames
