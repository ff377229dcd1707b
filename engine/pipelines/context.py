"""What a pipeline may use of the renderer that runs it, and the shape every pipeline has.

The renderer takes the device's lock and maps out-of-memory errors; inside, a pipeline sees only
this context: the device, the models (loaded on first use and kept), the upscalers, the limits a
job must stay within, and the numeric options of the device. Everything about how a job runs on
the device comes from here, so a new option is one new field.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Protocol

import torch

from engine.devices import keep_freed_memory
from engine.jobs import Artifact, JobSpec, ProgressCallback
from engine.models.cache import LoadedModels, ModelCache, UpscalerCache
from engine.optim.state import StepSettings
from engine.pipelines.checks import DEFAULT_MAX_UPSCALE_PIXELS, VideoLimits
from engine.precision import FP32, Precision, resolve_precision


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RenderContext:
    """One renderer's device, models and limits, as its pipelines see them."""

    device: torch.device
    models: ModelCache
    upscalers: UpscalerCache
    video_limits: VideoLimits = dataclasses.field(default_factory=VideoLimits)
    max_upscale_pixels: int = DEFAULT_MAX_UPSCALE_PIXELS  # output pixels of an upscaled still or video frame
    precision: Precision = FP32  # what the frozen models compute in (engine.precision)

    @classmethod
    def create(
        cls,
        device: torch.device,
        *,
        model_dir: Path | None = None,
        precision: str = "auto",
        channels_last: bool = False,
        download_progress: bool = False,
        video_limits: VideoLimits | None = None,
        max_upscale_pixels: int = DEFAULT_MAX_UPSCALE_PIXELS,
        random_weights: bool = False,
    ) -> RenderContext:
        """The context of a renderer on `device` (the benchmark's too, with `random_weights`).

        `precision` is auto, fp32 or bf16 (resolved here, once). channels_last is a CUDA option; on
        the CPU the models keep NCHW (docs/engine.md, "Precision").
        """
        on_cuda = device.type == "cuda"
        if device.type == "cpu":
            keep_freed_memory()  # the CPU step reallocates ~1 GiB each iteration at 256²
        resolved = resolve_precision(precision, device)
        models = ModelCache(
            device, model_dir=model_dir, precision=resolved, channels_last=channels_last and on_cuda,
            download_progress=download_progress, random_weights=random_weights,
        )  # fmt: skip
        return cls(
            device=device,
            models=models,
            upscalers=UpscalerCache(device, model_dir=model_dir, download_progress=download_progress),
            video_limits=video_limits or VideoLimits(),
            max_upscale_pixels=max_upscale_pixels,
            precision=resolved,
        )

    def models_for(self, spec: JobSpec) -> LoadedModels:
        """The job's VQGAN and CLIP, loaded on first use."""
        return self.models.for_job(spec)

    def step_settings(self, spec: JobSpec, width: int, height: int) -> StepSettings:
        """The optimisation settings of `spec` on its final canvas."""
        return StepSettings.for_job(spec, width, height)


class Pipeline(Protocol):
    """Renders one kind of job; `Renderer.render` calls it holding the device lock."""

    def __call__(
        self,
        ctx: RenderContext,
        spec: JobSpec,
        output: Path,
        *,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
        resume: bytes | None,
        work_dir: Path | None,
    ) -> Artifact: ...
