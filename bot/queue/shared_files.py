"""A job's files through the database, when the store shares them (PostgreSQL: a worker may be on another host).

What travels (docs/architecture.md, "Files in the database"): the job's inputs, stored as role "input"
at submit under their names in `inputs/<id>/`, and its results, stored as role "result" by the worker
before the job is recorded as ended. `JobRecord.result_paths` keep the paths on the worker's host; the
last two parts (`a<attempt>/<file>`) name the stored copy and say where it goes under any other host's
data directory (`bot.queue.job_files.result_copy_path`). With a store that does not share files
(SQLite: one host, one data directory) every method here leaves things as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from bot.queue.disk import is_disk_full
from bot.queue.inputs import StagedInputs
from bot.queue.job_files import inputs_path, result_copy_path, work_path
from engine.jobs import JobSpec
from engine.prompts import rename_image_parts
from storage.records import Claim, JobRecord
from storage.store import JobFileStore

log = logging.getLogger(__name__)

INPUT, RESULT, WORK = "input", "result", "work"
FRAME_FOLDERS = ("frames", "upscaled")  # where the engine renders a video's frames (its checkpoints name them)


class Releaser(Protocol):
    """What gives a claimed job back to the queue (`bot.queue.api.RunnerQueue.release`)."""

    async def release(
        self, claim: Claim, *, gpu_seconds: float, step: int, frame: int, interrupted: bool = False
    ) -> bool: ...


class MissingInputs(Exception):
    """A claimed job's input file is neither on this host nor in the database."""


def result_name(result: Path) -> str:
    """The stored name of a result: its attempt folder and file, so a late upload from a runner that lost the
    job's lease never replaces the result of the attempt that won it."""
    return f"{result.parent.name}-{result.name}"


class SharedFiles:
    """Moves a job's files between this host's data directory and the store (only where `files.shares_files`)."""

    def __init__(self, files: JobFileStore, data_dir: Path) -> None:
        self.files = files
        self.data_dir = Path(data_dir)
        self.enabled = files.shares_files
        self._stored_frames: dict[int, dict[str, tuple[int, int]]] = {}  # job -> frame key -> (size, mtime)

    async def put_frames(self, job_id: int) -> None:
        """Store the rendered frames of a video job's work folder that changed since the last call, before the
        checkpoint that names them is saved: a worker on another host that resumes the job fetches them
        (`claimed`) instead of rendering them again (a frame whose bytes differ makes the engine start over)."""
        if not self.enabled:
            return
        stored = self._stored_frames.setdefault(job_id, {})
        for key, path, mark in await asyncio.to_thread(frames_in, work_path(self.data_dir, job_id)):
            if stored.get(key) != mark:
                await self.files.put_file(job_id, WORK, key, path)
                stored[key] = mark

    def forget_frames(self, job_id: int) -> None:
        self._stored_frames.pop(job_id, None)

    async def _fetch_frames(self, job_id: int) -> None:
        work = work_path(self.data_dir, job_id)
        for file in await self.files.list_files(job_id, WORK):
            folder, _, name = file.name.partition(".")
            local = work / folder / name
            if folder in FRAME_FOLDERS and await asyncio.to_thread(_size, local) != file.size:
                await self.files.fetch_file(job_id, WORK, file.name, local)

    async def put_inputs(self, job_id: int, staged: StagedInputs) -> None:
        """Store the files of a job's inputs folder, once moved there (at submit, before its row commits, so no
        worker sees the job without them). A failure deletes what was stored and raises: the job is not made;
        so does `staged.discard()` when the job's transaction fails after this."""
        if not self.enabled or staged.moved_to is None:
            return
        staged.unstore = functools.partial(self.files.delete_files, job_id, INPUT)
        try:
            for path in await asyncio.to_thread(_files_in, staged.moved_to):
                await self.files.put_file(job_id, INPUT, path.name, path)
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                await asyncio.shield(self.files.delete_files(job_id, INPUT))
            raise

    async def claimed(self, claim: Claim, queue: Releaser) -> Claim:
        """The claim with its inputs on this host: fetched into `inputs/<id>/` where missing, the spec's paths
        pointing there. When they cannot be had the job goes back to the queue (counted as an interruption
        unless the disk is full, so a job whose inputs are gone fails after its attempts) and this raises."""
        if not self.enabled:
            return claim
        try:
            return await self._localised(claim)
        except Exception as e:
            log.error("job %s: its input files could not be fetched: %s", claim.job.id, e)
            job = claim.job
            await queue.release(claim, gpu_seconds=0.0, step=job.step, frame=job.frame, interrupted=not is_disk_full(e))
            raise

    async def _localised(self, claim: Claim) -> Claim:
        job = claim.job
        if claim.checkpoint is not None:
            await self._fetch_frames(job.id)
        stored = await self.files.list_files(job.id, INPUT)
        if not stored:
            return claim
        folder = inputs_path(self.data_dir, job.id)
        for file in stored:
            local = folder / file.name
            if await asyncio.to_thread(_size, local) != file.size:
                if not await self.files.fetch_file(job.id, INPUT, file.name, local):
                    raise MissingInputs(f"job {job.id}: input {file.name} is no longer stored")
                log.info("job %s: fetched input %s (%d bytes) from the database", job.id, file.name, file.size)
        spec = relocated(job.spec, job.id, folder, {f.name for f in stored})
        return dataclasses.replace(claim, job=dataclasses.replace(job, spec=spec))

    async def put_results(self, job_id: int, result_paths: Sequence[str]) -> None:
        """Store a finished attempt's result files (before the end is recorded: a front-end on another host
        posts the result as soon as it reads the record)."""
        if not self.enabled:
            return
        for result in map(Path, result_paths):
            await self.files.put_file(job_id, RESULT, result_name(result), result)

    async def result_file(self, job: JobRecord) -> Path | None:
        """The job's first result as a file on this host (None: it has none). Where it is not on this host's
        disk, its copy under this data directory, fetched from the store first; a file that is nowhere is
        answered with the recorded path, which does not exist (the caller says the file is missing)."""
        if not job.result_paths:
            return None
        recorded = Path(job.result_paths[0])
        if not self.enabled:
            return recorded
        stored = {f.name: f.size for f in await self.files.list_files(job.id, RESULT)}
        size = stored.get(result_name(recorded))
        if size is None:
            return recorded
        for local in (recorded, result_copy_path(self.data_dir, job.id, recorded)):
            if await asyncio.to_thread(_size, local) == size:
                return local
        copy = result_copy_path(self.data_dir, job.id, recorded)
        if await self.files.fetch_file(job.id, RESULT, result_name(recorded), copy):
            log.info("job %s: fetched its result (%d bytes) from the database", job.id, size)
            return copy
        return recorded


def relocated(spec: JobSpec, job_id: int, folder: Path, names: set[str]) -> JobSpec:
    """`spec` with each path to one of the job's stored inputs (`.../inputs/<id>/<name>`) moved into `folder`."""

    moved: list[str] = []

    def move(path: str) -> str:
        old = Path(path)
        if old.name in names and old.parent.name == str(job_id):
            moved.append(path)
            return str(folder / old.name)
        return path

    prompts = rename_image_parts(spec.image_prompts, move) if spec.image_prompts.strip() else ""
    return dataclasses.replace(
        spec,
        image_prompts=prompts if moved else spec.image_prompts,  # rewritten only when it names an input
        init_image=move(spec.init_image) if spec.init_image else spec.init_image,
        video=move(spec.video) if spec.video else spec.video,
    )


def frames_in(work: Path) -> list[tuple[str, Path, tuple[int, int]]]:
    """(stored name "<folder>.<file>", path, (size, mtime)) of each frame in the work folder's frame folders."""
    found = []
    for folder in FRAME_FOLDERS:
        if (work / folder).is_dir():
            for path in _files_in(work / folder):
                info = path.stat()
                found.append((f"{folder}.{path.name}", path, (info.st_size, info.st_mtime_ns)))
    return found


def _files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None
