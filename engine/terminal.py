"""A render's terminal side: a tqdm bar on stderr fed by the progress callback, and Ctrl-C as "stop and keep".

with TerminalProgress(unit="it", desc="single image") as progress:
    artifact = renderer.render(spec, output, on_progress=progress, cancel=progress.cancel)
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from engine.jobs import Progress


class TerminalProgress:
    """The progress callback and cancel flag of one render started from a terminal.

    The bar starts with the first report, so a job refused before it runs prints only its error, and a
    resumed job's bar starts where the job is. With no `desc`, the bar names the current frame. Inside
    the `with` block, Ctrl-C on the main thread sets `cancel` instead of raising (the seed swallows it).
    """

    def __init__(
        self, *, unit: str = "it", desc: str | None = None, leave: bool = True, show: bool = True, verbose: bool = False
    ) -> None:
        self.cancel = threading.Event()
        self.unit, self.desc, self.leave, self.show, self.verbose = unit, desc, leave, show, verbose
        self._bar: Any = None
        self._stack = contextlib.ExitStack()

    def __call__(self, p: Progress) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=p.steps, initial=p.step - 1, unit=self.unit, desc=self.desc, leave=self.leave,
                disable=not self.show, file=sys.stderr,
            )  # fmt: skip
        if self.desc is None:
            self._bar.set_description(f"frame {p.frame}/{p.frames}", refresh=False)
        self._bar.update(1)
        if self.verbose:
            where = (
                f"frame {p.frame}/{p.frames} iteration {p.iteration}" if p.frames > 1 else f"iteration {p.iteration}"
            )
            self._bar.write(f"{where}: loss {p.loss:.5f}", file=sys.stderr)

    def __enter__(self) -> TerminalProgress:
        self._stack.enter_context(_interrupt_sets(self.cancel))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if self._bar is not None:
                self._bar.close()
        finally:
            self._stack.close()


@contextlib.contextmanager
def _interrupt_sets(cancel: threading.Event) -> Iterator[None]:
    """While rendering on the main thread, Ctrl-C sets `cancel` instead of raising."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        cancel.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
