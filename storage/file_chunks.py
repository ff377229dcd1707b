"""Streaming a local file into and out of the `job_files` chunk table, shared by both backends.

A file is read and written one chunk (at most `CHUNK_BYTES`) at a time on a worker thread, so a whole
video never sits in memory nor in one database message. A fetched file is written beside its target
and renamed into place only once complete, so a reader never sees half a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

from storage.store import DiskFull

CHUNK_BYTES = 1 << 20  # 1 MiB: one row's data, one message on the wire
ROLES = ("input", "result", "work")  # work: a video's rendered frames, for a resume on another host
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def check_file_key(role: str, name: str) -> None:
    """ValueError unless `role` is known and `name` is a plain file name (it becomes a path on another host)."""
    if role not in ROLES:
        raise ValueError(f"unknown file role {role!r} (known: {', '.join(ROLES)})")
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"not a plain file name: {name!r}")


def read_chunk(file: BinaryIO, size: int) -> bytes:
    """One read (blocking; on a worker thread). A module function so a test can make it fail midway."""
    return file.read(size)


async def read_chunks(source: Path, size: int = CHUNK_BYTES) -> AsyncIterator[tuple[int, bytes]]:
    """(index, data) for each chunk of `source`; an empty file is one empty chunk, so every stored file has a row."""
    file = await asyncio.to_thread(open, source, "rb")
    try:
        index = 0
        while True:
            data = await asyncio.to_thread(read_chunk, file, size)
            if data or index == 0:
                yield index, data
            if len(data) < size:
                return
            index += 1
    finally:
        await asyncio.to_thread(file.close)


class PartFile:
    """A fetched file being written: chunks go to a hidden file beside `target`, renamed over it by `commit`.

    A full disk raises `DiskFull` (as the stores do for the database) and leaves neither file.
    """

    def __init__(self, target: Path) -> None:
        self.target = Path(target)
        self.part = self.target.with_name(f".{self.target.name}.{uuid.uuid4().hex[:8]}.part")
        self._file: BinaryIO | None = None
        self._done = False

    async def __aenter__(self) -> PartFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._done:  # an error (or a fetch that found nothing): no part file is left behind
            await self.discard()

    async def write(self, data: bytes) -> None:
        with local_disk_full():
            if self._file is None:
                self._file = await asyncio.to_thread(open_part, self.part)
            await asyncio.to_thread(self._file.write, data)

    async def commit(self) -> None:
        """Flush and rename into place (an empty file when nothing was written)."""
        await self.write(b"")
        assert self._file is not None
        file, self._file = self._file, None
        with local_disk_full():
            try:
                await asyncio.to_thread(_close_and_replace, file, self.part, self.target)
                self._done = True
            except BaseException:
                await self.discard()
                raise

    async def discard(self) -> None:
        file, self._file = self._file, None
        await asyncio.to_thread(_close_and_unlink, file, self.part)


def open_part(part: Path) -> BinaryIO:
    part.parent.mkdir(parents=True, exist_ok=True)
    return open(part, "wb")


def _close_and_replace(file: BinaryIO, part: Path, target: Path) -> None:
    try:
        file.flush()
        os.fsync(file.fileno())
    finally:
        file.close()
    os.replace(part, target)


def _close_and_unlink(file: BinaryIO | None, part: Path) -> None:
    if file is not None:
        with contextlib.suppress(OSError):
            file.close()
    part.unlink(missing_ok=True)


@contextlib.contextmanager
def local_disk_full() -> Iterator[None]:
    """A local write that found the disk (or a quota) full raises `DiskFull`; other errors pass unchanged."""
    try:
        yield
    except OSError as e:
        if e.errno in _FULL_ERRNOS:
            raise DiskFull(f"no room to write a job's file: {e}") from e
        raise
