"""Admission control: estimate a job's memory and time before accepting it, and refuse what cannot run.

Memory interpolates the seed package's README figures (32 cuts: ~8 GB at 380², 10 GB at 512², 16 GB at
700², 24 GB at 900²) in pixels, plus a per-cut term. Time is steps × seconds per step, measured per
(model, size, cuts, device) and kept as a moving average (`SpeedBook`), or guessed from CPU timings
until something is measured (docs/architecture.md, "Admission and ETAs"). Refusals say what to change.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from bot.queue.api import QueueRefused
from engine.errors import InvalidJob
from engine.jobs import JobKind, JobSpec
from engine.prompts import validate
from storage.records import PlanRow, job_steps

# (pixels, GB) at 32 cuts: the README's points; the first one (models and CUDA context) is a guess
_MEMORY_POINTS = ((0, 4.0), (380 * 380, 8.0), (512 * 512, 10.0), (700 * 700, 16.0), (900 * 900, 24.0))
_GB_PER_CUT = 0.06  # one 224² CLIP crop's activations, kept for the backward pass
_TINY_MEMORY = (0.5, 2.0e-6, 0.005)
# seconds per step on a 2-core CPU = base + per_pixel·w·h + per_cut·cuts, fitted to timings of the real
# f16_16384 + ViT-B/32 (2.1 s at 128²/8 cuts, 7.4 s at 256²/32) and of the tiny preset (0.03 s at 64²/8)
_REAL_CPU_SPEED = (0.3, 5.5e-5, 0.105)
_TINY_CPU_SPEED = (0.004, 7.0e-6, 0.0005)
GPU_SPEEDUP = 25.0  # the seed README: an RTX 3080 is more than 25× faster than a Ryzen 5900X


@dataclasses.dataclass(frozen=True, slots=True)
class SpeedClass:
    """What speed depends on besides the device: the models, the size and the cut count."""

    vqgan_model: str
    clip_model: str
    width: int
    height: int
    num_cuts: int

    @classmethod
    def of(cls, spec: JobSpec | PlanRow) -> SpeedClass:
        return cls(spec.vqgan_model, spec.clip_model, spec.width, spec.height, spec.num_cuts)


def _linear(coefficients: tuple[float, float, float], c: SpeedClass | JobSpec) -> float:
    base, per_pixel, per_cut = coefficients
    return base + per_pixel * c.width * c.height + per_cut * c.num_cuts


def estimate_memory_gb(spec: JobSpec) -> float:
    """Peak device memory the job needs, in GB (an estimate; see the module docstring)."""
    if spec.vqgan_model == "tiny":
        return _linear(_TINY_MEMORY, spec)
    pixels = spec.width * spec.height
    segments = itertools.pairwise(_MEMORY_POINTS)
    (x0, y0), (x1, y1) = next(((a, b) for a, b in segments if pixels <= b[0]), _MEMORY_POINTS[-2:])
    at_32_cuts = y0 + (y1 - y0) * (pixels - x0) / (x1 - x0)  # beyond 900² the last slope carries on
    return max(1.0, at_32_cuts + _GB_PER_CUT * (spec.num_cuts - 32))


def guess_seconds_per_step(c: SpeedClass, device: str) -> float:
    """A default speed for when nothing has been measured for this model, size, cut count and device."""
    seconds = _linear(_TINY_CPU_SPEED if c.vqgan_model == "tiny" else _REAL_CPU_SPEED, c)
    return seconds if device.startswith("cpu") else seconds / GPU_SPEEDUP


def speed_key(c: SpeedClass, device: str) -> str:
    """What speed is measured per: models, size, cuts, device."""
    return f"{c.vqgan_model}+{c.clip_model}|{c.width}x{c.height}|c{c.num_cuts}|{device}"


class SpeedBook:
    """Measured seconds per step (a moving average persisted by the store), with guesses as the fallback."""

    def __init__(self, measured: dict[str, float] | None = None) -> None:
        self._measured = dict(measured or {})
        self._version = 0  # a memo from before an update is stale, even if a planning thread writes it late
        self._memo: dict[tuple[SpeedClass, tuple[str, ...]], tuple[int, float]] = {}

    def update(self, key: str, seconds_per_step: float) -> None:
        self._measured[key] = seconds_per_step
        self._version += 1

    def measured(self, c: SpeedClass, device: str) -> float | None:
        return self._measured.get(speed_key(c, device))

    def seconds_per_step(self, c: SpeedClass, devices: tuple[str, ...]) -> float:
        """The mean measured speed on `devices` (they share the queue), else the guess for the first."""
        version = self._version
        memo = self._memo.get((c, devices))
        if memo is not None and memo[0] == version:
            return memo[1]
        known = [v for d in devices if (v := self._measured.get(speed_key(c, d))) is not None]
        value = sum(known) / len(known) if known else guess_seconds_per_step(c, devices[0] if devices else "cpu")
        self._memo[(c, devices)] = (version, value)
        return value


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionLimits:
    """What the operator allows. None switches a check off."""

    max_side: int = 1024
    max_pixels: int | None = None
    max_iterations: int = 2000
    max_frames: int = 600
    max_cuts: int = 128
    max_job_seconds: float | None = 4 * 3600.0
    memory_gb: float | None = None  # what the smallest device may use, in GiB; None: not checked
    memory_of: str = "the device"  # how a refusal names it ("cuda:0", "the CPU's RAM")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    steps: int
    frames: int
    memory_gb: float
    seconds: float


def largest_fitting(spec: JobSpec, memory_gb: float) -> tuple[int, int] | None:
    """The largest size of `spec`'s shape (sides in steps of 16) whose estimate fits `memory_gb`; None: not even 16²."""
    long_side, short_side = max(spec.width, spec.height), min(spec.width, spec.height)

    def size(side: int) -> tuple[int, int]:
        other = max(16, short_side * side // long_side // 16 * 16)
        return (side, other) if spec.width >= spec.height else (other, side)

    def fits(side: int) -> bool:
        w, h = size(side)
        return estimate_memory_gb(dataclasses.replace(spec, width=w, height=h)) <= memory_gb

    low, high = 1, max(1, long_side // 16)  # in steps of 16: the estimate grows with the side
    if not fits(16):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid * 16) else (low, mid - 1)
    return size(low * 16)


def _too_big(spec: JobSpec, memory: float, memory_gb: float, memory_of: str) -> str:
    need = f"{spec.width}×{spec.height} with {spec.num_cuts} cuts needs about {memory:.1f} GB but {memory_of} has "
    fitting = largest_fitting(spec, memory_gb)
    if fitting is None:
        return need + f"{memory_gb:.1f} GB, too little even at 16×16: use fewer cuts"
    return need + f"{memory_gb:.1f} GB: the largest that fits is {fitting[0]}×{fitting[1]} (or use fewer cuts)"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def admit(spec: JobSpec, limits: AdmissionLimits, seconds_per_step: float) -> Estimate:
    """Check a spec against the limits and estimates; raise `QueueRefused` saying what to change."""
    if spec.width < 16 or spec.height < 16:
        raise QueueRefused(f"the size {spec.width}×{spec.height} is too small: use at least 16×16")
    if max(spec.width, spec.height) > limits.max_side:
        raise QueueRefused(
            f"the size {spec.width}×{spec.height} is too large: keep each side at most {limits.max_side}"
        )
    if limits.max_pixels is not None and spec.width * spec.height > limits.max_pixels:
        side = int(math.sqrt(limits.max_pixels))
        raise QueueRefused(f"{spec.width}×{spec.height} has too many pixels: stay under {side}×{side}")
    if not 1 <= spec.iterations <= limits.max_iterations:
        raise QueueRefused(f"iterations must be between 1 and {limits.max_iterations} (got {spec.iterations})")
    if spec.iterations_first_frame is not None and not 1 <= spec.iterations_first_frame <= limits.max_iterations:
        raise QueueRefused(f"first-frame iterations must be between 1 and {limits.max_iterations}")
    if not 1 <= spec.num_cuts <= limits.max_cuts:
        raise QueueRefused(f"cuts must be between 1 and {limits.max_cuts} (got {spec.num_cuts})")
    if spec.kind in (JobKind.ANIMATION, JobKind.STYLE_TRANSFER) and not 1 <= spec.frames <= limits.max_frames:
        raise QueueRefused(f"frames must be between 1 and {limits.max_frames} (got {spec.frames})")
    if spec.kind == JobKind.STYLE_TRANSFER and not spec.video:
        raise QueueRefused("style transfer needs a source video")
    if spec.kind == JobKind.UPSCALE and not (spec.init_image or spec.video):
        raise QueueRefused("upscaling needs an image or a video")
    if spec.kind != JobKind.UPSCALE:
        try:
            validate(spec.text_prompts, spec.image_prompts, spec.noise_prompts)
        except InvalidJob as e:
            raise QueueRefused(str(e)) from e
    steps, frames = job_steps(spec)
    memory = estimate_memory_gb(spec)
    if limits.memory_gb is not None and memory > limits.memory_gb and spec.kind != JobKind.UPSCALE:
        raise QueueRefused(_too_big(spec, memory, limits.memory_gb, limits.memory_of))
    seconds = steps * seconds_per_step
    if limits.max_job_seconds is not None and seconds > limits.max_job_seconds:
        raise QueueRefused(
            f"this job would take about {_minutes(seconds)} ({steps} iterations); the limit is "
            f"{_minutes(limits.max_job_seconds)}: use fewer iterations or frames, a smaller size or fewer cuts"
        )
    return Estimate(steps=steps, frames=frames, memory_gb=memory, seconds=seconds)
