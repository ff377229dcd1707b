"""The job model shared by bot, storage and engine. Standard library only.

A `JobSpec` is everything needed to render a job (and to render it again); it travels as JSON
through storage. The renderer reports `Progress` while it works and returns an `Artifact`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable
from typing import Any

# The model names a job takes when it names none, and the random-weight preset; everyone imports them from here.
DEFAULT_VQGAN = "vqgan_imagenet_f16_16384"
DEFAULT_CLIP = "ViT-B/32"
DEFAULT_UPSCALER = "RealESRGAN_x4plus"
TINY = "tiny"  # the preset of small random-weight models (engine.models.tiny): offline, seconds on a CPU


class JobKind(enum.StrEnum):
    IMAGE = "image"
    ANIMATION = "animation"
    STYLE_TRANSFER = "style_transfer"
    UPSCALE = "upscale"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """What to render. Field names follow the seed package's where it has one (docs/engine.md, "The seed API")."""

    kind: JobKind = JobKind.IMAGE
    # prompts, in the engine's syntax: `^` phrases, `|` parts, `body:weight:stop`
    text_prompts: str = ""
    image_prompts: str = ""
    noise_prompts: str = ""
    # the canvas and the optimisation
    width: int = 256
    height: int = 256
    iterations: int = 100  # a still: all iterations; a video: iterations per frame
    seed: int | None = None  # None: the renderer draws one and reports it in the Artifact
    vqgan_model: str = DEFAULT_VQGAN
    vqgan_yaml_url: str | None = None  # a custom VQGAN; None: from the registry
    vqgan_ckpt_url: str | None = None
    clip_model: str = DEFAULT_CLIP
    num_cuts: int = 32
    cut_power: float = 1.0
    cut_method: str = "kornia"
    optimizer: str = "Adam"
    learning_rate: float = 0.1
    adaptive_lr: bool = False
    init_image: str | None = None  # a local file path (the bot downloads attachments first)
    init_noise: str | None = None  # "pixels" or "gradient"
    init_weight: float = 0.0
    init_image_method: str = "original"
    save_every: int | None = None
    timelapse_every: int | None = None  # a still: also write `<output stem>.timelapse.mp4`, a frame every N steps
    # animations (JobKind.ANIMATION) and style transfer
    frames: int = 1
    iterations_first_frame: int | None = None  # None: same as `iterations`
    zoom: float = 1.0
    shift_x: int = 0
    shift_y: int = 0
    change_prompts_on_frame: tuple[int, ...] = ()
    smoother: bool = False
    smoother_alpha: float = 0.7
    smoother_buffer_len: int = 5
    fps: float = 30.0  # output frame rate; for style transfer None-like 0 means "the extraction rate"
    interpolate_fps: float | None = None  # motion interpolation to this rate
    # style transfer (JobKind.STYLE_TRANSFER)
    video: str | None = None  # a local video file path
    extraction_fps: float = 30.0
    source_image_weight: float = 2.0
    source_prompt_weight: float = 0.0
    # upscaling (JobKind.UPSCALE): the image or video to upscale is `init_image` / `video`
    upscale_model: str = DEFAULT_UPSCALER  # a registry name (".pth" optional), a weight file, or "tiny"
    upscale_tile: int | None = None  # tile side in input pixels; 0: whole image; None: chosen by size
    # delivery
    max_bytes: int | None = None  # fit the result under this many bytes


def spec_to_json(spec: JobSpec) -> str:
    """Serialise a spec to a JSON object (stable key order)."""
    return json.dumps(dataclasses.asdict(spec), sort_keys=True)


def spec_from_dict(data: dict[str, Any]) -> JobSpec:
    """Build a spec from a decoded JSON object; unknown keys are an error, missing keys take defaults."""
    names = {f.name for f in dataclasses.fields(JobSpec)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown job parameter(s): {', '.join(unknown)}")
    values = dict(data)
    if "kind" in values:
        values["kind"] = JobKind(values["kind"])
    if "change_prompts_on_frame" in values:
        values["change_prompts_on_frame"] = tuple(int(v) for v in values["change_prompts_on_frame"])
    return JobSpec(**values)


def spec_from_json(text: str) -> JobSpec:
    """Inverse of `spec_to_json`."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("a job spec must be a JSON object")
    return spec_from_dict(data)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """One step of a running job, handed to the progress callback on the rendering thread.

    `preview` and `checkpoint` do real work (encode the picture the iteration decoded, which is z
    before its update; serialise the state); call them only when the result is wanted, from inside
    the callback.
    """

    iteration: int  # 1-based, within the current frame
    total: int  # iterations in the current frame
    loss: float
    frame: int = 1  # 1-based
    frames: int = 1
    step: int = 0  # iterations done over the whole job
    steps: int = 0  # iterations the whole job will take
    preview: Callable[[], bytes] = dataclasses.field(default=lambda: b"", repr=False)  # small WebP
    checkpoint: Callable[[], bytes] = dataclasses.field(default=lambda: b"", repr=False)


ProgressCallback = Callable[[Progress], None]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    """What a job produced. `partial` is True when it was cancelled before the end."""

    kind: JobKind
    paths: tuple[str, ...]  # the main result first (PNG/JPG still, or MP4)
    seed: int
    width: int
    height: int
    steps_done: int
    frames_done: int = 1
    partial: bool = False
