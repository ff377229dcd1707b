"""A full disk, told apart from other failures, and the cheap free-space check that refuses new jobs before it.

A full disk is not the member's fault nor a bug: new jobs are refused with one clear message, running
jobs go back to the queue with their checkpoint, and work resumes by itself once space returns.
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from pathlib import Path

from storage.store import DiskFull

log = logging.getLogger(__name__)

DISK_FULL_TEXT = "the bot's disk is full; try again later"
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is the disk or a quota being full."""
    seen: BaseException | None = error
    for _ in range(5):  # the chain of causes, briefly: a wrapped ENOSPC is still a full disk
        if seen is None:
            return False
        if isinstance(seen, DiskFull) or (isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class DiskSpace:
    """Free space under the data directory against `min_free_bytes` (0: never short), and a pause of claims
    after a write found the disk full (so a job is not started again and again into a full disk)."""

    def __init__(self, data_dir: Path, min_free_bytes: int, *, full_pause_s: float = 60.0) -> None:
        self.data_dir = Path(data_dir)
        self.min_free_bytes = min_free_bytes
        self.full_pause_s = full_pause_s
        self._short = False  # the last check's answer, so the warning is logged once per shortage
        self._paused_until = 0.0  # monotonic

    def note_full(self) -> None:
        """A write failed for lack of space: no claims for `full_pause_s`, then they are tried again."""
        self._paused_until = time.monotonic() + self.full_pause_s

    def may_claim(self) -> bool:
        return time.monotonic() >= self._paused_until and self.has_room()

    def free_bytes(self) -> int:
        """One statvfs call: cheap enough for every submit and every claim."""
        return shutil.disk_usage(self.data_dir).free

    def has_room(self) -> bool:
        if self.min_free_bytes <= 0:
            return True
        try:
            free = self.free_bytes()
        except OSError:  # the data directory is gone or unreadable: a worse problem, reported elsewhere
            return True
        short = free < self.min_free_bytes
        if short and not self._short:
            log.warning(
                "disk space is low under %s: %d MiB free, below the %d MiB minimum; new jobs are refused",
                self.data_dir,
                free // 2**20,
                self.min_free_bytes // 2**20,
            )
        elif self._short and not short:
            log.info("disk space is back under %s (%d MiB free); jobs are taken again", self.data_dir, free // 2**20)
        self._short = short
        return not short
