"""Plain file reads for async tests (blocking calls kept out of `async def` bodies, where ruff's ASYNC rules look)."""

from __future__ import annotations

from pathlib import Path


def read_bytes(path: str | Path | None) -> bytes:
    assert path is not None
    return Path(path).read_bytes()


def size_of(path: str | Path) -> int:
    return Path(path).stat().st_size


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())
