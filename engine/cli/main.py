"""The command line's entry point: the parser of every subcommand, and one line on stderr for bad input."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Sequence

from engine.cli.common import CliError, OneLineParser
from engine.cli.image import add_image_command
from engine.cli.models import add_models_command
from engine.cli.upscale import add_upscale_command
from engine.cli.video import add_video_commands
from engine.errors import EngineError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per job kind."""
    parser = OneLineParser(prog="python -m engine", description="Render with VQGAN+CLIP.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    add_image_command(commands)
    add_video_commands(commands)
    add_upscale_command(commands)
    add_models_command(commands)
    return parser


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; bad input ends with one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    warnings.formatwarning = _one_line_warning
    try:
        args = build_parser().parse_args(argv)
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (EngineError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
