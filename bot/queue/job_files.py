"""Every file a job leaves in the data directory, and the one place that deletes them.

Layout (docs/architecture.md, "Where state lives"): `inputs/<id>/` (its copies of the attachments,
staged first in `inputs/.staging-*`), `work/<id>/` (the engine's intermediate files, kept across
attempts so a resumed video keeps its frames) and `outputs/<id>/a<attempt>/` (the result, a `.fit.*`
copy while a re-encoded upload is being posted, and the `.posted.json` marker /job reads).

When a job ends, everything but its result goes; once the result is posted its fitted copy goes too;
at start (and every hour) what crashed attempts left behind goes; after the retention period the
result goes. A folder that no job owns is removed only once it is `STALE_S` old: another process
sharing the data directory may be between copying a job's inputs and committing its row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from storage.records import JobRecord
from storage.store import JobFileStore, JobStore

log = logging.getLogger(__name__)

STALE_S = 3600.0
STAGING_PREFIX = ".staging-"
FIT_MARK = ".fit."
POSTED_SUFFIX = ".posted.json"


def inputs_path(data_dir: Path, job_id: int) -> Path:
    """A job's input files: data_dir/inputs/<job id>."""
    return Path(data_dir) / "inputs" / str(job_id)


def work_path(data_dir: Path, job_id: int) -> Path:
    """A job's folder for the engine's intermediate files: data_dir/work/<job id>.

    It outlives the job's attempts (a resumed video's frames are there) and is removed when the job
    ends (done, failed or cancelled); a drained or crashed job keeps it for its next attempt.
    """
    return Path(data_dir) / "work" / str(job_id)


def outputs_path(data_dir: Path, job_id: int) -> Path:
    """A job's attempts: data_dir/outputs/<job id>/a<attempt>/."""
    return Path(data_dir) / "outputs" / str(job_id)


def result_copy_path(data_dir: Path, job_id: int, result: Path) -> Path:
    """Where this host keeps a job's result: under its own `outputs/<id>/`, in the attempt folder the worker
    wrote it in (on the worker's host, the recorded path itself; elsewhere, a copy fetched from the store)."""
    return outputs_path(data_dir, job_id) / result.parent.name / result.name


def remove(path: Path) -> None:
    """Delete a file or a folder tree if it is there (blocking: call it in a thread)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError as e:  # not ours to fix here: the next sweep tries again
        log.warning("could not delete %s: %s", path, e)


@dataclasses.dataclass(frozen=True, slots=True)
class Swept:
    """What one sweep deleted (for the log and the tests)."""

    removed: tuple[Path, ...] = ()


class JobFiles:
    """Deletes a job's files at the moments above; nothing else in the bot deletes them.

    With `shared` (a store whose `shares_files` is set) the copies in the database go too: the inputs
    when the job ends, the results when retention expires them.
    """

    def __init__(self, data_dir: Path, shared: JobFileStore | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.shared = shared if shared is not None and shared.shares_files else None

    async def ended(self, job: JobRecord) -> None:
        """The job is done, failed or cancelled: keep its result (and a fitted copy until it is posted) only."""
        await self._tidy(job)
        # a job that ended with no result may still have one uploaded by an attempt that lost its lease
        await self._forget(job.id, ("input", "work") if job.result_paths else ("input", "work", "result"))

    async def _forget(self, job_id: int, roles: tuple[str, ...]) -> None:
        if self.shared is None:
            return
        try:
            for role in roles:
                await self.shared.delete_files(job_id, role)
        except Exception:  # as with the files on disk: never a reason to fail recording the job
            log.exception("job %s: deleting its stored %s files failed", job_id, "/".join(roles))

    async def delivered(self, job: JobRecord) -> None:
        """The result was posted (or can never be): its fitted copies go, the result and /job's marker stay."""
        if not job.delivered:
            raise ValueError(f"job {job.id} has not been delivered")
        await self._tidy(job)

    async def _tidy(self, job: JobRecord) -> None:
        try:
            await asyncio.to_thread(self._tidy_finished, job)
        except Exception:  # never a reason to fail recording the job: the next sweep tries again
            log.exception("job %s: deleting its intermediate files failed", job.id)

    async def discard_attempt(self, folder: Path) -> None:
        """An attempt that will never be recorded (lease lost, given back at shutdown): its folder goes."""
        await asyncio.to_thread(remove, folder)

    async def expire(self, store: JobStore, *, keep_s: float, now: float) -> int:
        """Delete the results of jobs that ended more than `keep_s` ago and record it; how many jobs."""
        count = 0
        while True:
            jobs = await store.results_to_expire(finished_before=now - keep_s, limit=100)
            for job in jobs:
                # files first, then the record: a crash between the two only makes the next sweep redo it
                await asyncio.to_thread(remove, outputs_path(self.data_dir, job.id))
                if self.shared is not None:
                    await self.shared.delete_files(job.id, "result")
                await store.mark_results_expired(job.id, now=now)
                log.info("job %s: result deleted after the retention period", job.id)
            count += len(jobs)
            if len(jobs) < 100:
                return count

    async def sweep(self, store: JobStore, *, now: float | None = None) -> Swept:
        """Remove what crashed attempts and interrupted submits left: files of no running or queued job."""
        now = time.time() if now is None else now
        ids, staging = await asyncio.to_thread(self._listed)
        jobs = {job.id: job for job in await store.many(sorted(ids))}
        removed = await asyncio.to_thread(self._sweep, ids, staging, jobs, now)
        if removed:
            log.info("removed %d leftover file(s) or folder(s) of ended or crashed jobs", len(removed))
        return Swept(tuple(removed))

    # -- blocking parts, on a thread ------------------------------------------------------------

    def _listed(self) -> tuple[set[int], list[Path]]:
        ids: set[int] = set()
        staging: list[Path] = []
        for top in ("inputs", "work", "outputs"):
            for entry in _entries(self.data_dir / top):
                if entry.name.isdigit():
                    ids.add(int(entry.name))
                elif top == "inputs" and entry.name.startswith(STAGING_PREFIX):
                    staging.append(entry)
        return ids, staging

    def _sweep(self, ids: set[int], staging: list[Path], jobs: dict[int, JobRecord], now: float) -> list[Path]:
        removed = [s for s in staging if _stale(s, now)]
        for job_id in sorted(ids):
            job = jobs.get(job_id)
            if job is None:  # no row: a rolled-back or crashed submit, or a database replaced under the files
                removed += [p for p in self._folders(job_id) if p.exists() and _stale(p, now)]
            elif job.finished:
                removed += self._finished_leftovers(job)
            else:  # queued or running: its inputs and work stay; attempts that can no longer report go
                newest_dead = job.attempt if job.state.value == "queued" else job.attempt - 1
                removed += [a for a, n in self._attempts(job_id) if n <= newest_dead]
        for path in removed:
            remove(path)
        return removed

    def _tidy_finished(self, job: JobRecord) -> None:
        for path in self._finished_leftovers(job):
            remove(path)

    def _finished_leftovers(self, job: JobRecord) -> list[Path]:
        """What of a finished job's files is not its result, its marker, or a fitted copy waiting to be posted."""
        found = [p for p in (inputs_path(self.data_dir, job.id), work_path(self.data_dir, job.id)) if p.exists()]
        outputs = outputs_path(self.data_dir, job.id)
        if job.results_expired_at is not None or not job.result_paths:
            return found + ([outputs] if outputs.exists() else [])
        recorded = [Path(p) for p in job.result_paths]
        results = recorded + [result_copy_path(self.data_dir, job.id, r) for r in recorded]
        keep = {r.parent for r in results} | set(results) | {r.with_name(r.name + POSTED_SUFFIX) for r in results}
        fitted_prefixes = {(r.parent, r.stem + FIT_MARK) for r in results} if not job.delivered else set()
        for entry in _entries(outputs):
            if entry not in keep:
                found.append(entry)
            elif entry.is_dir():
                found += [
                    f
                    for f in _entries(entry)
                    if f not in keep and not any(f.parent == d and f.name.startswith(s) for d, s in fitted_prefixes)
                ]
        return found

    def _folders(self, job_id: int) -> Iterable[Path]:
        return (
            inputs_path(self.data_dir, job_id),
            work_path(self.data_dir, job_id),
            outputs_path(self.data_dir, job_id),
        )

    def _attempts(self, job_id: int) -> list[tuple[Path, int]]:
        """The job's attempt folders with their numbers (a higher one may be a claim in flight elsewhere)."""
        found = []
        for entry in _entries(outputs_path(self.data_dir, job_id)):
            number = _attempt_number(entry)
            if number is not None:
                found.append((entry, number))
        return found


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _attempt_number(path: Path) -> int | None:
    return int(path.name[1:]) if path.name.startswith("a") and path.name[1:].isdigit() else None


def _stale(path: Path, now: float) -> bool:
    try:
        return now - os.stat(path).st_mtime >= STALE_S
    except FileNotFoundError:
        return False
