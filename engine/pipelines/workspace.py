"""A job's working folder, and the frames it writes there once for its checkpoints to name.

Intermediate files (extracted source frames, rendered and upscaled frames, a timelapse's stills,
encoding stages) live in one folder per job. A caller that resumes jobs after a crash passes its
own folder (`Renderer.render(work_dir=...)`), which outlives attempts: a checkpoint then names the
frames already written (file name and SHA-256) instead of carrying their bytes, so its size does
not grow with the frames done. Without one the folder is a fresh one beside the output, removed
when the render ends (docs/engine.md, "Seeds, determinism and resume"). No torch here.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from engine.errors import StaleCheckpoint
from engine.pipelines.images import sha256_file

FRAMES_MISSING = "the saved frames of this job are missing"


@contextlib.contextmanager
def job_workspace(output: Path, work_dir: Path | None) -> Iterator[Path]:
    """The folder a job keeps its intermediate files in, for the duration of the render.

    `work_dir` (the caller's) is created when needed and left in place: removing it is the caller's
    job, once the job has ended for good. None: a fresh `.<output name>.work-*` folder beside the
    output, removed when the render ends, however it ends.
    """
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        yield work_dir
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{output.name}.work-", dir=output.parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class FrameStore:
    """The frames a job has written into `folder`, in order, each with its SHA-256 taken once when written."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._frames: list[tuple[Path, str]] = []

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self._frames]

    def add(self, path: Path) -> None:
        """Record a frame just written at `path` (inside `folder`)."""
        self._frames.append((path, sha256_file(path)))

    def references(self) -> list[tuple[str, str]]:
        """(file name, SHA-256) of every frame, for a checkpoint: a few dozen bytes a frame."""
        return [(path.name, digest) for path, digest in self._frames]

    def restore(self, references: Sequence[Sequence[str]]) -> None:
        """Take back the frames a checkpoint names; StaleCheckpoint unless each is in `folder` unchanged."""
        frames = []
        for name, digest in references:
            path = self.folder / Path(str(name)).name
            if not path.is_file() or sha256_file(path) != digest:
                raise StaleCheckpoint(FRAMES_MISSING)
            frames.append((path, str(digest)))
        self._frames = frames
