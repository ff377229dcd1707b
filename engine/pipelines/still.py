"""Still images (JobKind.IMAGE): one picture's optimisation, with `save_every` and an optional timelapse.

`render_still` is the pipeline `Renderer.render` runs for them. `start_still` builds a still's
optimisation from its spec (canvas, seed, starting latent, prompt targets); `python -m engine.bench`
times the steps of exactly that state, so the benchmark measures the renderer's own step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

from engine.jobs import Artifact, JobKind, JobSpec, Progress, ProgressCallback
from engine.optim.rng import JobRandom, job_seed
from engine.optim.state import OptimisationState
from engine.pipelines import checks, images
from engine.pipelines.context import RenderContext
from engine.pipelines.metadata import job_metadata
from engine.pipelines.resume import (
    decode_checkpoint,
    encode_checkpoint,
    optimisation_sections,
    restore_optimisation,
)
from engine.pipelines.timelapse import TimelapseRecorder
from engine.pipelines.workspace import job_workspace
from engine.prompts import ParsedPrompts

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class StillStart:
    """A still's optimisation, ready for its first (or next) step, and the canvas and seed it runs with."""

    state: OptimisationState
    width: int
    height: int
    seed: int


def render_still(
    ctx: RenderContext,
    spec: JobSpec,
    output: Path,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    resume: bytes | None = None,
    work_dir: Path | None = None,
) -> Artifact:
    """Render `spec` to the image file `output`; on cancel, save the picture as far as it got (partial).

    Only a timelapse has intermediate files (its stills, in the job's work folder).
    """
    parsed = checks.check_still_spec(spec)
    images.check_output_path(output)
    checkpoint = decode_checkpoint(resume, spec) if resume is not None else None
    if parsed.phrase_count > 1:
        warnings.warn("a still image uses only the first '^' phrase of its prompts", stacklevel=3)
    with contextlib.ExitStack() as stack:
        recorder = None
        if spec.timelapse_every is not None:
            work = stack.enter_context(job_workspace(Path(output), work_dir))
            recorder = TimelapseRecorder.for_spec(spec, output, work / "timelapse", checkpoint)
        start = start_still(ctx, spec, parsed, checkpoint=checkpoint)
        return _optimise(ctx, spec, output, start, on_progress, cancel, recorder)


def start_still(
    ctx: RenderContext, spec: JobSpec, parsed: ParsedPrompts, *, checkpoint: dict[str, Any] | None = None
) -> StillStart:
    """The optimisation of `spec` before its first step, or where `checkpoint` left it."""
    models = ctx.models_for(spec)
    init_picture = images.load_rgb(spec.init_image, "init image") if spec.init_image else None
    width, height = spec.width, spec.height
    if init_picture is not None:
        width, height = images.aspect_size(width, height, init_picture.width / init_picture.height)
    width, height = checks.floor_size(width, height, models.stride)
    seed = job_seed(spec.seed, checkpoint)
    state = OptimisationState(models, ctx.step_settings(spec, width, height), JobRandom.start(seed, ctx.device))
    if init_picture is not None:
        state.set_z_from_image(init_picture)
    elif spec.init_noise:
        state.set_z_from_noise(spec.init_noise)
    else:
        state.set_z_random()
    text, image, noise = parsed.phrase(0)
    state.set_prompts(text, [(part, images.load_rgb(part.text, "image prompt")) for part in image], noise)
    if checkpoint is not None:
        restore_optimisation(state, checkpoint)
    return StillStart(state, width, height, seed)


def _optimise(
    ctx: RenderContext,
    spec: JobSpec,
    output: Path,
    start: StillStart,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
    recorder: TimelapseRecorder | None,
) -> Artifact:
    state, seed = start.state, start.seed
    resolved = dataclasses.replace(spec, seed=seed)
    meta_text, params = job_metadata(resolved, start.width, start.height, ctx.device, ctx.precision)

    def preview() -> bytes:  # the picture the step already decoded, encoded only when the callback asks
        return images.webp_preview(state.preview_image())

    def checkpoint() -> bytes:
        timelapse = {"timelapse": recorder.state()} if recorder is not None else {}
        return encode_checkpoint(resolved, seed, {**optimisation_sections(state), **timelapse})

    total = spec.iterations
    log.info("rendering %dx%d, %d iterations, seed %d on %s", start.width, start.height, total, seed, ctx.device)
    while state.iteration < total:
        if cancel is not None and cancel.is_set():
            break
        loss = state.step()
        i = state.iteration
        if spec.save_every and i % spec.save_every == 0 and i < total:
            images.save_image(state.image(), output, meta_text, params)
        if recorder is not None:
            recorder.record(i, total, state.image)
        if on_progress is not None:
            on_progress(Progress(iteration=i, total=total, loss=float(loss), step=i, steps=total, preview=preview,
                                 checkpoint=checkpoint))  # fmt: skip
    images.save_image(state.image(), output, meta_text, params)
    partial = state.iteration < total
    extra = None
    if recorder is not None:  # the partial timelapse is what a cancel asks for: it is not stopped
        extra = recorder.finish(spec.text_prompts, json.dumps(params), spec.max_bytes, None if partial else cancel)
    return Artifact(
        kind=JobKind.IMAGE,
        paths=(str(output),) + ((str(extra),) if extra else ()),
        seed=seed,
        width=start.width,
        height=start.height,
        steps_done=state.iteration,
        partial=partial,
    )
