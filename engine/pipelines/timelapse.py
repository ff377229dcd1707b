"""Timelapses of a still's optimisation: the image every N iterations, encoded as `<stem>.timelapse.mp4`.

`JobSpec.timelapse_every` asks for one (`checks.check_timelapse_spec` refuses a bad one). The still
pipeline calls `TimelapseRecorder.record` after each step; the recorder keeps a JPG of every N-th
iteration (and of the last one) in a working folder beside the output, then `finish` encodes them
with `video_tools.make_timelapse`. Its frames travel in
the job's checkpoint, so a resumed job's timelapse still starts at iteration N.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from engine.jobs import JobSpec
from engine.media import video_tools
from engine.media.shrink import MIN_VIDEO_BYTES

log = logging.getLogger(__name__)

TIMELAPSE_FPS = 10.0
SUFFIX = ".timelapse.mp4"
_JPEG_QUALITY = 92


def timelapse_path(output: str | Path) -> Path:
    """Where a still's timelapse goes: `out.png` → `out.timelapse.mp4`, beside it."""
    output = Path(output)
    return output.with_name(output.stem + SUFFIX)


class TimelapseRecorder:
    """Collects the frames of one still's timelapse; `close` removes its working folder."""

    def __init__(self, output: Path, every: int, saved: dict[str, Any] | None = None) -> None:
        self.output = Path(output)
        self.every = every
        self.folder = Path(tempfile.mkdtemp(prefix=".vqbot-timelapse-", dir=self.output.parent))
        self.frames: list[tuple[int, Path]] = []  # (iteration, file)
        if saved:
            for iteration, data in saved["frames"]:
                self._store(int(iteration), data)

    @classmethod
    def for_spec(cls, spec: JobSpec, output: Path, checkpoint: dict[str, Any] | None) -> TimelapseRecorder | None:
        """A recorder when `spec` asks for a timelapse (with the checkpoint's frames), else None."""
        if spec.timelapse_every is None:
            return None
        return cls(output, spec.timelapse_every, (checkpoint or {}).get("timelapse"))

    def _store(self, iteration: int, data: bytes) -> None:
        path = self.folder / video_tools.frame_name(iteration)
        path.write_bytes(data)
        self.frames.append((iteration, path))

    def record(self, iteration: int, total: int, image: Callable[[], Image.Image]) -> None:
        """Keep the image of `iteration` when it is every N-th, or the last (decoded only then)."""
        if iteration % self.every and iteration != total:
            return
        if self.frames and self.frames[-1][0] >= iteration:
            return
        path = self.folder / video_tools.frame_name(iteration)
        image().save(path, "JPEG", quality=_JPEG_QUALITY)
        self.frames.append((iteration, path))

    def state(self) -> dict[str, Any]:
        """The frames so far, for the job's checkpoint (plain bytes: weights_only loading accepts them)."""
        return {"frames": [(iteration, path.read_bytes()) for iteration, path in self.frames]}

    def finish(self, title: str = "", comment: str = "", max_bytes: int | None = None) -> Path | None:
        """Encode the frames into `<stem>.timelapse.mp4`; None when there are none (cancelled at once)."""
        if not self.frames:
            return None
        target = timelapse_path(self.output)
        fitted = max_bytes if max_bytes is not None and max_bytes >= MIN_VIDEO_BYTES else None
        video_tools.make_timelapse(
            [path for _, path in self.frames],
            target,
            TIMELAPSE_FPS,
            metadata_title=title,
            metadata_comment=comment,
            max_bytes=fitted,
        )
        log.info("timelapse of %d frames → %s", len(self.frames), target)
        return target

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
