"""`DeviceHealth`: which devices take jobs, and when the process should exit for its supervisor to restart it.

A device whose renders fail with internal errors again and again (a GPU in a sticky CUDA error state)
would otherwise drain the whole queue into FAILED; one whose render thread hangs cannot be used
again in this process. Either way its jobs stay queued and the process asks to be restarted with
a distinct exit status, once the jobs still running elsewhere in it have ended or been checkpointed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)

EXIT_DEVICE_FAILED = 3  # a device kept failing with internal errors
EXIT_STUCK_THREAD = 4  # a stalled render's thread would not stop


class DeviceHealth:
    """Internal errors in a row per device, the disabled devices, and the exit the runner asks for."""

    def __init__(self, devices: Sequence[str], failure_limit: int | None) -> None:
        self.failure_limit = failure_limit
        self.failures = dict.fromkeys(devices, 0)
        self.disabled: dict[str, str] = {}  # device -> why it takes no more jobs
        self.exit_status: int | None = None  # set when the process should exit for its supervisor
        self.exit_requested = asyncio.Event()  # set once a status is set and no job runs in the process

    def usable(self, device: str) -> bool:
        return device not in self.disabled

    def worked(self, device: str) -> None:
        """A render ended in a way that shows the device works (done, cancelled, refused by the engine)."""
        self.failures[device] = 0

    def failed(self, device: str, error: str) -> bool:
        """One more internal error on `device`; True when that disabled it."""
        self.failures[device] += 1
        if self.failure_limit is None or self.failures[device] < self.failure_limit:
            return False
        log.error(
            "device %s failed %d jobs in a row with internal errors, the last: %s; it takes no more jobs (they "
            "stay queued) and the process exits with status %d once nothing else runs, for its supervisor to "
            "restart it",
            device,
            self.failures[device],
            error,
            EXIT_DEVICE_FAILED,
        )
        self.disable(device, error, EXIT_DEVICE_FAILED)
        return True

    def disable(self, device: str, why: str, status: int) -> None:
        self.disabled[device] = why
        if self.exit_status is None:
            self.exit_status = status

    def exit_if_idle(self, running: int) -> None:
        """Say the process may exit now, if it should and nothing runs."""
        if self.exit_status is not None and running == 0:
            self.exit_requested.set()
