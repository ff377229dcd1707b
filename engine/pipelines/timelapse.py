"""Timelapses of a still's optimisation: the image every N iterations, encoded as `<stem>.timelapse.mp4`.

`JobSpec.timelapse_every` asks for one (`checks.check_timelapse_spec` refuses a bad one). The still
pipeline calls `TimelapseRecorder.record` after each step; the recorder keeps a JPG of every N-th
iteration (and of the last one) in the job's work folder, then `finish` encodes them with
`video_tools.make_timelapse`. The job's checkpoint names them (file name and SHA-256), so a resumed
job's timelapse still starts at iteration N.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from engine.errors import Cancelled
from engine.jobs import JobSpec
from engine.media import video_tools
from engine.media.shrink import MIN_VIDEO_BYTES
from engine.pipelines.workspace import FrameStore

log = logging.getLogger(__name__)

TIMELAPSE_FPS = 10.0
SUFFIX = ".timelapse.mp4"
_JPEG_QUALITY = 92


def timelapse_path(output: str | Path) -> Path:
    """Where a still's timelapse goes: `out.png` → `out.timelapse.mp4`, beside it."""
    output = Path(output)
    return output.with_name(output.stem + SUFFIX)


class TimelapseRecorder:
    """Collects the frames of one still's timelapse in `folder` (the job's work folder keeps it)."""

    def __init__(self, output: Path, every: int, folder: Path, saved: dict[str, Any] | None = None) -> None:
        self.output = Path(output)
        self.every = every
        folder.mkdir(parents=True, exist_ok=True)
        self.frames = FrameStore(folder)
        self.iterations: list[int] = []  # the iteration of each frame
        if saved:
            self.frames.restore([(name, digest) for _, name, digest in saved["frames"]])
            self.iterations = [int(iteration) for iteration, _, _ in saved["frames"]]

    @classmethod
    def for_spec(
        cls, spec: JobSpec, output: Path, folder: Path, checkpoint: dict[str, Any] | None
    ) -> TimelapseRecorder | None:
        """A recorder when `spec` asks for a timelapse (with the checkpoint's frames), else None."""
        if spec.timelapse_every is None:
            return None
        return cls(output, spec.timelapse_every, folder, (checkpoint or {}).get("timelapse"))

    def record(self, iteration: int, total: int, image: Callable[[], Image.Image]) -> None:
        """Keep the image of `iteration` when it is every N-th, or the last (decoded only then)."""
        if iteration % self.every and iteration != total:
            return
        if self.iterations and self.iterations[-1] >= iteration:
            return
        path = self.frames.folder / video_tools.frame_name(iteration)
        image().save(path, "JPEG", quality=_JPEG_QUALITY)
        self.frames.add(path)
        self.iterations.append(iteration)

    def state(self) -> dict[str, Any]:
        """The frames so far, for the job's checkpoint: (iteration, file name, SHA-256) each."""
        refs = self.frames.references()
        return {"frames": [(it, name, digest) for it, (name, digest) in zip(self.iterations, refs, strict=True)]}

    def finish(
        self, title: str = "", comment: str = "", max_bytes: int | None = None, cancel: threading.Event | None = None
    ) -> Path | None:
        """Encode the frames into `<stem>.timelapse.mp4`; None when there are none (cancelled at once) or
        when `cancel` stops the encode (the still itself is done)."""
        if not len(self.frames):
            return None
        target = timelapse_path(self.output)
        fitted = max_bytes if max_bytes is not None and max_bytes >= MIN_VIDEO_BYTES else None
        staged = self.frames.folder / "timelapse.mp4"  # encoded in the work folder, then moved into place
        try:
            video_tools.make_timelapse(
                self.frames.paths,
                staged,
                TIMELAPSE_FPS,
                metadata_title=title,
                metadata_comment=comment,
                max_bytes=fitted,
                cancel=cancel,
            )
            video_tools.move_into_place(staged, target)
        except Cancelled:
            log.info("timelapse of %s cancelled", self.output.name)
            return None
        finally:
            staged.unlink(missing_ok=True)
        log.info("timelapse of %d frames → %s", len(self.frames), target)
        return target
