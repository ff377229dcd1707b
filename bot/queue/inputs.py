"""A job's input files: checked, copied into the data directory before the job is stored, renamed under its id.

A job never depends on a file outside the data directory: an attachment's download, or a finished
job's result that a button starts from, is copied into `data_dir/inputs/<job id>/`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from bot.queue.api import QueueRefused
from bot.queue.job_files import STAGING_PREFIX, remove
from engine.jobs import JobSpec

log = logging.getLogger(__name__)

PATH_FIELDS = ("init_image", "video")  # spec fields that are a local file path
INPUT_FIELDS = (*PATH_FIELDS, "image_prompts")  # `inputs` keys; an image prompt names its file in the prompt text


def escape_path(path: Path | str) -> str:
    """A path as it appears in a prompt (colons escaped for the prompt syntax)."""
    return str(path).replace(":", "\\:")


def input_files(spec: JobSpec, inputs: Mapping[str, Path]) -> dict[str, Path]:
    """The files `spec` needs, by input field: those in `inputs`, and any path the spec names itself."""
    unknown = sorted(set(inputs) - set(INPUT_FIELDS))
    if unknown:
        raise QueueRefused(f"unknown input(s): {', '.join(unknown)}")
    files: dict[str, Path] = {}
    for name in INPUT_FIELDS:
        given = inputs.get(name) or (getattr(spec, name) if name in PATH_FIELDS else None)
        if given is None:
            continue
        path = Path(given)
        if not path.is_file():
            raise QueueRefused(f"the {name.replace('_', ' ').rstrip('s')} file is missing; attach it again")
        if name == "image_prompts" and escape_path(path) not in spec.image_prompts:
            raise QueueRefused("the image prompt does not name the attached image")
        files[name] = path
    return files


@dataclasses.dataclass(slots=True)
class StagedInputs:
    """Copies of a job's inputs in a staging folder of their own, waiting for the job's id.

    The staging folder is unique, so a failed submit never leaves files where a later job would find
    them: `discard` removes them wherever they are, and `bot.queue.job_files` removes what a crash left.
    """

    folder: Path
    files: Mapping[str, Path]  # field -> the original file
    names: Mapping[str, str]  # field -> its copy's name in `folder`
    moved_to: Path | None = None  # set once renamed under the job's id (inside the job's transaction)
    unstore: Callable[[], Awaitable[object]] | None = None  # deletes the copies stored in the database, if any

    @classmethod
    def copy(cls, data_dir: Path, files: Mapping[str, Path]) -> StagedInputs:
        """Copy `files` into a fresh staging folder (blocking: call it in a thread); nothing is left if it fails."""
        folder = data_dir / "inputs" / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        folder.mkdir(parents=True)
        names: dict[str, str] = {}
        try:
            for name, path in files.items():
                names[name] = f"{name}{path.suffix.lower()}"  # one name per field: two inputs never collide
                shutil.copyfile(path, folder / names[name])
        except BaseException:
            remove(folder)
            raise
        return cls(folder, dict(files), names)

    async def move_to(self, final: Path, spec: JobSpec) -> JobSpec:
        """Rename the staging folder to `final`; `spec` with its paths pointing there.

        Called with the job's new id inside its transaction: no stored job has that id, so anything
        already at `final` is a leftover of a submit that was rolled back, and goes first.
        """
        await asyncio.to_thread(_replace_folder, self.folder, final)
        self.moved_to = final
        init_image = str(final / self.names["init_image"]) if "init_image" in self.names else spec.init_image
        video = str(final / self.names["video"]) if "video" in self.names else spec.video
        image_prompts = spec.image_prompts
        if "image_prompts" in self.names:
            old, new = escape_path(self.files["image_prompts"]), escape_path(final / self.names["image_prompts"])
            image_prompts = image_prompts.replace(old, new)
        return dataclasses.replace(spec, init_image=init_image, video=video, image_prompts=image_prompts)

    async def discard(self, *, moved: bool = True) -> None:
        """The job was not stored (refused, or its transaction failed): remove the copies, staged or moved.

        `moved=False` leaves a moved folder alone (a submit cancelled mid-COMMIT may have stored its job;
        if it did not, the start-up sweep removes the folder).
        """
        for folder in (self.folder, self.moved_to if moved else None):
            if folder is not None:
                await asyncio.to_thread(remove, folder)
        if moved and self.unstore is not None:
            try:
                await self.unstore()
            except Exception as e:  # the job was not made; its rows only take room
                log.warning("the stored copies of a refused job's inputs could not be deleted: %s", e)


def _replace_folder(staged: Path, final: Path) -> None:
    if final.exists():
        remove(final)
    os.replace(staged, final)
