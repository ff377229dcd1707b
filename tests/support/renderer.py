"""`FakeRenderer`: the engine's contract and none of its cost, for the queue, runner and bot tests.

Its checkpoint is the step reached (as text) and `resume` continues from it, so a test sees that a
resumed job does not start over; like the engine it keeps a file in the job's `work_dir`. Prompts
pick failures: "fail invalid" raises InvalidJob, "fail crash" raises RuntimeError, "fail cancelled"
raises Cancelled (cancelled before a result), "stale frames" refuses any checkpoint with
StaleCheckpoint (its frames are gone). A test that needs a job to be running holds it with a gate
(tests.support.gate) instead of counting on how long the fake takes.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

from PIL import Image

from engine.errors import Cancelled, InvalidJob, StaleCheckpoint
from engine.jobs import Artifact, JobSpec, Progress, ProgressCallback
from storage.records import job_steps
from tests.support import speed
from tests.support.gate import Gate

PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


def webp_preview(step: int) -> bytes:
    """A real 32×32 WebP whose colour moves with the step."""
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (step * 30 % 255, 80, 160)).save(out, "WEBP")
    return out.getvalue()


class FakeRenderer:
    """Renders by counting; records what it was asked to do and on which thread.

    `step_s` is the time an iteration takes (scaled by the suite's render-speed switch); `noise` makes
    the result noise of the spec's size (noise compresses badly: big files, for upload limits) instead
    of a 1×1 PNG; `gate` holds the render between iterations.
    """

    def __init__(
        self, device: str = "cpu", *, step_s: float = 0.002, noise: bool = False, gate: Gate | None = None
    ) -> None:
        self.device = device
        self.step_s = speed.fake_step_s(step_s)
        self.noise = noise
        self.gate = gate
        self.built_on = threading.current_thread().name
        self.rendered_on: list[str] = []
        self.resumed_from: list[int] = []
        self.work_dirs: list[Path | None] = []
        self.previews = 0
        self.reached = 0  # the step the current render has finished

    def _preview(self, step: int) -> bytes:
        self.previews += 1
        return webp_preview(step)

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
        self.rendered_on.append(threading.current_thread().name)
        if spec.text_prompts == "fail invalid":
            raise InvalidJob("text prompt: the fox is not allowed")
        if spec.text_prompts == "fail crash":
            raise RuntimeError("CUDA error: an illegal memory access (a secret internal detail)")
        if spec.text_prompts == "fail cancelled":
            raise Cancelled("the job was cancelled")
        self.work_dirs.append(work_dir)
        if resume and spec.text_prompts == "stale frames":
            raise StaleCheckpoint("the saved frames of this job are missing")
        if work_dir is not None:
            work_dir.mkdir(parents=True, exist_ok=True)
            (work_dir / "frames.txt").write_text("intermediate files")
        steps, _ = job_steps(spec)
        done = int(resume.decode()) if resume else 0
        self.resumed_from.append(done)
        while done < steps and not (cancel is not None and cancel.is_set()):
            if self.step_s:
                time.sleep(self.step_s)
            done += 1
            self.reached = done
            if on_progress is not None:
                on_progress(
                    Progress(
                        iteration=done,
                        total=steps,
                        loss=1.0 / done,
                        step=done,
                        steps=steps,
                        preview=lambda d=done: self._preview(d),
                        checkpoint=lambda d=done: str(d).encode(),
                    )
                )
            if self.gate is not None:
                self.gate.after_step(done, cancel)
        if self.noise:
            Image.effect_noise((spec.width, spec.height), 80).convert("RGB").save(output, "PNG")
            width, height = spec.width, spec.height
        else:
            output.write_bytes(PNG_1X1)
            width = height = 1
        return Artifact(
            kind=spec.kind,
            paths=(str(output),),
            seed=spec.seed if spec.seed is not None else 42,
            width=width,
            height=height,
            steps_done=done,
            partial=done < steps,
        )
