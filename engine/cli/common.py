"""What the subcommands share: the one-line error, the parser that raises it, and the checks of shared flags."""

from __future__ import annotations

import argparse
from typing import NoReturn

from engine.config import PRECISIONS
from engine.jobs import TINY
from engine.pipelines.checks import MAX_SEED


class CliError(Exception):
    """A bad argument; printed as one line."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a CliError (one line, exit status 2) instead of usage text."""

    def error(self, message: str) -> NoReturn:
        raise CliError(message)


def add_precision_flag(p: argparse.ArgumentParser, *, replay: bool = False) -> None:
    """`--precision auto|fp32|bf16`; with `replay`, an unset flag (None) lets a replayed file's own dtype win."""
    p.add_argument(
        "--precision", choices=PRECISIONS, default=None if replay else "auto",
        help="what the models compute in; auto (default): bf16 where this device is natively faster at it, else fp32"
        + ("; a replay uses the file's own" if replay else ""),
    )  # fmt: skip


def check_seed(seed: int | None) -> None:
    """CliError for a seed outside 0 ≤ N < 2^64."""
    if seed is not None and not 0 <= seed < MAX_SEED:
        raise CliError("--seed must be 0 ≤ N < 2^64")


def check_model_pair(vqgan: str, clip: str) -> None:
    """CliError when the tiny preset is mixed with a real model (their embeddings do not fit together)."""
    if (vqgan == TINY) != (clip == TINY):
        raise CliError(
            f"the tiny preset cannot be mixed with a real model (VQGAN {vqgan!r}, CLIP {clip!r}); use --model tiny alone"
        )


def device_or_default(device: str | None) -> str:
    """`--device`, else CUDA when there is one, else the CPU."""
    if device:
        return device
    from engine.devices import default_device  # torch: only once a command runs, so --help stays quick

    return default_device()
