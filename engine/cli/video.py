"""The `video` (zoom/pan animation) and `style` (video style transfer) subcommands of `python -m engine`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engine.cli.common import add_precision_flag, check_model_pair, check_seed, device_or_default
from engine.config import CUT_METHODS, INIT_NOISE, OPTIMIZERS, canonical_choice
from engine.generate.renderers import renderer_for, set_cudnn_determinism
from engine.jobs import DEFAULT_CLIP, DEFAULT_VQGAN, TINY, JobKind, JobSpec
from engine.terminal import TerminalProgress


def add_video_commands(commands: Any) -> None:
    """Add `video` and `style` to the subcommands."""
    video = commands.add_parser(
        "video", help="render a zoom/pan animation", description="Render a zoom/pan animation to an MP4."
    )
    _add_common_flags(video, iterations_per_frame=30, smoother=(0.5, 5))
    video.add_argument("--init-image", metavar="PATH", help="start frame 1 from this picture")
    video.add_argument("--init-noise", choices=INIT_NOISE, help="start frame 1 from seeded noise")
    video.add_argument("--frames", type=int, default=30, metavar="N", help="frames to render (default 30)")
    video.add_argument("--zoom", type=float, default=1.0, metavar="X", help="zoom per frame; >1 zooms in (default 1)")
    video.add_argument("--shift-x", type=int, default=0, metavar="N", help="pixels to move right per frame")
    video.add_argument("--shift-y", type=int, default=0, metavar="N", help="pixels to move down per frame")
    video.add_argument("--fps", type=float, default=30.0, metavar="N", help="output frame rate (default 30)")
    video.set_defaults(run=run_video, kind=JobKind.ANIMATION)

    style = commands.add_parser(
        "style", help="restyle a video", description="Restyle every frame of a video; the audio is kept."
    )
    _add_common_flags(style, iterations_per_frame=15, smoother=(0.7, 3))
    style.add_argument("--video", required=True, metavar="PATH", help="the source video")
    style.add_argument(
        "--extraction-fps", type=float, default=30.0, metavar="N", help="source frames per second to restyle (30)"
    )
    style.add_argument(
        "--fps", type=float, default=None, metavar="N", help="output frame rate (default: the extraction rate)"
    )
    style.add_argument("--source-image-weight", type=float, default=2.0, metavar="X", help="pull toward the source")
    style.add_argument("--source-prompt-weight", type=float, default=0.0, metavar="X", help="source as image prompt")
    style.set_defaults(run=run_video, kind=JobKind.STYLE_TRANSFER)


def _add_common_flags(p: argparse.ArgumentParser, *, iterations_per_frame: int, smoother: tuple[float, int]) -> None:
    p.add_argument("--prompts", default="", help="text prompts: 'a:1 | b:-0.5' (parts), '^' separates phrases")
    p.add_argument("--image-prompts", default="", help="image prompts: file paths with optional :weight")
    p.add_argument("--noise-prompts", default="", help="noise prompts: integer seeds with optional :weight")
    p.add_argument("--size", nargs=2, type=int, default=[256, 256], metavar=("W", "H"), help="frame size (256 256)")
    p.add_argument(
        "--iterations-per-frame", type=int, default=iterations_per_frame, metavar="N",
        help=f"optimisation steps per frame (default {iterations_per_frame})",
    )  # fmt: skip
    p.add_argument(
        "--iterations-first-frame", type=int, metavar="N", help="steps of frame 1 (default: --iterations-per-frame)"
    )
    p.add_argument(
        "--change-prompts-on-frame", type=int, nargs="+", default=[], metavar="N",
        help="move to the next '^' phrase on these frames (video: after them; style: before them)",
    )  # fmt: skip
    alpha, window = smoother
    p.add_argument("--smoother", action="store_true", help="smooth the latents across frames (an EWMA)")
    p.add_argument(
        "--smoother-alpha", type=float, default=alpha, metavar="X", help=f"1 = none, lower smooths more ({alpha})"
    )
    p.add_argument(
        "--smoother-buffer-len", type=int, default=window, metavar="N", help=f"frames smoothed over ({window})"
    )
    p.add_argument("--interpolate-fps", type=float, metavar="N", help="motion-interpolate the video to N fps")
    p.add_argument("--max-bytes", type=int, metavar="N", help="fit the video under N bytes")
    p.add_argument("--seed", type=int, help="random seed, 0 ≤ N < 2^64 (default: a new one, printed)")
    p.add_argument("--cutn", type=int, default=32, help="cutouts per step (default 32)")
    p.add_argument("--cut-pow", type=float, default=1.0, help="cutout size exponent (default 1.0)")
    p.add_argument("--cut-method", choices=CUT_METHODS, default="kornia", help="cutout method (default kornia)")
    p.add_argument("--optimizer", default="Adam", help=f"{', '.join(OPTIMIZERS)} (default Adam)")
    p.add_argument("--learning-rate", type=float, default=0.1, help="learning rate (default 0.1)")
    p.add_argument("--adaptive-lr", action="store_true", help="reduce the rate when the loss stalls")
    p.add_argument("--model", default=DEFAULT_VQGAN, help=f"VQGAN model name, or tiny (default {DEFAULT_VQGAN})")
    p.add_argument("--clip-model", help=f"CLIP model name (default {DEFAULT_CLIP}; tiny with --model tiny)")
    p.add_argument("--yaml-url", help="a custom VQGAN's config URL")
    p.add_argument("--ckpt-url", help="a custom VQGAN's checkpoint URL")
    p.add_argument("--model-dir", help="model cache directory (default ENGINE_MODEL_DIR or the user cache)")
    p.add_argument("--device", help="cpu or cuda[:N] (default cuda when there is one, else cpu)")
    add_precision_flag(p)
    p.add_argument("--deterministic", action="store_true", help="cudnn deterministic mode")
    p.add_argument("--output", default="output.mp4", help="the MP4 to write (default output.mp4)")
    p.add_argument("--verbose", action="store_true", help="print every step's loss")


def video_spec_from_args(args: argparse.Namespace) -> JobSpec:
    """The job spec the flags describe."""
    clip_model = args.clip_model or (TINY if args.model == TINY else DEFAULT_CLIP)
    check_model_pair(args.model, clip_model)
    check_seed(args.seed)
    style = args.kind is JobKind.STYLE_TRANSFER
    return JobSpec(
        kind=args.kind,
        text_prompts=args.prompts,
        image_prompts=args.image_prompts,
        noise_prompts=args.noise_prompts,
        width=args.size[0],
        height=args.size[1],
        iterations=args.iterations_per_frame,
        iterations_first_frame=args.iterations_first_frame,
        seed=args.seed,
        vqgan_model=args.model,
        vqgan_yaml_url=args.yaml_url,
        vqgan_ckpt_url=args.ckpt_url,
        clip_model=clip_model,
        num_cuts=args.cutn,
        cut_power=args.cut_pow,
        cut_method=args.cut_method,
        optimizer=canonical_choice(args.optimizer, OPTIMIZERS, "optimizer"),
        learning_rate=args.learning_rate,
        adaptive_lr=args.adaptive_lr,
        init_image=None if style else args.init_image,
        init_noise=None if style else args.init_noise,
        frames=1 if style else args.frames,
        zoom=1.0 if style else args.zoom,
        shift_x=0 if style else args.shift_x,
        shift_y=0 if style else args.shift_y,
        change_prompts_on_frame=tuple(args.change_prompts_on_frame),
        smoother=args.smoother,
        smoother_alpha=args.smoother_alpha,
        smoother_buffer_len=args.smoother_buffer_len,
        fps=(args.fps or 0.0) if style else args.fps,
        interpolate_fps=args.interpolate_fps,
        video=args.video if style else None,
        extraction_fps=args.extraction_fps if style else 30.0,
        source_image_weight=args.source_image_weight if style else 2.0,
        source_prompt_weight=args.source_prompt_weight if style else 0.0,
        max_bytes=args.max_bytes,
    )


def run_video(args: argparse.Namespace) -> int:
    """Render an animation or a style transfer and say where it went."""
    spec = video_spec_from_args(args)
    renderer = renderer_for(device_or_default(args.device), args.model_dir, args.precision)
    if args.deterministic:
        set_cudnn_determinism()
    with TerminalProgress(verbose=args.verbose) as bar:
        artifact = renderer.render(spec, Path(args.output), on_progress=bar, cancel=bar.cancel)
    state = "stopped early, saved" if artifact.partial else "saved"
    print(
        f"{state} {args.output} ({artifact.frames_done} frames, {artifact.width}x{artifact.height}, "
        f"seed {artifact.seed})"
    )
    return 0
