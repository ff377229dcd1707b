"""`HeldFileChecks`: the bot's attachment check behind a gate, so a test decides when the checks may finish.

While held, each check waits in its pool thread (as a slow decode would) and is counted; the test sees
how many run at once and on which threads, then lets them go with `release()`.
"""

from __future__ import annotations

import threading
from pathlib import Path

from bot.attachments import FileInfo, Limits, check_member_file
from tests.support.waiting import eventually


class HeldFileChecks:
    """Wraps `check_member_file`: checks wait until `release()`; `running`, `most_at_once`, `threads` say what ran."""

    def __init__(self) -> None:
        self._go = threading.Event()
        self._lock = threading.Lock()
        self.running = 0
        self.started = 0
        self.most_at_once = 0
        self.threads: set[str] = set()

    def __call__(self, kind: str, path: Path, limits: Limits) -> FileInfo:
        with self._lock:
            self.running += 1
            self.started += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            self._go.wait(60.0)  # a safety net: a test that forgets to release still ends
            return check_member_file(kind, path, limits)
        finally:
            with self._lock:
                self.running -= 1

    def release(self) -> None:
        self._go.set()

    async def busy(self, count: int) -> None:
        """Wait until `count` checks are running (held)."""
        await eventually(lambda: self.running >= count, 30.0, f"{count} file checks running")
