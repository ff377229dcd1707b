"""Video jobs end to end: checks, frames, encoding, audio and the size fit (animations and style transfer).

`render_video` is what `Renderer.render` runs for JobKind.ANIMATION and JobKind.STYLE_TRANSFER: it
refuses bad input before any rendering, renders the frames into a working folder beside the output,
encodes them to MP4 (metadata in the container, optional motion interpolation), copies a style
transfer's source audio, fits the file under `spec.max_bytes`, and only then moves it into place.
`render_frames` renders the frames alone into a folder the caller names (the seed API).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from engine import fit, media, video_spec, video_tools
from engine.animation import AnimationLoop, Move
from engine.errors import InvalidJob, OutOfMemory
from engine.frame_loop import FrameLoop, FramesResult
from engine.jobs import Artifact, JobKind, JobSpec, ProgressCallback
from engine.prompts import ParsedPrompts
from engine.renderer import _load_checkpoint
from engine.style_transfer import StyleTransferLoop

if TYPE_CHECKING:
    from engine.renderer import Renderer

log = logging.getLogger(__name__)

_OWN_FRAME = re.compile(r"frame_\d{12}\.jpg")


def render_video(
    renderer: Renderer,
    spec: JobSpec,
    output: Path,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    resume: bytes | None = None,
) -> Artifact:
    """Render an animation or a style transfer to the MP4 `output`; partial (but playable) when cancelled."""
    limits = renderer.video_limits
    parsed = video_spec.check_video_spec(spec, limits, output)
    checkpoint = _load_checkpoint(resume, spec) if resume is not None else None
    if checkpoint is not None and "video" not in checkpoint:
        raise InvalidJob("the saved job state is not a video job's")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    has_audio = False
    sources: list[str] = []
    if spec.kind is JobKind.STYLE_TRANSFER:
        assert spec.video is not None
        info = media.check_video(spec.video, max_seconds=limits.max_video_seconds, max_pixels=limits.max_video_pixels)
        video_spec.check_source_frames(max(1, int(info.seconds * spec.extraction_fps)), limits)
        has_audio = info.has_audio
    work = Path(tempfile.mkdtemp(prefix=".vqbot-video-", dir=output.parent))
    try:
        if spec.kind is JobKind.STYLE_TRANSFER:
            assert spec.video is not None
            sources = video_tools.extract_video_frames(spec.video, spec.extraction_fps, work / "source")
            video_spec.check_source_frames(len(sources), limits)
        result = _run_locked(renderer, spec, parsed, work / "frames", sources, on_progress, cancel, checkpoint)
        _encode(spec, result, output, work, has_audio)
    finally:
        shutil.rmtree(work, ignore_errors=True)
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


def render_frames(
    renderer: Renderer,
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
    parsed = video_spec.check_video_spec(spec, renderer.video_limits, frames_given=True)
    if spec.kind is JobKind.STYLE_TRANSFER:
        video_spec.check_source_frames(len(sources), renderer.video_limits)
    frames_dir.mkdir(parents=True, exist_ok=True)
    for old in frames_dir.glob("frame_*.jpg"):  # only earlier frames of ours; nothing else is touched
        if _OWN_FRAME.fullmatch(old.name):
            old.unlink()
    return _run_locked(renderer, spec, parsed, frames_dir, sources, on_progress, cancel, None, names=names, moves=moves)


def _run_locked(
    renderer: Renderer,
    spec: JobSpec,
    parsed: ParsedPrompts,
    frames_dir: Path,
    sources: Sequence[str | Path],
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
    checkpoint: dict[str, Any] | None,
    *,
    names: Sequence[str] | None = None,
    moves: Sequence[Move] | None = None,
) -> FramesResult:
    with renderer._lock:  # one job at a time per device, as for stills
        try:
            models = renderer.models(spec)
            loop: FrameLoop
            if spec.kind is JobKind.ANIMATION:
                loop = AnimationLoop(
                    models, spec, parsed, frames_dir, spec.frames, names=names, bf16=renderer.bf16,
                    checkpoint=checkpoint, moves=moves,
                )  # fmt: skip
            else:
                loop = StyleTransferLoop(
                    models, spec, parsed, frames_dir, sources, names=names, bf16=renderer.bf16, checkpoint=checkpoint
                )
            return loop.run(on_progress, cancel)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise OutOfMemory(
                f"the {renderer.device} device ran out of memory at {spec.width}×{spec.height} with "
                f"{spec.num_cuts} cutouts; try a smaller size or fewer cutouts"
            ) from None


def container_comment(params: dict[str, Any]) -> str:
    """The MP4 comment: the generation parameters as one JSON object (prompts, seed, settings).

    Input files appear by name only: the video is posted, the folders of the machine that made it are not.
    """
    public = json.loads(json.dumps(params))
    spec, files = public.get("spec", {}), public.get("files", {})
    for key in ("video", "init_image"):
        if spec.get(key):
            spec[key] = Path(spec[key]).name
    if public.get("config", {}).get("init_image"):
        public["config"]["init_image"] = Path(public["config"]["init_image"]).name
    for entry in [files.get("init_image"), *(files.get("image_prompts") or [])]:
        if entry:
            entry["path"] = Path(entry["path"]).name
    return json.dumps(public, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _encode(spec: JobSpec, result: FramesResult, output: Path, work: Path, has_audio: bool) -> None:
    fps = spec.fps or spec.extraction_fps  # a style transfer's 0 keeps the source's length
    title = spec.text_prompts or spec.image_prompts or spec.noise_prompts
    comment = container_comment(result.params)
    if spec.kind is JobKind.ANIMATION or not has_audio:
        video_tools.encode_video(
            output, fps, frames=result.paths, output_framerate=spec.interpolate_fps, metadata_title=title,
            metadata_comment=comment, max_bytes=spec.max_bytes,
        )  # fmt: skip
        return
    silent = work / "silent.mp4"
    video_tools.encode_video(
        silent, fps, frames=result.paths, output_framerate=spec.interpolate_fps, metadata_title=title,
        metadata_comment=comment,
    )  # fmt: skip
    assert spec.video is not None
    final = Path(video_tools.copy_video_audio(spec.video, silent, work / "with_audio.mp4"))
    if spec.max_bytes is not None and final.stat().st_size > spec.max_bytes:
        final = fit.fit_video(final, spec.max_bytes, work / "fitted.mp4")
    os.replace(final, output)
