"""`python -m bot migrate-db`: move a single-host installation (SQLite, files on disk) to PostgreSQL.

The rows are copied by `storage.migrate`; this module says which files each job brings and under which
names, exactly those `bot.queue.shared_files` looks for on a store that shares files: a waiting job's
inputs (every file of `BOT_DATA_DIR/inputs/<id>/`, role "input", by file name) and a job's results that
retention has not deleted (role "result", named `a<attempt>-<file>` by `result_name`). README, "Several
hosts", says when to run it; docs/architecture.md, "Moving to PostgreSQL", what it guarantees.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.queue.job_files import inputs_path, result_copy_path, work_path
from bot.queue.shared_files import INPUT, RESULT, WORK, frames_in, result_name
from engine.jobs import JobSpec, JobStatus
from engine.prompts import rename_image_parts
from storage.factory import is_postgres_url, sqlite_path
from storage.migrate import FilePlan, FilePlanner, FileToCopy, MigrationRefused, MigrationReport, migrate_database
from storage.records import JobRecord

COMMAND = "migrate-db"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sub-command's options, on its own parser."""
    parser.add_argument("--from", dest="source", required=True, help="the SQLite database: sqlite:///PATH or a path")
    parser.add_argument("--to", dest="target", required=True, help="the PostgreSQL database: postgresql://...")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("BOT_DATA_DIR") or "data"),
        help="the single host's BOT_DATA_DIR, where the jobs' inputs and results are (default: BOT_DATA_DIR or ./data)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a copy that was interrupted: skip the jobs already in the target (it must hold no others)",
    )


def input_names(spec: JobSpec, job_id: int) -> set[str]:
    """The names of the job's own input files (`.../inputs/<id>/<name>`) that its spec refers to."""
    names: set[str] = set()

    def note(path: str) -> str:
        if Path(path).parent.name == str(job_id):
            names.add(Path(path).name)
        return path

    if spec.image_prompts.strip():
        rename_image_parts(spec.image_prompts, note)
    for path in (spec.init_image, spec.video):
        if path:
            note(path)
    return names


def file_planner(data_dir: Path) -> FilePlanner:
    """Which files a job (as the target gets it) brings from `data_dir`: a queued job's inputs, any job's results."""

    def plan(job: JobRecord) -> FilePlan:
        files: list[FileToCopy] = []
        missing: list[str] = []
        if job.state == JobStatus.QUEUED:
            folder = inputs_path(data_dir, job.id)
            present = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
            files += [FileToCopy(role=INPUT, name=p.name, path=p) for p in present]
            for name in sorted(input_names(job.spec, job.id) - {p.name for p in present}):
                missing.append(f"job #{job.id}: input {name} (not in {folder})")
            if job.checkpoint_step is not None:  # a video's finished frames, which its checkpoint names
                files += [
                    FileToCopy(role=WORK, name=key, path=p) for key, p, _ in frames_in(work_path(data_dir, job.id))
                ]
        if job.results_expired_at is None:
            for recorded in map(Path, job.result_paths):
                copy = result_copy_path(data_dir, job.id, recorded)
                local = next((p for p in (recorded, copy) if p.is_file()), None)
                if local is None:
                    missing.append(f"job #{job.id}: result {recorded} (not there, nor at {copy})")
                else:
                    files.append(FileToCopy(role=RESULT, name=result_name(recorded), path=local))
        return FilePlan(files=tuple(files), missing=tuple(missing))

    return plan


def summary(report: MigrationReport) -> list[str]:
    """The report as lines for the operator."""
    states = ", ".join(f"{n} {s}" for s, n in sorted(report.jobs_by_state.items())) or "none"
    lines = [f"jobs copied: {sum(report.jobs_by_state.values())} ({states})"]
    if report.skipped:
        lines.append(f"jobs already in the target (resumed copy), skipped: {report.skipped}")
    for job_id, step in report.requeued:
        at = f"its checkpoint at step {step}" if step is not None else "no checkpoint: it starts over"
        lines.append(f"job #{job_id} was running: copied as queued ({at}); the new deployment resumes it")
    for job_id in report.cancelled:
        lines.append(f"job #{job_id} was running with a cancel requested: copied as cancelled")
    if report.live_leases:
        shown = ", ".join(f"#{i}" for i in report.live_leases)
        lines.append(
            f"warning: the lease of job {shown} had not expired: if the bot is still running, stop it and copy "
            "again into an empty database (this copy may miss its latest writes)"
        )
    lines.append(", ".join(f"{table}: {n} rows" for table, n in report.side_rows.items()))
    lines.append(f"files copied: {report.files} ({report.bytes} bytes)")
    if report.missing:
        lines.append(f"files missing (the jobs were copied without them): {len(report.missing)}")
        lines += [f"  {m}" for m in report.missing]
    lines.append(f"the next new job gets id {report.next_id} or higher")
    return lines


async def migrate(source: str, target: str, data_dir: Path, *, resume: bool = False) -> MigrationReport:
    """Check the URLs and copy (MigrationRefused for a URL of the wrong kind)."""
    if not is_postgres_url(target):
        raise MigrationRefused(f"--to must be a postgresql:// URL, not {target.split('://', 1)[0]!r}")
    if is_postgres_url(source):
        raise MigrationRefused("--from must be the single host's SQLite database (sqlite:///PATH or a path)")
    try:
        path = Path(sqlite_path(source))
    except ValueError as e:
        raise MigrationRefused(str(e)) from e
    return await migrate_database(path, target, file_planner(data_dir), resume=resume)


def run(args: argparse.Namespace) -> int:
    """Run the sub-command: the summary on stdout and 0, or one line on stderr and 1."""
    try:
        report = asyncio.run(migrate(args.source, args.target, args.data_dir, resume=args.resume))
    except MigrationRefused as e:
        print(f"migrate-db: refused: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # any failure: one line for the operator; what was copied stays (--resume continues)
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"migrate-db: failed: {type(e).__name__}: {message} (fix it and rerun with --resume)", file=sys.stderr)
        return 1
    print("\n".join(summary(report)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bot migrate-db ...` on its own (the tests call it in-process)."""
    parser = argparse.ArgumentParser(prog=f"python -m bot {COMMAND}")
    add_arguments(parser)
    return run(parser.parse_args(argv))
