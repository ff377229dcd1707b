"""Step gates: the test decides how far a render may go, so "while the job runs" never depends on speed.

A gate is told a step with `hold_at(n)`: a render that has finished step n (the job's step, so a
resumed job counts from its checkpoint) waits there, between two iterations, until the test moves
the limit, releases the gate, or the job is cancelled. `GatedRenderer` puts any renderer (the real
engine included) behind a gate: it waits inside the progress callback, after the runner has seen
the step, which is exactly where a slow iteration would keep it.

`StepGate` works within one process (the render thread waits, the test moves the limit);
`FileGate` does the same across processes through a folder (`python -m bot`, worker processes).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Protocol

from engine.jobs import Artifact, JobSpec, Progress, ProgressCallback
from tests.support.waiting import eventually

_POLL_S = 0.01  # how often a waiting render looks at the cancel flag and the limit


class Gate(Protocol):
    def after_step(self, step: int, cancel: threading.Event | None) -> None:
        """On the render thread, after step `step`: wait while the limit says so and the job is not cancelled."""


class StepGate:
    """An in-process gate (thread-safe)."""

    def __init__(self, hold_at: int | None = None) -> None:
        self._limit = hold_at
        self._cond = threading.Condition()
        self._waiting: dict[int, int] = {}  # render thread id -> the step it waits after
        self.reached = 0  # the latest step any render finished

    def hold_at(self, step: int | None) -> None:
        """Let renders go on until they have finished `step` (None: no limit)."""
        with self._cond:
            self._limit = step
            self._cond.notify_all()

    def release(self) -> None:
        self.hold_at(None)

    def allow(self, steps: int) -> None:
        """Let a waiting render make `steps` more iterations, then wait again."""
        with self._cond:
            base = max(self._waiting.values(), default=self.reached)
        self.hold_at(base + steps)

    def waiting(self) -> list[int]:
        """The steps the renders are waiting after, one per waiting render."""
        with self._cond:
            return sorted(self._waiting.values())

    async def held(self, count: int = 1, within: float = 60.0) -> list[int]:
        """Wait until `count` renders wait at the gate; their steps."""
        return await eventually(lambda: len(w := self.waiting()) >= count and w, within, f"{count} render(s) held")  # type: ignore[no-any-return]

    def after_step(self, step: int, cancel: threading.Event | None) -> None:
        me = threading.get_ident()
        with self._cond:
            self.reached = max(self.reached, step)
            while self._limit is not None and step >= self._limit and not (cancel is not None and cancel.is_set()):
                self._waiting[me] = step
                self._cond.wait(_POLL_S * 5)  # the cancel flag is another object: look at it now and then
            self._waiting.pop(me, None)


class FileGate:
    """A gate in a folder, shared by the test and a render process: `limit` holds the step, `held-*` who waits."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._limit_file = self.directory / "limit"

    def hold_at(self, step: int | None) -> None:
        if step is None:
            self._limit_file.unlink(missing_ok=True)
        else:
            _write_atomically(self._limit_file, str(step))

    def release(self) -> None:
        self.hold_at(None)

    def waiting(self) -> list[int]:
        steps = []
        for marker in self.directory.glob("held-*"):
            try:
                steps.append(int(marker.read_text()))
            except (OSError, ValueError):  # removed or being replaced right now
                continue
        return sorted(steps)

    async def held(self, count: int = 1, within: float = 60.0) -> list[int]:
        return await eventually(lambda: len(w := self.waiting()) >= count and w, within, f"{count} render(s) held")  # type: ignore[no-any-return]

    def forget(self, pid: int) -> None:
        """Drop the markers of a process that was killed while it waited."""
        for marker in self.directory.glob(f"held-{pid}-*"):
            marker.unlink(missing_ok=True)

    def _limit(self) -> int | None:
        try:
            return int(self._limit_file.read_text())
        except (OSError, ValueError):
            return None

    def after_step(self, step: int, cancel: threading.Event | None) -> None:
        marker = self.directory / f"held-{os.getpid()}-{threading.get_ident()}"
        try:
            while (
                (limit := self._limit()) is not None and step >= limit and not (cancel is not None and cancel.is_set())
            ):
                if not marker.exists():
                    _write_atomically(marker, str(step))
                time.sleep(_POLL_S)
        finally:
            marker.unlink(missing_ok=True)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    temporary.write_text(text)
    os.replace(temporary, path)


class GatedRenderer:
    """`inner` (any renderer with the engine's `render` contract) held between iterations by `gate`."""

    def __init__(self, inner: object, gate: Gate) -> None:
        self.inner, self.gate = inner, gate

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
        def progress(p: Progress) -> None:
            if on_progress is not None:
                on_progress(p)
            self.gate.after_step(p.step or p.iteration, cancel)

        return self.inner.render(spec, output, on_progress=progress, cancel=cancel, resume=resume, work_dir=work_dir)  # type: ignore[attr-defined,no-any-return]
