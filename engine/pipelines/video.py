"""Video jobs end to end: checks, frames, encoding, audio and the size fit (animations and style transfer).

`render_video` is the pipeline `Renderer.render` runs for JobKind.ANIMATION and JobKind.STYLE_TRANSFER:
it refuses bad input before any rendering, renders the frames into the job's work folder
(`workspace.job_workspace`: the caller's `work_dir`, or a fresh one beside the output), encodes
them to MP4 (metadata in the container, optional motion interpolation), copies a style transfer's
source audio, fits the file under `spec.max_bytes`, and only then moves it into place. Every
ffmpeg step stops when the job is cancelled, except the encoding of the partial video a cancel
asks for. `render_frames` renders the frames alone into a folder the caller names (the seed API).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.jobs import Artifact, JobKind, JobSpec, ProgressCallback
from engine.media import probe, video_tools
from engine.pipelines import checks
from engine.pipelines.animation import AnimationLoop, Move
from engine.pipelines.context import RenderContext
from engine.pipelines.frame_loop import FrameLoop, FramesResult
from engine.pipelines.metadata import container_comment, public_spec
from engine.pipelines.resume import decode_checkpoint
from engine.pipelines.style_transfer import StyleTransferLoop
from engine.pipelines.workspace import job_workspace
from engine.prompts import ParsedPrompts

log = logging.getLogger(__name__)


def render_video(
    ctx: RenderContext,
    spec: JobSpec,
    output: Path,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    resume: bytes | None = None,
    work_dir: Path | None = None,
) -> Artifact:
    """Render an animation or a style transfer to the MP4 `output`; partial (but playable) when cancelled.

    Raises `Cancelled` when cancelled before there is a frame to show (while a source video is read).
    """
    limits = ctx.video_limits
    parsed = checks.check_video_spec(spec, limits, output)
    checkpoint = decode_checkpoint(resume, spec, section="video") if resume is not None else None
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    audio_from: str | None = None
    if spec.kind is JobKind.STYLE_TRANSFER:
        assert spec.video is not None
        info = probe.check_video(
            spec.video, max_seconds=limits.max_video_seconds, max_pixels=limits.max_video_pixels, cancel=cancel
        )
        checks.check_source_frames(max(1, int(info.seconds * spec.extraction_fps)), limits)
        audio_from = spec.video if info.has_audio else None
    with job_workspace(output, work_dir) as work:
        sources: list[str] = []
        if spec.kind is JobKind.STYLE_TRANSFER:
            assert spec.video is not None
            sources = video_tools.extract_video_frames(spec.video, spec.extraction_fps, work / "source", cancel=cancel)
            checks.check_source_frames(len(sources), limits)
        result = _frame_loop(ctx, spec, parsed, work / "frames", sources, checkpoint).run(on_progress, cancel)
        video_tools.encode_with_audio(
            output,
            spec.fps or spec.extraction_fps,  # a style transfer's 0 keeps the source's length
            result.paths,
            audio_from=audio_from,
            work=work / "encode",
            output_framerate=spec.interpolate_fps,
            title=_title(spec),
            comment=container_comment(result.params),
            max_bytes=spec.max_bytes,
            cancel=None if result.partial else cancel,  # the partial video is what the cancel asked for
        )
    log.info(
        "%s: %d frames%s into %s", spec.kind.value, result.frames_done, " (partial)" if result.partial else "", output
    )
    return Artifact(
        kind=spec.kind,
        paths=(str(output),),
        seed=result.seed,
        width=result.width,
        height=result.height,
        steps_done=result.steps_done,
        frames_done=result.frames_done,
        partial=result.partial,
    )


def _title(spec: JobSpec) -> str:
    """The video's title: its prompts, image prompts by file name."""
    public = public_spec(spec)
    return public.text_prompts or public.image_prompts or public.noise_prompts


def render_frames(
    ctx: RenderContext,
    spec: JobSpec,
    frames_dir: Path,
    *,
    sources: Sequence[str | Path] = (),
    names: Sequence[str] | None = None,
    moves: Sequence[Move] | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> FramesResult:
    """Render a video job's frames as JPGs into `frames_dir`, no video.

    A style transfer restyles `sources`; an animation may take its per-frame `moves` (zoom, shift_x,
    shift_y into frames 2..n) instead of the spec's constant ones.
    """
    parsed = checks.check_video_spec(spec, ctx.video_limits, frames_given=True)
    if spec.kind is JobKind.STYLE_TRANSFER:
        checks.check_source_frames(len(sources), ctx.video_limits)
    frames_dir.mkdir(parents=True, exist_ok=True)
    video_tools.remove_own_frames(frames_dir)
    loop = _frame_loop(ctx, spec, parsed, frames_dir, sources, None, names=names, moves=moves)
    return loop.run(on_progress, cancel)


def _frame_loop(
    ctx: RenderContext,
    spec: JobSpec,
    parsed: ParsedPrompts,
    frames_dir: Path,
    sources: Sequence[str | Path],
    checkpoint: dict[str, Any] | None,
    *,
    names: Sequence[str] | None = None,
    moves: Sequence[Move] | None = None,
) -> FrameLoop:
    if spec.kind is JobKind.ANIMATION:
        return AnimationLoop(
            ctx, spec, parsed, frames_dir, spec.frames, names=names, checkpoint=checkpoint, moves=moves
        )
    return StyleTransferLoop(ctx, spec, parsed, frames_dir, sources, names=names, checkpoint=checkpoint)
