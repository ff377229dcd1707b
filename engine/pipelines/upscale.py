"""Upscale jobs (JobKind.UPSCALE): a still or every frame of a video, through Real-ESRGAN (engine.models.esrgan).

`render_upscale` is the pipeline `Renderer.render` runs for them. Everything that can be refused is refused
before any pixel is upscaled: the input must be a readable image (`spec.init_image`) or video
(`spec.video`), the model must exist, and the output must stay under the renderer's pixel limit. A
still keeps its generation parameters (PNG text chunks / `engine_params`) with the model and scale
added; a video is upscaled frame by frame at its own frame rate, re-encoded, gets its audio back, and
can be cancelled (partial but playable) or checkpointed and resumed at a frame boundary. Its frames
live in the job's work folder (`workspace`); a checkpoint names them by file name and SHA-256.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from engine.errors import InvalidJob, ModelLoadError
from engine.jobs import Artifact, JobKind, JobSpec, Progress, ProgressCallback
from engine.media import probe, video_tools
from engine.media.ffmpeg import FFmpegError, read_tags
from engine.models import esrgan
from engine.models.registry import REAL_ESRGAN_MODELS
from engine.optim.pixels import to_image
from engine.pipelines import images
from engine.pipelines.checks import DEFAULT_MAX_UPSCALE_PIXELS, VideoLimits
from engine.pipelines.context import RenderContext
from engine.pipelines.metadata import public_spec, scrub_inherited
from engine.pipelines.resume import decode_checkpoint, encode_checkpoint
from engine.pipelines.workspace import FrameStore, job_workspace

log = logging.getLogger(__name__)

AUTO_TILE = 256  # inputs with a side above AUTO_TILE_ABOVE are upscaled in tiles this big (memory, progress)
AUTO_TILE_ABOVE = 512
TILE_PAD = 10


@dataclasses.dataclass(frozen=True, slots=True)
class UpscalePlan:
    """A checked upscale job: what goes in, what comes out, at what scale."""

    source: Path
    is_video: bool
    scale: int
    width: int  # input size (a video: its frames)
    height: int
    tile: int
    info: probe.VideoInfo | None = None


def check_upscale_spec(
    spec: JobSpec,
    output: Path,
    max_pixels: int = DEFAULT_MAX_UPSCALE_PIXELS,
    limits: VideoLimits | None = None,
    cancel: threading.Event | None = None,
) -> UpscalePlan:
    """Refuse a bad upscale job before any work: input, model name, tile, output format and pixel limit.

    A source video is also held to `limits` (length, frames, pixels per frame), as a style transfer's is.
    """
    if spec.kind is not JobKind.UPSCALE:
        raise InvalidJob(f"{spec.kind.value} is not an upscale job")
    if bool(spec.init_image) == bool(spec.video):
        raise InvalidJob("an upscale job takes one input: an image (init_image) or a video (video)")
    tile = spec.upscale_tile
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 0):
        raise InvalidJob(f"upscale_tile must be a whole number ≥ 0, got {tile!r}")
    scale = esrgan.known_scale(spec.upscale_model)
    if scale is None and not Path(spec.upscale_model).is_file():
        raise InvalidJob(
            f"unknown upscaler {public_spec(spec).upscale_model!r}; use tiny, a weight file, or one of: "
            + ", ".join(Path(n).stem for n in REAL_ESRGAN_MODELS)
        )
    if spec.video:
        if output.suffix.lower() != ".mp4":
            raise InvalidJob(f"an upscaled video is written as .mp4, not {output.name!r}")
        limits = limits or VideoLimits()
        info = probe.check_video(  # InvalidJob for anything that is not a decodable video within the limits
            spec.video,
            max_seconds=limits.max_video_seconds,
            max_frames=limits.max_frames,
            max_pixels=limits.max_video_pixels,
            cancel=cancel,
        )
        width, height = info.width, info.height
        source = Path(spec.video)
    else:
        assert spec.init_image is not None
        if output.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
            raise InvalidJob(f"an upscaled image is written as .png, .jpg or .webp, not {output.name!r}")
        width, height = probe.check_image(spec.init_image, max_pixels=max_pixels)  # size before decoding
        source, info = Path(spec.init_image), None
    if scale is not None:
        _check_pixels(width, height, scale, max_pixels)
    if tile is None:
        tile = AUTO_TILE if max(width, height) > AUTO_TILE_ABOVE else 0
    return UpscalePlan(source, info is not None, scale or 0, width, height, tile, info)


def _check_pixels(width: int, height: int, scale: int, max_pixels: int) -> None:
    out_w, out_h = width * scale, height * scale
    if out_w * out_h > max_pixels:
        raise InvalidJob(
            f"upscaling {width}×{height} ×{scale} gives {out_w}×{out_h}, more than the {max_pixels:,} pixels allowed"
        )


def render_upscale(
    ctx: RenderContext,
    spec: JobSpec,
    output: Path,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    resume: bytes | None = None,
    work_dir: Path | None = None,
) -> Artifact:
    """Upscale `spec`'s image or video into `output`; partial when cancelled (see the module docstring)."""
    output = Path(output)
    plan = check_upscale_spec(spec, output, ctx.max_upscale_pixels, ctx.video_limits, cancel)
    checkpoint = decode_checkpoint(resume, spec, section="upscale") if resume is not None else None
    model = _upscaler(ctx, spec)
    if plan.scale == 0:  # a weight file: its scale is known once loaded (still before any work)
        _check_pixels(plan.width, plan.height, model.scale, ctx.max_upscale_pixels)
    output.parent.mkdir(parents=True, exist_ok=True)
    if plan.is_video:
        with job_workspace(output, work_dir) as work:
            return _upscale_video(spec, plan, model, output, work, on_progress, cancel, checkpoint)
    return _upscale_still(spec, plan, model, output, on_progress, cancel)


def _upscaler(ctx: RenderContext, spec: JobSpec) -> esrgan.Upscaler:
    """The job's upscaler; a member's own file that is not one is their input's fault, not our models'."""
    try:
        return ctx.upscalers.get(spec.upscale_model)
    except ModelLoadError as exc:
        if Path(spec.upscale_model).is_file():
            log.info("not an upscaler: %s", exc)  # the loader's words name the host's folders
            raise InvalidJob(f"{Path(spec.upscale_model).name} is not an upscaler model that can be loaded") from None
        raise


def _seed(spec: JobSpec) -> int:
    return spec.seed if spec.seed is not None else 0


def _progress(
    frame: int, frames: int, tiles: int, checkpoint: Callable[[], bytes]
) -> Callable[[int, int, torch.Tensor], Progress]:
    """A factory of Progress for tile `done` of `total` within `frame` (1-based) of `frames`."""

    def make(done: int, total: int, canvas: torch.Tensor) -> Progress:
        return Progress(
            iteration=done,
            total=total,
            loss=0.0,
            frame=frame,
            frames=frames,
            step=(frame - 1) * tiles + done,
            steps=frames * tiles,
            preview=lambda: images.webp_preview(to_image(canvas)),
            checkpoint=checkpoint,
        )

    return make


def _checkpoint(spec: JobSpec, frames: int, written: FrameStore | None) -> bytes:
    """The job's state at its last frame boundary: the frames written so far, by name and SHA-256."""
    upscale = {"frames": frames, "written": written.references() if written is not None else []}
    return encode_checkpoint(spec, _seed(spec), {"upscale": upscale})


# -- stills -------------------------------------------------------------------------------------------


def _upscale_still(
    spec: JobSpec,
    plan: UpscalePlan,
    model: esrgan.Upscaler,
    output: Path,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> Artifact:
    source = images.read_image_with_text(plan.source)
    make = _progress(1, 1, esrgan.tile_count(plan.width, plan.height, plan.tile), lambda: _checkpoint(spec, 1, None))

    def on_tile(done: int, total: int, canvas: torch.Tensor) -> None:
        if on_progress is not None:
            on_progress(make(done, total, canvas))

    upscaled, done, total = esrgan.upscale_image_tiles(
        source, model, tile=plan.tile, tile_pad=TILE_PAD, on_tile=on_tile, cancel=cancel
    )
    text, params = _still_metadata(source, plan, spec, model.scale)
    work = output.with_name(f".{output.stem}.part{output.suffix}")
    try:
        if output.suffix.lower() in (".jpg", ".jpeg") and upscaled.mode != "RGB":
            upscaled = upscaled.convert("RGB")
        images.save_image(upscaled, work, text, params)
        os.replace(work, output)
    finally:
        work.unlink(missing_ok=True)
    partial = done < total
    log.info("upscaled %s ×%d → %s%s", plan.source.name, model.scale, output, " (partial)" if partial else "")
    return Artifact(
        kind=JobKind.UPSCALE,
        paths=(str(output),),
        seed=_seed(spec),
        width=upscaled.width,
        height=upscaled.height,
        steps_done=done,
        frames_done=1,
        partial=partial,
    )


def _upscale_record(spec: JobSpec, plan: UpscalePlan, scale: int) -> dict[str, Any]:
    return {
        "model": public_spec(spec).upscale_model,
        "scale": scale,
        "source": plan.source.name,
        "source_size": [plan.width, plan.height],
        "source_sha256": images.sha256_file(plan.source),
    }


def _still_metadata(
    source: Image.Image, plan: UpscalePlan, spec: JobSpec, scale: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The source's text keys and `engine_params` (when it has them), plus the upscale model and scale."""
    text = {k: v for k, v in source.info.get("_text", {}).items() if k != images.PARAMS_KEY}
    try:
        params = images.read_params(plan.source)
    except (ValueError, OSError):
        params = {}  # not made by this engine: only the upscale record
    text, params = scrub_inherited(text, params)
    if not text and params.get("prompts"):  # an engine JPEG: its prompts live in the JSON only
        text = {"text_prompts": params["prompts"].get("text", "")}
    text.update(upscale_model=public_spec(spec).upscale_model, upscale_scale=scale)
    params["upscale"] = _upscale_record(spec, plan, scale)
    return text, params


# -- videos -------------------------------------------------------------------------------------------


def _upscale_video(
    spec: JobSpec,
    plan: UpscalePlan,
    model: esrgan.Upscaler,
    output: Path,
    work: Path,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
    checkpoint: dict[str, Any] | None,
) -> Artifact:
    info = plan.info
    assert info is not None
    rate = info.fps if 0 < info.fps <= video_tools.MAX_FRAMERATE else info.frames / max(info.seconds, 1e-3)
    sources = video_tools.extract_video_frames(plan.source, rate, work / "source", cancel=cancel)
    frames = len(sources)
    up_dir = work / "upscaled"
    up_dir.mkdir(exist_ok=True)
    written = FrameStore(up_dir)
    if checkpoint is not None:
        _restore(checkpoint, frames, written)
    tiles = esrgan.tile_count(plan.width, plan.height, plan.tile)
    for index in range(len(written), frames):
        if cancel is not None and cancel.is_set() and written:  # a partial video needs one frame at least
            break
        make = _progress(index + 1, frames, tiles, lambda: _checkpoint(spec, frames, written))

        def on_tile(done: int, total: int, canvas: torch.Tensor, make: Any = make) -> None:
            if on_progress is not None:
                on_progress(make(done, total, canvas))

        with Image.open(sources[index], formats=["JPEG"]) as opened:  # our own extracted frames
            frame = opened.convert("RGB")
        upscaled, _, _ = esrgan.upscale_image_tiles(frame, model, tile=plan.tile, tile_pad=TILE_PAD, on_tile=on_tile)
        path = up_dir / video_tools.frame_name(index + 1)
        upscaled.save(path, "JPEG", quality=esrgan.JPEG_QUALITY)
        written.add(path)
    partial = len(written) < frames
    _encode(spec, plan, model.scale, written.paths, rate, output, work / "encode", None if partial else cancel)
    log.info("upscaled %d of %d frames ×%d into %s", len(written), frames, model.scale, output)
    return Artifact(
        kind=JobKind.UPSCALE,
        paths=(str(output),),
        seed=_seed(spec),
        width=plan.width * model.scale,
        height=plan.height * model.scale,
        steps_done=len(written) * tiles,
        frames_done=len(written),
        partial=partial,
    )


def _restore(checkpoint: dict[str, Any], frames: int, written: FrameStore) -> None:
    saved = checkpoint["upscale"]
    if saved.get("frames") != frames or len(saved.get("written", [])) > frames:
        raise InvalidJob("the saved job state does not match this video")
    written.restore(saved["written"])  # StaleCheckpoint when the work folder lost a frame
    log.info("resuming the upscale at frame %d of %d", len(written) + 1, frames)


def _encode(
    spec: JobSpec,
    plan: UpscalePlan,
    scale: int,
    frames: list[Path],
    rate: float,
    output: Path,
    work: Path,
    cancel: threading.Event | None,
) -> None:
    """MP4 at the source's rate, the source's title and comment (plus the upscale record), its audio, the fit."""
    try:
        tags = read_tags(plan.source)
    except FFmpegError:
        tags = {}
    comment = tags.get("comment", "")
    try:
        params = json.loads(comment) if comment else {}
        if not isinstance(params, dict):
            raise ValueError
        _, params = scrub_inherited({}, params)
    except ValueError:
        params = {"source_comment": comment}
    params["upscale"] = _upscale_record(spec, plan, scale)
    comment = json.dumps(params, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert plan.info is not None
    video_tools.encode_with_audio(
        output,
        rate,
        frames,
        audio_from=plan.source if plan.info.has_audio else None,
        work=work,
        title=tags.get("title", ""),
        comment=comment,
        max_bytes=spec.max_bytes,
        cancel=cancel,
    )
