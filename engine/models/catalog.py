"""The model cache as an operator sees it: every registry model's files, their state on disk, fetching them.

Files have the names, and come through the same `download.fetch_first`, as on first use
(`models.loading`, `models.esrgan`), so a model fetched here is found there without a request.
`python -m engine models` (engine.cli.models) is the command line over this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.jobs import TINY
from engine.models import registry
from engine.models.download import ChecksumState, FileCheck, check_file, fetch_first

# the worst first: a model's checksum state is that of its worst file
_SEVERITY = (ChecksumState.MISMATCH, ChecksumState.UNKNOWN, ChecksumState.RECORDED, ChecksumState.VERIFIED)


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a model: its name in the cache, its URLs (the main one, then mirrors), its known SHA-256."""

    name: str
    urls: tuple[str, ...]
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """A registry model: its name on the command line, its kind, and the files it needs (none for `tiny`)."""

    name: str
    kind: str  # "vqgan", "clip", "upscaler", or "preset" for tiny
    files: tuple[ModelFile, ...]
    approx_bytes: int | None


@dataclass(frozen=True, slots=True)
class CachedModel:
    """What the cache holds of one model, each present file hashed again."""

    model: CatalogModel
    checks: tuple[FileCheck, ...]  # one per file present

    @property
    def size(self) -> int:
        """Bytes of the files present."""
        return sum(check.path.stat().st_size for check in self.checks)

    @property
    def complete(self) -> bool:
        """Whether every file of the model is present."""
        return len(self.checks) == len(self.model.files)

    @property
    def checksum(self) -> ChecksumState | None:
        """The worst state among the files present; None when none is."""
        states = {check.state for check in self.checks}
        return next((state for state in _SEVERITY if state in states), None)


def registry_models() -> list[CatalogModel]:
    """Every model of the registry: the tiny preset, the VQGANs, the CLIPs, then the upscalers."""
    models = [CatalogModel(TINY, "preset", (), 0)]
    files: tuple[ModelFile, ...]
    for vqgan in registry.VQGAN_MODELS.values():
        if vqgan.yaml_url and vqgan.ckpt_url:
            files = (
                ModelFile(f"{vqgan.name}.yaml", (vqgan.yaml_url, *vqgan.yaml_mirrors)),
                ModelFile(f"{vqgan.name}.ckpt", (vqgan.ckpt_url, *vqgan.ckpt_mirrors)),
            )
            models.append(CatalogModel(vqgan.name, "vqgan", files, registry.DOWNLOAD_SIZES.get(vqgan.name)))
    for clip in registry.CLIP_MODELS.values():
        if clip.url:
            files = (ModelFile(clip.file_name, (clip.url,), clip.sha256),)
            models.append(CatalogModel(clip.name, "clip", files, registry.DOWNLOAD_SIZES.get(clip.name)))
    for key, upscaler in registry.REAL_ESRGAN_MODELS.items():
        files = (ModelFile(upscaler.file_name, (upscaler.url,)),)
        models.append(CatalogModel(Path(key).stem, "upscaler", files, registry.DOWNLOAD_SIZES.get(key)))
    return models


def find_model(name: str) -> CatalogModel | None:
    """The registry model called `name` (an upscaler by its name with or without `.pth`), else None."""
    for model in registry_models():
        if name in (model.name, *(f.name for f in model.files if model.kind == "upscaler")):
            return model
    return None


def cached_model(model: CatalogModel, directory: Path) -> CachedModel:
    """What `directory` holds of `model`, every present file hashed again."""
    present = [f for f in model.files if (directory / f.name).is_file()]
    return CachedModel(model, tuple(check_file(directory / f.name, sha256=f.sha256) for f in present))


def download_model(model: CatalogModel, directory: Path, *, progress: bool = True) -> list[Path]:
    """Every file of `model` in `directory`: fetched as on first use, or checked when already there."""
    return [fetch_first(f.urls, directory / f.name, sha256=f.sha256, progress=progress) for f in model.files]


def check_cache(directory: Path) -> list[FileCheck]:
    """Every model file in `directory` hashed again and compared with its known SHA-256 (the registry's CLIP
    files), else the one recorded at its first download. Checksum files and unfinished downloads are skipped."""
    if not directory.is_dir():
        return []
    known = {f.name: f.sha256 for model in registry_models() for f in model.files}
    files = sorted(
        path
        for path in directory.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix != ".sha256"  # `.x.part`: unfinished
    )
    return [check_file(path, sha256=known.get(path.name)) for path in files]
