"""The `upscale` subcommand of `python -m engine`: a still or a video through Real-ESRGAN (or `tiny`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from engine.cli.common import CliError, device_or_default
from engine.generate.renderers import renderer_for
from engine.jobs import DEFAULT_UPSCALER, JobKind, JobSpec
from engine.media import stills
from engine.terminal import TerminalProgress


def add_upscale_command(commands: Any) -> None:
    """Add `upscale` to the subcommands."""
    p = commands.add_parser(
        "upscale",
        help="upscale an image or a video",
        description="Upscale an image (PNG/JPG; its metadata is kept) or every frame of a video (audio kept).",
    )
    p.add_argument("--input", required=True, metavar="PATH", help="the image or video to upscale")
    p.add_argument(
        "--model", default=DEFAULT_UPSCALER, metavar="NAME",
        help=f"a Real-ESRGAN model name, a .pth/.safetensors file, or tiny (default {DEFAULT_UPSCALER})",
    )  # fmt: skip
    p.add_argument("--output", metavar="PATH", help="where to write (default: <input>_upscaled beside it)")
    p.add_argument("--tile", type=int, metavar="N", help="tile side in input pixels, 0 = whole (default: by size)")
    p.add_argument("--max-bytes", type=int, metavar="N", help="fit a video under N bytes")
    p.add_argument("--model-dir", help="model cache directory (default ENGINE_MODEL_DIR or the user cache)")
    p.add_argument("--device", help="cpu or cuda[:N] (default cuda when there is one, else cpu)")
    p.set_defaults(run=run_upscale)


def _is_image(path: Path) -> bool:
    try:
        with Image.open(path, formats=stills.FORMATS):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def upscale_spec_from_args(args: argparse.Namespace) -> tuple[JobSpec, Path]:
    """The job spec and output path the flags describe."""
    source = Path(args.input)
    if not source.is_file():
        raise CliError(f"--input: {str(source)!r} does not exist")
    if args.tile is not None and args.tile < 0:
        raise CliError("--tile must be 0 or more")
    still = _is_image(source)
    if args.output:
        output = Path(args.output)
    else:
        suffix = (source.suffix if source.suffix.lower() in (".png", ".jpg", ".jpeg") else ".png") if still else ".mp4"
        output = source.with_name(f"{source.stem}_upscaled{suffix}")
    spec = JobSpec(
        kind=JobKind.UPSCALE,
        init_image=str(source) if still else None,
        video=None if still else str(source),
        upscale_model=args.model,
        upscale_tile=args.tile,
        max_bytes=args.max_bytes,
    )
    return spec, output


def run_upscale(args: argparse.Namespace) -> int:
    """Upscale and say where the result went."""
    spec, output = upscale_spec_from_args(args)
    renderer = renderer_for(device_or_default(args.device), args.model_dir)
    with TerminalProgress(unit="tile") as bar:
        artifact = renderer.render(spec, output, on_progress=bar, cancel=bar.cancel)
    state = "stopped early, saved" if artifact.partial else "saved"
    frames = f"{artifact.frames_done} frames, " if spec.video else ""
    print(f"{state} {output} ({frames}{artifact.width}x{artifact.height})")
    return 0
