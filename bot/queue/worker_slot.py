"""`hold_worker_slot`: a worker id unique to this process and stable across its restarts.

Two bot processes on one host must never share a worker id: at start a runner takes back the leases
its id held before (a restart resumes its jobs at once), so a shared id would take the other
process's running jobs. A process holds an exclusive lock on the first free file of
`data_dir/workers/<n>.lock` for its whole life; its id is the host name, a short hash of the data
directory and n. The same slot comes back after a restart (the lock is released when the process
dies, however it dies), and a second process beside it gets the next one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from pathlib import Path

MAX_SLOTS = 256


class WorkerSlot:
    """The slot this process holds; `close()` (or the process's end) frees it."""

    def __init__(self, worker_id: str, fd: int) -> None:
        self.worker_id = worker_id
        self._fd: int | None = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the lock
            self._fd = None


def hold_worker_slot(data_dir: Path, *, hostname: str | None = None) -> WorkerSlot:
    """Lock the lowest free slot under `data_dir/workers/`; RuntimeError when all `MAX_SLOTS` are taken."""
    folder = Path(data_dir) / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    place = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:6]
    host = hostname or socket.gethostname()
    for n in range(1, MAX_SLOTS + 1):
        fd = os.open(folder / f"{n}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return WorkerSlot(f"{host}-{place}-{n}", fd)
    raise RuntimeError(f"all {MAX_SLOTS} worker slots under {folder} are held by running processes")
