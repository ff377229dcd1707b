"""`python -m bot` exactly, except that each device's engine renderer waits between iterations as the
test's gate folder ($VQBOT_TEST_GATE, a tests.support.gate.FileGate) says.

With VQBOT_TEST_STICKY_ERROR=1 every render fails as on a GPU stuck in a CUDA error state (the renderer
is built and its models loaded as usual; only its renders fail). With VQBOT_TEST_STUCK=1 a render hangs
after its first iteration in a call that never looks at the cancel flag (a hung driver call).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from bot.__main__ import engine_renderer, main
from bot.queue.api import Renderer
from bot.settings import Settings
from engine.jobs import Artifact, JobSpec, Progress
from tests.support.gate import FileGate, GatedRenderer


class StickyError:
    """Fails every render, once the gate lets step 0 pass (so a test can queue jobs before the first fails)."""

    def __init__(self, gate: FileGate) -> None:
        self.gate = gate

    def render(self, spec: JobSpec, output: Path, **kw: Any) -> Artifact:
        self.gate.after_step(0, kw.get("cancel"))
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


class Stuck:
    def __init__(self, inner: Renderer) -> None:
        self.inner = inner

    def render(self, spec: JobSpec, output: Path, **kw: Any) -> Artifact:
        report = kw.get("on_progress")

        def hang(progress: Progress) -> None:
            if report is not None:
                report(progress)
            threading.Event().wait()  # forever, whatever the cancel flag says

        return self.inner.render(spec, output, **{**kw, "on_progress": hang})


def gated_renderer(device: str, settings: Settings) -> Renderer:
    gate = FileGate(Path(os.environ["VQBOT_TEST_GATE"]))
    renderer = GatedRenderer(engine_renderer(device, settings), gate)
    if os.environ.get("VQBOT_TEST_STUCK") == "1":
        return Stuck(renderer)
    return StickyError(gate) if os.environ.get("VQBOT_TEST_STICKY_ERROR") == "1" else renderer


if __name__ == "__main__":
    main(gated_renderer)
