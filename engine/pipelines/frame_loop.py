"""The frame-by-frame loop both video modes share: steps, progress, cancel, smoother, frame files, checkpoints.

A subclass says how a frame starts (`setup_frame`) and what canvas the job has (`canvas`); this
class runs each frame's iterations, decodes the saved frame (the smoothed latent with the smoother,
else z itself: always AFTER the frame's iterations and BEFORE the next frame's zoom or target), and
writes it once as a JPG into the frames folder. A checkpoint taken at any iteration holds everything
the job needs to continue exactly there: z, optimizer, iteration, frame, phrase, prompt targets,
smoother, every RNG, and the names and SHA-256 of the frames already written (they stay in the
job's work folder, `workspace.FrameStore`), so a resumed job never renders a finished frame again
and the checkpoint's size does not grow with the frames done.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from engine.errors import InvalidJob
from engine.jobs import JobKind, JobSpec, Progress, ProgressCallback
from engine.media.video_tools import frame_name
from engine.optim.losses import PromptTarget
from engine.optim.pixels import to_image
from engine.optim.rng import JobRandom, job_seed
from engine.optim.smoother import EWMASmoother
from engine.optim.state import OptimisationState, StepSettings
from engine.pipelines import checks, images
from engine.pipelines.context import RenderContext
from engine.pipelines.metadata import file_name, job_metadata
from engine.pipelines.resume import encode_checkpoint, optimisation_sections, restore_optimisation
from engine.pipelines.workspace import FrameStore
from engine.prompts import ParsedPrompts, WeightedPrompt

log = logging.getLogger(__name__)


def first_frame_iterations(spec: JobSpec) -> int:
    """Iterations of frame 1 (`iterations_first_frame`, or `iterations` when unset)."""
    return spec.iterations if spec.iterations_first_frame is None else spec.iterations_first_frame


def phrase_for_frame(spec: JobSpec, frame: int) -> int:
    """The series phrase of 1-based `frame`, before clamping to the last phrase (docs/engine.md, "Prompts").

    An animation moves on AFTER each listed frame; a style transfer moves on BEFORE it.
    """
    listed = set(spec.change_prompts_on_frame)
    if spec.kind is JobKind.ANIMATION:
        return sum(1 for k in listed if k < frame)
    return sum(1 for k in listed if k <= frame)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FramesResult:
    """The frames a video job wrote, in order, and how far it got."""

    paths: tuple[Path, ...]
    seed: int
    width: int
    height: int
    steps_done: int
    frames_done: int
    partial: bool
    params: dict[str, Any]  # the `engine_params` object (engine.pipelines.metadata), for the container's metadata


class FrameLoop:
    """Renders `frames` frames into `frames_dir`, named `names` (default frame_%012d.jpg)."""

    def __init__(
        self,
        ctx: RenderContext,
        spec: JobSpec,
        parsed: ParsedPrompts,
        frames_dir: Path,
        frames: int,
        *,
        names: Sequence[str] | None = None,
        checkpoint: dict[str, Any] | None = None,
    ) -> None:
        self.spec, self.parsed, self.frames_dir, self.frames = spec, parsed, frames_dir, frames
        self.models = models = ctx.models_for(spec)
        self.names = list(names) if names is not None else [frame_name(k) for k in range(1, frames + 1)]
        canvas_w, canvas_h = self.canvas()
        self.width, self.height = checks.floor_size(canvas_w, canvas_h, models.stride)
        self.check_canvas()
        self.seed = job_seed(spec.seed, checkpoint)
        rng = JobRandom.start(self.seed, models.device)
        self.settings = self.adjust_settings(ctx.step_settings(spec, self.width, self.height))
        self.state = OptimisationState(models, self.settings, rng)
        self.smoother = EWMASmoother(spec.smoother_alpha, spec.smoother_buffer_len) if spec.smoother else None
        self.phrase_targets: list[PromptTarget] = []
        self.encoded_phrase: int | None = None
        self.frame = 1  # the frame being rendered (1-based)
        self.frame_ready = False  # set_up for self.frame done
        self.written = FrameStore(frames_dir)
        self._image: Image.Image | None = None  # z decoded, until the next step or z change
        self.resolved = dataclasses.replace(spec, seed=self.seed)
        self.meta_text, self.params = job_metadata(self.resolved, self.width, self.height, ctx.device, ctx.precision)
        self.params["video"] = {"frames": frames, "kind": spec.kind.value}
        if checkpoint is not None:
            self._restore(checkpoint)

    # -- what a mode provides --------------------------------------------------------------------

    def canvas(self) -> tuple[int, int]:
        """The canvas before flooring to the model's stride."""
        return self.spec.width, self.spec.height

    def check_canvas(self) -> None:
        """Refuse settings that do not fit the final canvas (before any step)."""

    def adjust_settings(self, settings: StepSettings) -> StepSettings:
        """The step settings the mode runs with."""
        return settings

    def setup_frame(self, frame: int) -> None:
        """Prepare z, targets and anchors for `frame` (1-based); called once per frame, before its steps."""
        raise NotImplementedError

    # -- shared helpers for modes ----------------------------------------------------------------

    def iterations_of(self, frame: int) -> int:
        return first_frame_iterations(self.spec) if frame == 1 else self.spec.iterations

    def use_phrase(self, frame: int) -> bool:
        """Encode the phrase `frame` uses when it differs from the current one; True when it was encoded."""
        phrase = min(phrase_for_frame(self.spec, frame), max(0, self.parsed.phrase_count - 1))
        if phrase == self.encoded_phrase:
            return False
        text, image, noise = self.parsed.phrase(phrase)
        pictures = [(part, images.load_rgb(part.text, "image prompt")) for part in image]
        self.state.set_prompts(text, pictures, noise)
        self.phrase_targets = list(self.state.targets)
        self.state.phrase = self.encoded_phrase = phrase
        log.info("frame %d: prompt phrase %d", frame, phrase + 1)
        return True

    def extra_targets(self, pictures: Sequence[tuple[WeightedPrompt, Image.Image]]) -> None:
        """The phrase's targets plus image prompts of this frame only (a style transfer's source frame)."""
        extra: list[PromptTarget] = []
        if pictures:
            self.state.set_prompts((), pictures, ())
            extra = list(self.state.targets)
        self.state.targets = [*self.phrase_targets, *extra]

    # -- the loop --------------------------------------------------------------------------------

    def current_image(self) -> Image.Image:
        """The current z decoded (after the last step), decoded once however often it is asked for."""
        if self._image is None:
            self._image = self.state.image()
        return self._image

    def steps_before(self, frame: int) -> int:
        return sum(self.iterations_of(k) for k in range(1, frame))

    def run(self, on_progress: ProgressCallback | None, cancel: threading.Event | None) -> FramesResult:
        """Render the remaining frames; on cancel, stop between iterations and report what is done."""
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        steps = self.steps_before(self.frames + 1)
        while self.frame <= self.frames:
            if cancel is not None and cancel.is_set():
                return self._result(partial=True)
            if not self.frame_ready:
                self.state.iteration = 0  # the seed restarts the counter each frame (matters for `decay`)
                self.setup_frame(self.frame)
                self._image = None
                self.frame_ready = True
            total = self.iterations_of(self.frame)
            done_before = self.steps_before(self.frame)
            while self.state.iteration < total:
                if cancel is not None and cancel.is_set():
                    return self._result(partial=True)
                loss = self.state.step()
                self._image = None
                if on_progress is not None:
                    on_progress(
                        Progress(
                            iteration=self.state.iteration,
                            total=total,
                            loss=float(loss),
                            frame=self.frame,
                            frames=self.frames,
                            step=done_before + self.state.iteration,
                            steps=steps,
                            preview=lambda: images.webp_preview(self.state.preview_image()),
                            checkpoint=self.checkpoint,
                        )
                    )
            self._write_frame(self._frame_image())
            self.frame += 1
            self.frame_ready = False
        return self._result(partial=False)

    def _frame_image(self) -> Image.Image:
        if self.smoother is None:
            return self.current_image()
        smoothed = self.smoother.update(self.state.z)  # decoded for the frame only, never fed back
        with torch.inference_mode():
            return to_image(self.state.synth(smoothed))

    def _write_frame(self, img: Image.Image) -> None:
        path = self.frames_dir / self.names[self.frame - 1]
        text = {**self.meta_text, "init_image": self.frame}  # the seed's frame keys: the frame number as init_image
        text.update(self.frame_text(self.frame))
        text.update(
            z_smoother=self.spec.smoother,
            z_smoother_buffer_len=self.spec.smoother_buffer_len,
            z_smoother_alpha=self.spec.smoother_alpha,
        )
        text_phrase, image_phrase, noise_phrase = self.parsed.phrase(self.state.phrase)
        params = {
            **self.params,
            "frame": {
                **self.frame_text(self.frame),
                "number": self.frame,
                "phrase": self.state.phrase,
                "text_prompts": " | ".join(p.text for p in text_phrase),
                "image_prompts": " | ".join(file_name(p.text) for p in image_phrase),
                "noise_prompts": " | ".join(p.text for p in noise_phrase),
            },
        }
        images.save_image(img, path, text, params)
        self.written.add(path)

    def _result(self, *, partial: bool) -> FramesResult:
        frames_done = len(self.written)
        if partial and not self.written:  # cancelled in frame 1: the video still shows where it got to
            if not self.frame_ready:
                self.setup_frame(self.frame)
                self.frame_ready = True
            self._write_frame(self.current_image())
        steps_done = self.steps_before(self.frame) + (self.state.iteration if self.frame_ready else 0)
        return FramesResult(
            paths=tuple(self.written.paths),
            seed=self.seed,
            width=self.width,
            height=self.height,
            steps_done=min(steps_done, self.steps_before(self.frames + 1)),
            frames_done=frames_done,
            partial=partial,
            params=self.params,
        )

    # -- checkpoints -----------------------------------------------------------------------------

    def checkpoint(self) -> bytes:
        """The job's state as bytes that `torch.load(..., weights_only=True)` accepts."""
        video = {
            "frames": self.frames,
            "frame": self.frame,
            "frame_ready": self.frame_ready,
            "written": self.written.references(),
            "phrase_targets": _targets_to_data(self.phrase_targets),
            "targets": _targets_to_data(self.state.targets),
            "smoother": None if self.smoother is None else self.smoother.state_dict(),
        }
        return encode_checkpoint(self.spec, self.seed, {**optimisation_sections(self.state), "video": video})

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        video = checkpoint.get("video")
        if not isinstance(video, dict) or video.get("frames") != self.frames:
            raise InvalidJob("the saved job state does not match this video job")
        self.frame, self.frame_ready = int(video["frame"]), bool(video["frame_ready"])
        self.written.restore(video["written"])  # StaleCheckpoint when the work folder lost a frame
        self.restore_settings(self.frame)
        restore_optimisation(self.state, checkpoint)
        device = self.models.device
        self.phrase_targets = _targets_from_data(video["phrase_targets"], device)
        self.encoded_phrase = self.state.phrase
        self.state.targets = _targets_from_data(video["targets"], device)
        if self.smoother is not None and video["smoother"] is not None:
            saved = dict(video["smoother"])
            saved["buffer"] = [t.to(device) for t in saved["buffer"]]
            saved["state"] = None if saved["state"] is None else saved["state"].to(device)
            self.smoother.load_state_dict(saved)
        log.info("resuming at frame %d of %d (%d frames already written)", self.frame, self.frames, len(self.written))

    def frame_text(self, frame: int) -> dict[str, Any]:
        """Mode-specific metadata keys of a saved frame."""
        return {}

    def restore_settings(self, frame: int) -> None:
        """Put back per-frame settings a mode changes (before the optimizer state is loaded)."""


def _targets_to_data(targets: Sequence[PromptTarget]) -> list[dict[str, Any]]:
    return [{"embeds": t.embeds.cpu(), "weight": t.weight, "stop": t.stop, "label": t.label} for t in targets]


def _targets_from_data(data: Sequence[dict[str, Any]], device: torch.device) -> list[PromptTarget]:
    return [PromptTarget(d["embeds"].to(device), float(d["weight"]), float(d["stop"]), str(d["label"])) for d in data]
