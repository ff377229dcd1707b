"""A renderer with the engine's contract and no torch: paced progress with real WebP previews, a noise PNG.

The in-process bot tests run the real JobQueue and JobRunner with it, so everything but the engine is real.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

from PIL import Image

from engine.jobs import Artifact, JobSpec, Progress, ProgressCallback
from storage.records import job_steps


def _webp(step: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (step * 30 % 255, 80, 160)).save(out, "WEBP")
    return out.getvalue()


class NoiseRenderer:
    """Sleeps `step_s` per iteration; the result is noise of the spec's size (noise compresses badly: big files)."""

    def __init__(self, device: str, step_s: float = 0.05) -> None:
        self.device, self.step_s = device, step_s

    def render(
        self,
        spec: JobSpec,
        output: Path,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        resume: bytes | None = None,
    ) -> Artifact:
        steps, _ = job_steps(spec)
        done = int(resume.decode()) if resume else 0
        while done < steps and not (cancel is not None and cancel.is_set()):
            time.sleep(self.step_s)
            done += 1
            if on_progress is not None:
                on_progress(
                    Progress(
                        iteration=done,
                        total=steps,
                        loss=1.0 / done,
                        step=done,
                        steps=steps,
                        preview=lambda d=done: _webp(d),
                        checkpoint=lambda d=done: str(d).encode(),
                    )
                )
        Image.effect_noise((spec.width, spec.height), 80).convert("RGB").save(output, "PNG")
        seed = spec.seed if spec.seed is not None else 7
        return Artifact(
            kind=spec.kind, paths=(str(output),), seed=seed, width=spec.width, height=spec.height,
            steps_done=done, partial=done < steps,
        )  # fmt: skip
