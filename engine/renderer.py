"""The long-lived renderer the render queue drives: models stay loaded, jobs report progress and can stop.

`Renderer.render` is a dispatcher: it refuses what no kind of job may ask for, takes the device's
lock (one job at a time per device), turns the device running out of memory into `OutOfMemory`, and
hands the job to its kind's pipeline (`engine.pipelines`) with the renderer's `RenderContext`. Call
it on one thread per device.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from engine.devices import out_of_memory_as_error, resolve_device
from engine.errors import InvalidJob
from engine.jobs import Artifact, JobKind, JobSpec, ProgressCallback
from engine.models.cache import LoadedModels
from engine.pipelines import checks
from engine.pipelines.animation import Move
from engine.pipelines.checks import (
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_UPSCALE_PIXELS,
    DEFAULT_MAX_VIDEO_PIXELS,
    DEFAULT_MAX_VIDEO_SECONDS,
    VideoLimits,
)
from engine.pipelines.context import Pipeline, RenderContext
from engine.pipelines.frame_loop import FramesResult
from engine.pipelines.still import render_still
from engine.pipelines.upscale import render_upscale
from engine.pipelines.video import render_frames, render_video

PIPELINES: dict[JobKind, Pipeline] = {
    JobKind.IMAGE: render_still,
    JobKind.ANIMATION: render_video,
    JobKind.STYLE_TRANSFER: render_video,
    JobKind.UPSCALE: render_upscale,
}


class Renderer:
    """Renders jobs on one device, keeping each (VQGAN, CLIP) pair and each upscaler loaded between jobs.

    `precision` (auto, fp32 or bf16) is resolved once, here: what the frozen models compute in for
    every job of this renderer (`engine.precision`; ValueError for bf16 where it cannot run).
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        *,
        model_dir: Path | None = None,
        precision: str = "auto",
        channels_last: bool = False,
        download_progress: bool = False,
        max_frames: int = DEFAULT_MAX_FRAMES,
        max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS,
        max_video_pixels: int = DEFAULT_MAX_VIDEO_PIXELS,
        max_upscale_pixels: int = DEFAULT_MAX_UPSCALE_PIXELS,
    ) -> None:
        self.device = resolve_device(device)
        self.context = RenderContext.create(
            self.device,
            model_dir=None if model_dir is None else Path(model_dir),
            precision=precision,
            channels_last=channels_last,
            download_progress=download_progress,
            video_limits=VideoLimits(
                max_frames=max_frames, max_video_seconds=max_video_seconds, max_video_pixels=max_video_pixels
            ),
            max_upscale_pixels=max_upscale_pixels,
        )
        self._lock = threading.Lock()

    def models(self, spec: JobSpec) -> LoadedModels:
        """The spec's VQGAN and CLIP, loaded on first use and kept (the bot preloads its default this way)."""
        return self.context.models_for(spec)

    def render(
        self,
        spec: JobSpec,
        output: Path,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        resume: bytes | None = None,
        work_dir: Path | None = None,
    ) -> Artifact:
        """Render `spec` to `output` (its suffix picks the format); see bot.queue.api.Renderer.

        `cancel` stops the job between iterations (a partial result) and stops any ffmpeg run within
        a second or two (`Cancelled` when there is nothing to show yet). `resume` is what an earlier
        `Progress.checkpoint()` returned.

        `work_dir` holds the job's intermediate files (source and rendered frames, timelapse stills,
        encoding stages). A caller that resumes jobs passes one folder per job that outlives its
        attempts: a checkpoint names the frames written there (file name and SHA-256) instead of
        carrying them, and a resume whose frames are gone or changed raises `StaleCheckpoint`
        ("the saved frames of this job are missing"; render the job again without `resume`).
        The engine never removes a given `work_dir`: that is the caller's job once the job has
        ended (done, failed or cancelled), and not when it stopped to be resumed. Without one, a
        fresh `.<output name>.work-*` folder beside the output is used and removed when the render ends.
        """
        checks.check_timelapse_spec(spec)
        pipeline = PIPELINES.get(spec.kind)
        if pipeline is None:
            raise InvalidJob(f"{spec.kind.value} jobs are not supported by this renderer yet")
        work = None if work_dir is None else Path(work_dir)
        with self._job(spec):
            return pipeline(
                self.context, spec, Path(output), on_progress=on_progress, cancel=cancel, resume=resume, work_dir=work
            )

    def render_frames(
        self,
        spec: JobSpec,
        frames_dir: Path,
        *,
        sources: Sequence[str | Path] = (),
        names: Sequence[str] | None = None,
        moves: Sequence[Move] | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> FramesResult:
        """A video job's frames as JPGs in `frames_dir`, no video (the seed API's video functions)."""
        with self._job(spec):
            return render_frames(
                self.context, spec, Path(frames_dir), sources=sources, names=names, moves=moves,
                on_progress=on_progress, cancel=cancel,
            )  # fmt: skip

    @contextlib.contextmanager
    def _job(self, spec: JobSpec) -> Iterator[None]:
        """One job at a time on this device, its out-of-memory error told in terms of the job."""
        with self._lock, out_of_memory_as_error(self._out_of_memory_advice(spec)):
            yield

    def _out_of_memory_advice(self, spec: JobSpec) -> str:
        if spec.kind is JobKind.UPSCALE:
            source = Path(spec.init_image or spec.video or "").name
            return f"upscaling {source} ran out of memory on {self.device}; use a smaller tile (upscale_tile=128)"
        return (
            f"the {self.device} device ran out of memory at {spec.width}×{spec.height} with "
            f"{spec.num_cuts} cutouts; try a smaller size or fewer cutouts"
        )
