"""Checks on an animation or style-transfer spec that need no model and no rendering (engine.md §4.1).

No torch here: the bot can refuse a bad video job before it queues it. Every refusal is an
`InvalidJob` with a one-line message for the member who sent the job.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from engine import validation
from engine.errors import InvalidJob
from engine.jobs import JobKind, JobSpec
from engine.prompts import ParsedPrompts

MIN_ZOOM, MAX_ZOOM = 0.1, 10.0
MAX_FPS = 240.0
MIN_VIDEO_BYTES = 32 * 1024  # engine.fit.MIN_VIDEO_BYTES: an MP4 container alone takes a few kilobytes
VIDEO_SUFFIXES = (".mp4",)
DEFAULT_MAX_FRAMES = 1000
DEFAULT_MAX_VIDEO_SECONDS = 120.0
DEFAULT_MAX_VIDEO_PIXELS = 1920 * 1080


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
) -> ParsedPrompts:
    """Everything about a video spec that can be refused before a model loads; returns the parsed prompts.

    The source video of a style transfer is checked separately (it has to be probed, `engine.media`);
    `frames_given` says the caller restyles frame files instead of `spec.video` (the seed API).
    """
    if spec.kind not in (JobKind.ANIMATION, JobKind.STYLE_TRANSFER):
        raise InvalidJob(f"{spec.kind.value} is not a video job")
    if output is not None and Path(output).suffix.lower() not in VIDEO_SUFFIXES:
        raise InvalidJob(f"a video is written as .mp4, not {Path(output).name!r}")
    parsed = validation.check_spec(spec)
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


def first_frame_iterations(spec: JobSpec) -> int:
    """Iterations of frame 1 (`iterations_first_frame`, or `iterations` when unset)."""
    return spec.iterations if spec.iterations_first_frame is None else spec.iterations_first_frame


def total_steps(spec: JobSpec, frames: int) -> int:
    """Iterations the whole video takes."""
    return first_frame_iterations(spec) + max(0, frames - 1) * spec.iterations


def phrase_for_frame(spec: JobSpec, frame: int) -> int:
    """The series phrase of 1-based `frame` (engine.md §2.2), before clamping to the last phrase.

    An animation moves on AFTER each listed frame; a style transfer moves on BEFORE it.
    """
    listed = set(spec.change_prompts_on_frame)
    if spec.kind is JobKind.ANIMATION:
        return sum(1 for k in listed if k < frame)
    return sum(1 for k in listed if k <= frame)
