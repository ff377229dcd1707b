"""The long-lived renderer the render queue drives: models stay loaded, jobs report progress and can stop.

`Renderer.render` renders a still (JobKind.IMAGE) from a `JobSpec`, or an animation or style transfer
(engine.video_jobs): call it on one thread per device.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from engine import allocator, fast, images, timelapse, validation
from engine.clip_import import tokenizer
from engine.errors import InvalidJob, OutOfMemory
from engine.jobs import Artifact, JobKind, JobSpec, Progress, ProgressCallback, spec_from_json, spec_to_json
from engine.prompts import ParsedPrompts, PromptType, parse_prompts
from engine.state import JobRandom, LoadedModels, OptimisationState, StepSettings
from engine.video_spec import DEFAULT_MAX_FRAMES, DEFAULT_MAX_VIDEO_PIXELS, DEFAULT_MAX_VIDEO_SECONDS, VideoLimits

tokenizer()  # import clip quietly before engine.models imports it with its warning
from engine import models as model_loader  # noqa: E402 - after the quiet clip import

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
PARAMS_SCHEMA = 1
ENGINE_VERSION = "0.1.0"


def resolve_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device; CUDA without a GPU falls back to the CPU with a warning."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidJob(f"unknown device {device!r}; use cpu or cuda[:N]") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(f"CUDA is not available; rendering on the CPU instead of {device}", stacklevel=3)
        return torch.device("cpu")
    if dev.type not in ("cpu", "cuda"):
        raise InvalidJob(f"unsupported device {device!r}; use cpu or cuda[:N]")
    return dev


class Renderer:
    """Renders jobs on one device, keeping each (VQGAN, CLIP) pair loaded between jobs."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        *,
        model_dir: Path | None = None,
        bf16: bool = False,
        channels_last: bool = False,
        download_progress: bool = False,
        max_frames: int = DEFAULT_MAX_FRAMES,
        max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS,
        max_video_pixels: int = DEFAULT_MAX_VIDEO_PIXELS,
        max_upscale_pixels: int = 4096 * 4096,  # engine.upscale_job.DEFAULT_MAX_UPSCALE_PIXELS
    ) -> None:
        self.device = resolve_device(device)
        self.model_dir = None if model_dir is None else Path(model_dir)
        on_cuda = self.device.type == "cuda"
        self.bf16 = bf16 and on_cuda  # both are CUDA speed options; the CPU keeps fp32 and NCHW
        self.channels_last = channels_last and on_cuda
        if self.device.type == "cpu":
            allocator.keep_freed_memory()  # the CPU step reallocates ~1 GiB each iteration at 256²
        self.download_progress = download_progress
        self.video_limits = VideoLimits(
            max_frames=max_frames, max_video_seconds=max_video_seconds, max_video_pixels=max_video_pixels
        )
        self._vqgans: dict[tuple[str, str | None, str | None], Any] = {}
        self._clips: dict[str, Any] = {}
        self.max_upscale_pixels = max_upscale_pixels  # output pixels of an upscaled still or video frame
        self._upscalers: dict[str, Any] = {}  # engine.upscale_job keeps the loaded upscalers here
        self._lock = threading.Lock()

    def models(self, spec: JobSpec) -> LoadedModels:
        """The spec's models, loaded on first use and kept."""
        key = (spec.vqgan_model, spec.vqgan_yaml_url, spec.vqgan_ckpt_url)
        if key not in self._vqgans:
            log.info("loading VQGAN %s on %s", spec.vqgan_model, self.device)
            vqgan = model_loader.load_vqgan(
                spec.vqgan_model,
                device=self.device,
                model_dir=self.model_dir,
                yaml_url=spec.vqgan_yaml_url,
                ckpt_url=spec.vqgan_ckpt_url,
                progress=self.download_progress,
            )
            fast.fuse_vqgan(vqgan)
            self._vqgans[key] = vqgan.to(memory_format=torch.channels_last) if self.channels_last else vqgan
        if spec.clip_model not in self._clips:
            log.info("loading CLIP %s on %s", spec.clip_model, self.device)
            clip = model_loader.load_clip(
                spec.clip_model, device=self.device, model_dir=self.model_dir, progress=self.download_progress
            )
            fast.fuse_clip(clip)
            self._clips[spec.clip_model] = clip.to(memory_format=torch.channels_last) if self.channels_last else clip
        return LoadedModels.build(self._vqgans[key], self._clips[spec.clip_model], self.device)

    def render(
        self,
        spec: JobSpec,
        output: Path,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        resume: bytes | None = None,
    ) -> Artifact:
        """Render `spec` to `output` (its suffix picks the format); see bot.ports.Renderer."""
        timelapse.check_spec(spec)
        if spec.kind is JobKind.UPSCALE:
            from engine import upscale_job  # imports this module; loaded on first use

            return upscale_job.render_upscale(
                self, spec, Path(output), on_progress=on_progress, cancel=cancel, resume=resume
            )
        if spec.kind in (JobKind.ANIMATION, JobKind.STYLE_TRANSFER):
            from engine import video_jobs  # imports this module; loaded on first use

            return video_jobs.render_video(
                self, spec, Path(output), on_progress=on_progress, cancel=cancel, resume=resume
            )
        if spec.kind is not JobKind.IMAGE:
            raise InvalidJob(f"{spec.kind.value} jobs are not supported by this renderer yet")
        parsed = validation.check_spec(spec)
        images.check_output_path(output)
        checkpoint = _load_checkpoint(resume, spec) if resume is not None else None
        with self._lock:
            recorder = timelapse.TimelapseRecorder.for_spec(spec, Path(output), checkpoint)
            try:
                return self._render_image(spec, parsed, Path(output), on_progress, cancel, checkpoint, recorder)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                raise OutOfMemory(
                    f"the {self.device} device ran out of memory at {spec.width}×{spec.height} with "
                    f"{spec.num_cuts} cutouts; try a smaller size or fewer cutouts"
                ) from None
            finally:
                if recorder is not None:
                    recorder.close()

    def _render_image(
        self,
        spec: JobSpec,
        parsed: ParsedPrompts,
        output: Path,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
        checkpoint: dict[str, Any] | None,
        recorder: timelapse.TimelapseRecorder | None = None,
    ) -> Artifact:
        models = self.models(spec)
        init_picture = images.load_rgb(spec.init_image, "init image") if spec.init_image else None
        width, height = spec.width, spec.height
        if init_picture is not None:
            width, height = images.aspect_size(width, height, init_picture.width / init_picture.height)
        width, height = validation.floor_size(width, height, models.stride)
        seed = (
            int(checkpoint["seed"]) if checkpoint else (spec.seed if spec.seed is not None else validation.draw_seed())
        )
        if parsed.phrase_count > 1:
            warnings.warn("a still image uses only the first '^' phrase of its prompts", stacklevel=3)

        # kornia-style code and any library draw from the global RNG; seed it here, on the rendering thread
        torch.manual_seed(seed)
        rng = JobRandom(seed, self.device)
        settings = StepSettings(
            width=width,
            height=height,
            num_cuts=spec.num_cuts,
            cut_power=spec.cut_power,
            cut_method=spec.cut_method,
            optimizer=spec.optimizer,
            learning_rate=spec.learning_rate,
            adaptive_lr=spec.adaptive_lr,
            init_weight=spec.init_weight,
            init_image_method=spec.init_image_method,
            bf16=self.bf16,
        )
        state = OptimisationState(models, settings, rng)
        if init_picture is not None:
            state.set_z_from_image(init_picture)
        elif spec.init_noise:
            state.set_z_from_noise(spec.init_noise)
        else:
            state.set_z_random()
        text, image, noise = parsed.phrase(0)
        pictures = [(part, images.load_rgb(part.text, "image prompt")) for part in image]
        state.set_prompts(text, pictures, noise)
        if checkpoint:
            state.load_state_dict(checkpoint["state"])
            _set_global_rng(checkpoint["global_rng"])

        resolved = dataclasses.replace(spec, seed=seed)
        meta_text, params = _metadata(resolved, width, height, self.device, self.bf16)
        total = spec.iterations
        log.info("rendering %dx%d, %d iterations, seed %d on %s", width, height, total, seed, self.device)
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
                on_progress(
                    Progress(
                        iteration=i,
                        total=total,
                        loss=float(loss),
                        step=i,
                        steps=total,
                        preview=lambda: images.webp_preview(state.image()),
                        checkpoint=lambda: _save_checkpoint(state, seed, resolved, recorder),
                    )
                )
        images.save_image(state.image(), output, meta_text, params)
        partial = state.iteration < total
        extra = recorder.finish(spec.text_prompts, json.dumps(params), spec.max_bytes) if recorder else None
        return Artifact(
            kind=JobKind.IMAGE,
            paths=(str(output),) + ((str(extra),) if extra else ()),
            seed=seed,
            width=width,
            height=height,
            steps_done=state.iteration,
            partial=partial,
        )


def _global_rng() -> dict[str, Any]:
    return {
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_global_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["cpu"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _save_checkpoint(
    state: OptimisationState, seed: int, spec: JobSpec, recorder: timelapse.TimelapseRecorder | None = None
) -> bytes:
    """The job's state as bytes that `torch.load(..., weights_only=True)` accepts."""
    buffer = io.BytesIO()
    payload = {
        "version": CHECKPOINT_VERSION,
        "seed": seed,
        "spec": spec_to_json(spec),
        "state": state.state_dict(),
        "global_rng": _global_rng(),
    }
    if recorder is not None:
        payload["timelapse"] = recorder.state()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _load_checkpoint(data: bytes, spec: JobSpec) -> dict[str, Any]:
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign blob: the job cannot resume from it
        raise InvalidJob(f"the saved job state cannot be read ({type(e).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("version") != CHECKPOINT_VERSION:
        raise InvalidJob("the saved job state is from another engine version")
    saved = dataclasses.replace(spec_from_json(checkpoint["spec"]), seed=None)
    if saved != dataclasses.replace(spec, seed=None):
        raise InvalidJob("the saved job state belongs to a different job")
    if spec.seed is not None and spec.seed != checkpoint["seed"]:
        raise InvalidJob("the saved job state has a different seed")
    return checkpoint  # type: ignore[no-any-return]


def _metadata(
    spec: JobSpec, width: int, height: int, device: torch.device, bf16: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The seed's PNG text keys and the `engine_params` object (engine.md §7)."""
    text = {
        "text_prompts": spec.text_prompts,
        "image_prompts": spec.image_prompts,
        "noise_prompts": spec.noise_prompts,
        "iterations": spec.iterations,
        "init_image": spec.init_image,
        "save_every": spec.save_every,
        "cut_method": spec.cut_method,
        "seed": spec.seed,
    }
    files: dict[str, Any] = {"init_image": None, "image_prompts": []}
    if spec.init_image:
        files["init_image"] = {"path": spec.init_image, "sha256": images.sha256_file(spec.init_image)}
    for path in _image_paths(spec):
        files["image_prompts"].append({"path": path, "sha256": images.sha256_file(path)})
    params = {
        "schema": PARAMS_SCHEMA,
        "engine": ENGINE_VERSION,
        "torch": torch.__version__,
        "device": device.type,
        "dtype": "bfloat16" if bf16 else "float32",
        "config": {
            "vqgan_model_name": spec.vqgan_model,
            "vqgan_model_yaml_url": spec.vqgan_yaml_url,
            "vqgan_model_ckpt_url": spec.vqgan_ckpt_url,
            "clip_model": spec.clip_model,
            "clip_sha256": _clip_sha256(spec.clip_model),
            "requested_size": [spec.width, spec.height],
            "output_image_size": [width, height],
            "cut_method": spec.cut_method,
            "num_cuts": spec.num_cuts,
            "cut_power": spec.cut_power,
            "optimizer": spec.optimizer,
            "learning_rate": spec.learning_rate,
            "adaptiveLR": spec.adaptive_lr,
            "init_image_method": spec.init_image_method,
            "init_weight": spec.init_weight,
            "init_noise": spec.init_noise,
            "seed": spec.seed,
        },
        "prompts": {"text": spec.text_prompts, "image": spec.image_prompts, "noise": spec.noise_prompts},
        "iterations": spec.iterations,
        "save_every": spec.save_every,
        "files": files,
        "spec": json.loads(spec_to_json(spec)),
    }
    return text, params


def _clip_sha256(name: str) -> str | None:
    """The registry's SHA-256 of a CLIP checkpoint (None for tiny and unknown names)."""
    from engine.registry import CLIP_MODELS

    known = CLIP_MODELS.get(name)
    return None if known is None else known.sha256


def _image_paths(spec: JobSpec) -> list[str]:
    """Image-prompt paths of every phrase, in order and without repeats."""
    seen: list[str] = []
    for phrase in parse_prompts(spec.image_prompts, PromptType.IMAGE):
        for part in phrase:
            if part.text not in seen:
                seen.append(part.text)
    return seen
