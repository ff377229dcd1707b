"""Checks on a job spec that need no model and no rendering, and the size rules they share.

No torch here: whatever can be refused is refused before a model loads, with an `InvalidJob` whose
one-line message is for the member who sent the job. The source media of a job (a style transfer's
video, an upscale's input) are probed separately (`engine.media.probe`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from engine import prompts
from engine.config import CUT_METHODS, INIT_IMAGE_METHODS, INIT_NOISE, OPTIMIZERS, canonical_choice
from engine.errors import InvalidJob
from engine.jobs import JobKind, JobSpec
from engine.media.shrink import MIN_VIDEO_BYTES

MAX_SEED = 2**64
MAX_SIDE = 4096
MIN_ZOOM, MAX_ZOOM = 0.1, 10.0
MAX_FPS = 240.0
VIDEO_SUFFIXES = (".mp4",)
DEFAULT_MAX_FRAMES = 1000
DEFAULT_MAX_VIDEO_SECONDS = 120.0
DEFAULT_MAX_VIDEO_PIXELS = 1920 * 1080
DEFAULT_MAX_UPSCALE_PIXELS = 4096 * 4096  # output pixels of an upscaled still, or of one upscaled video frame


def check_still_spec(spec: JobSpec) -> prompts.ParsedPrompts:
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
    positive: tuple[tuple[str, object], ...] = (("cut_power", spec.cut_power), ("learning_rate", spec.learning_rate))
    for name, number in positive:
        if not (isinstance(number, int | float) and math.isfinite(number) and number > 0):
            raise InvalidJob(f"{name} must be a positive number, got {number!r}")
    if not (isinstance(spec.init_weight, int | float) and math.isfinite(spec.init_weight)):
        raise InvalidJob(f"init_weight must be a finite number, got {spec.init_weight!r}")
    parsed = prompts.validate(spec.text_prompts, spec.image_prompts, spec.noise_prompts)
    if parsed.empty:
        raise InvalidJob("No valid prompts were provided")
    # a missing file is named without its folder: the message may be shown in a channel
    if spec.init_image is not None and not Path(spec.init_image).is_file():
        raise InvalidJob(f"init image {Path(spec.init_image).name!r} does not exist")
    for phrase in parsed.image:
        for part in phrase:
            if not Path(part.text).is_file():
                raise InvalidJob(f"image prompt {Path(part.text).name!r} does not exist")
    return parsed


def floor_size(width: int, height: int, stride: int) -> tuple[int, int]:
    """Sizes floored to the model's stride; InvalidJob when a side comes out below it."""
    w, h = (width // stride) * stride, (height // stride) * stride
    if w < stride or h < stride:
        raise InvalidJob(f"the image is too small: {width}×{height} pixels, each side must be at least {stride}")
    return w, h


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class VideoLimits:
    """What one video job may ask for; the Renderer's constructor sets them."""

    max_frames: int = DEFAULT_MAX_FRAMES  # output frames of an animation or a style transfer
    max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS  # length of a style-transfer source video
    max_video_pixels: int = DEFAULT_MAX_VIDEO_PIXELS  # pixels per frame of a style-transfer source video


def _number(name: str, value: object, low: float, high: float, *, low_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidJob(f"{name} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        raise InvalidJob(
            f"{name} must be {'above' if low_open else 'at least'} {low:g} and at most {high:g}, got {value:g}"
        )
    return float(value)


def _whole(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidJob(f"{name} must be a whole number ≥ {low}, got {value!r}")
    return value


def check_video_spec(
    spec: JobSpec, limits: VideoLimits, output: str | Path | None = None, *, frames_given: bool = False
) -> prompts.ParsedPrompts:
    """Everything about a video spec that can be refused before a model loads; returns the parsed prompts.

    The source video of a style transfer is checked separately (it has to be probed, `engine.media.probe`);
    `frames_given` says the caller restyles frame files instead of `spec.video` (the seed API).
    """
    if spec.kind not in (JobKind.ANIMATION, JobKind.STYLE_TRANSFER):
        raise InvalidJob(f"{spec.kind.value} is not a video job")
    if output is not None and Path(output).suffix.lower() not in VIDEO_SUFFIXES:
        raise InvalidJob(f"a video is written as .mp4, not {Path(output).name!r}")
    parsed = check_still_spec(spec)
    if spec.kind is JobKind.ANIMATION:
        frames = _whole("frames", spec.frames, 1)
        if frames > limits.max_frames:
            raise InvalidJob(f"{frames} frames is more than the {limits.max_frames} allowed")
        check_zoom(spec.zoom)
        for name, shift, side in (("shift_x", spec.shift_x, spec.width), ("shift_y", spec.shift_y, spec.height)):
            check_shift(name, shift, side)
        if spec.fps is None or spec.fps == 0:
            raise InvalidJob("fps must be above 0 for an animation")
    else:
        if not spec.video and not frames_given:
            raise InvalidJob("a style transfer needs a source video")
        _number("extraction_fps", spec.extraction_fps, 0, MAX_FPS)
        _number("source_image_weight", spec.source_image_weight, -math.inf, math.inf)
        _number("source_prompt_weight", spec.source_prompt_weight, -math.inf, math.inf)
    if spec.fps:  # a style transfer's 0 means "the extraction rate"
        _number("fps", spec.fps, 0, MAX_FPS)
    if spec.interpolate_fps is not None:
        _number("interpolate_fps", spec.interpolate_fps, 0, MAX_FPS)
    _whole("iterations", spec.iterations, 0)
    if spec.iterations_first_frame is not None:
        _whole("iterations_first_frame", spec.iterations_first_frame, 0)
    for frame in spec.change_prompts_on_frame:
        _whole("change_prompts_on_frame", frame, 1)
    if spec.smoother:
        _number("smoother_alpha", spec.smoother_alpha, 0, 1)
        _whole("smoother_buffer_len", spec.smoother_buffer_len, 1)
    if spec.max_bytes is not None:
        _whole("max_bytes", spec.max_bytes, MIN_VIDEO_BYTES)
    return parsed


def check_zoom(zoom: object) -> None:
    """A zoom factor per frame: at least 0.1 (zooming far out) and at most 10."""
    _number("zoom", zoom, MIN_ZOOM, MAX_ZOOM, low_open=False)


def check_shift(name: str, shift: int, side: int) -> None:
    """A per-frame shift must be smaller than the canvas side it moves along."""
    if isinstance(shift, bool) or not isinstance(shift, int):
        raise InvalidJob(f"{name} must be a whole number of pixels, got {shift!r}")
    if abs(shift) >= side:
        raise InvalidJob(f"{name} {shift} must be smaller than the image side it moves along ({side} pixels)")


def check_source_frames(count: int, limits: VideoLimits) -> None:
    """A style transfer renders one frame per source frame."""
    if count < 1:
        raise InvalidJob("there are no source frames to restyle")
    if count > limits.max_frames:
        raise InvalidJob(
            f"the source gives {count} frames at this extraction rate, more than the {limits.max_frames} allowed"
        )


def check_timelapse_spec(spec: JobSpec) -> None:
    """InvalidJob for a timelapse that cannot be made (`timelapse_every` on a video job, or out of range)."""
    every = spec.timelapse_every
    if every is None:
        return
    if spec.kind is not JobKind.IMAGE:
        raise InvalidJob("timelapse_every is for still images; a video job is already a video")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise InvalidJob(f"timelapse_every must be a whole number ≥ 1, got {every!r}")
    if every > max(1, spec.iterations):
        raise InvalidJob(f"timelapse_every {every} is more than the {spec.iterations} iterations")
