"""A renderer with the engine's contract and none of its cost: N progress events, a real 1×1 PNG.

Its checkpoint is the step reached (as text); `resume` continues from it, so a test can see that a
resumed job does not start over. Prompts pick failures: "fail invalid" raises InvalidJob,
"fail crash" raises RuntimeError.
"""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

from engine.errors import InvalidJob
from engine.jobs import Artifact, JobSpec, Progress, ProgressCallback
from storage.records import job_steps

PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


class FakeRenderer:
    """Sleeps `step_s` per iteration; records what it was asked to do and on which thread."""

    def __init__(self, device: str, step_s: float = 0.01) -> None:
        self.device = device
        self.step_s = step_s
        self.built_on = threading.current_thread().name
        self.rendered_on: list[str] = []
        self.resumed_from: list[int] = []
        self.previews = 0
        self.reached = 0  # the step the current render has finished

    def _preview(self) -> bytes:
        self.previews += 1
        return b"RIFF....WEBP"

    def render(
        self,
        spec: JobSpec,
        output: Path,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        resume: bytes | None = None,
    ) -> Artifact:
        self.rendered_on.append(threading.current_thread().name)
        if spec.text_prompts == "fail invalid":
            raise InvalidJob("text prompt: the fox is not allowed")
        if spec.text_prompts == "fail crash":
            raise RuntimeError("CUDA error: an illegal memory access (a secret internal detail)")
        steps, _ = job_steps(spec)
        done = int(resume.decode()) if resume else 0
        self.resumed_from.append(done)
        while done < steps and not (cancel is not None and cancel.is_set()):
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
                        preview=self._preview,
                        checkpoint=lambda reached=done: str(reached).encode(),
                    )
                )
        output.write_bytes(PNG_1X1)
        return Artifact(
            kind=spec.kind,
            paths=(str(output),),
            seed=spec.seed if spec.seed is not None else 42,
            width=1,
            height=1,
            steps_done=done,
            partial=done < steps,
        )
