"""The `models` subcommand of `python -m engine`: list, download and verify the model cache.

An operator fetches the models before the bot's first start (`models download NAME …` or `--all`)
and checks them later (`models verify`). Downloads are the ones first use makes (engine.models.catalog).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.common import CliError, OneLineParser
from engine.errors import ModelLoadError
from engine.models.catalog import (
    CachedModel,
    CatalogModel,
    cached_model,
    check_cache,
    download_model,
    find_model,
    registry_models,
)
from engine.models.download import ChecksumState, model_cache_dir

_COLUMNS = ("NAME", "KIND", "SIZE", "CACHED", "CHECKSUM")


def add_models_command(commands: Any) -> None:
    """Add `models list | download | verify` to the subcommands."""
    p = commands.add_parser(
        "models",
        help="list, download and verify the model files",
        description="The model cache ($ENGINE_MODEL_DIR, else the user cache): list, download and verify its files.",
    )
    actions = p.add_subparsers(
        dest="models_command", metavar="list|download|verify", required=True, parser_class=OneLineParser
    )
    where = OneLineParser(add_help=False)
    where.add_argument("--model-dir", help="model cache directory (default ENGINE_MODEL_DIR or the user cache)")
    listing = actions.add_parser(
        "list", parents=[where], help="every known model and what the cache holds of it",
        description="Every registry model: name, kind, size, whether it is cached, and its files' checksum state "
        "(every cached file is read and hashed).",
    )  # fmt: skip
    listing.set_defaults(run=run_list)
    download = actions.add_parser(
        "download", parents=[where], help="download models into the cache",
        description="Download models into the cache as their first use would (checksummed, retried, atomic).",
    )  # fmt: skip
    download.add_argument("names", nargs="*", metavar="NAME", help="model names, as `models list` shows them")
    download.add_argument("--all", action="store_true", help="every registry model")
    download.set_defaults(run=run_download)
    verify = actions.add_parser(
        "verify", parents=[where], help="hash every cached file again",
        description="Hash every cached model file again; exit status 1 and one line per file that changed.",
    )  # fmt: skip
    verify.set_defaults(run=run_verify)


def run_list(args: argparse.Namespace) -> int:
    """Print one row per registry model."""
    directory = model_cache_dir(args.model_dir)
    rows = [_row(cached_model(model, directory)) for model in registry_models()]
    widths = [max(len(row[i]) for row in (_COLUMNS, *rows)) for i in range(len(_COLUMNS))]
    for row in (_COLUMNS, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(f"cache: {directory}")
    return 0


def _row(cached: CachedModel) -> tuple[str, str, str, str, str]:
    model = cached.model
    if not model.files:
        return model.name, model.kind, "-", "built in", "-"
    if cached.complete:
        size, state = _size(cached.size), "yes"
    else:
        size = f"~{_size(model.approx_bytes)}" if model.approx_bytes else "?"
        state = f"partly ({len(cached.checks)} of {len(model.files)} files)" if cached.checks else "no"
    checksum = cached.checksum.value if cached.checksum else "-"
    return model.name, model.kind, size, state, checksum


def _size(n: int) -> str:
    if n >= 10**9:
        return f"{n / 10**9:.1f} GB"
    return f"{n / 10**6:.0f} MB" if n >= 10**6 else f"{n / 10**3:.0f} kB"


def run_download(args: argparse.Namespace) -> int:
    """Download the named models (or all); 1 when any failed, the others downloaded all the same."""
    if args.all and args.names:
        raise CliError("give model names or --all, not both")
    if not args.all and not args.names:
        raise CliError("name the models to download (`python -m engine models list` shows them), or give --all")
    models = registry_models() if args.all else [_known(name) for name in dict.fromkeys(args.names)]
    directory = model_cache_dir(args.model_dir)
    failed = 0
    for model in models:
        if not model.files:
            print(f"{model.name}: built in, nothing to download")
            continue
        had = all((directory / f.name).is_file() for f in model.files)
        try:
            paths = download_model(model, directory)
        except ModelLoadError as exc:
            print(f"error: {model.name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        size = _size(sum(path.stat().st_size for path in paths))
        print(f"{model.name}: {'already cached, checksum ok' if had else 'downloaded'} ({size})")
    print(f"cache: {directory}")
    return 1 if failed else 0


def _known(name: str) -> CatalogModel:
    model = find_model(name)
    if model is None:
        raise CliError(f"unknown model {name!r}; `python -m engine models list` shows the known names")
    return model


def run_verify(args: argparse.Namespace) -> int:
    """Hash every cached file again: one line per mismatch and status 1, else a summary and status 0."""
    directory = model_cache_dir(args.model_dir)
    checks = check_cache(directory)
    if not checks:
        print(f"no model files in {directory}")
        return 0
    mismatched = [check for check in checks if check.state is ChecksumState.MISMATCH]
    for check in mismatched:
        print(f"mismatch: {check.mismatch()}")
    if mismatched:
        print(f"{len(mismatched)} of {len(checks)} cached model files in {directory} changed after their download")
        return 1
    count = {state: sum(check.state is state for check in checks) for state in ChecksumState}
    print(
        f"all well: {len(checks)} cached model files in {directory}: {count[ChecksumState.VERIFIED]} verified, "
        f"{count[ChecksumState.RECORDED]} as recorded at first download, {count[ChecksumState.UNKNOWN]} with no checksum"
    )
    return 0
