"""The `image` subcommand of `python -m engine`: one still, through the seed API's own validation.

`--replay` takes every setting from an engine-made image's `engine_params` first (its input images
found again by name and SHA-256: `engine.cli.replay`); flags given on the command line win over them.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from engine.cli.common import add_precision_flag, check_model_pair, check_seed, device_or_default
from engine.cli.replay import replay_values
from engine.config import CUT_METHODS, INIT_IMAGE_METHODS, INIT_NOISE, VQGAN_CLIP_Config
from engine.generate.still import prepare_image, render_image
from engine.jobs import DEFAULT_CLIP, DEFAULT_VQGAN, TINY

# flag destination -> config field; None defaults mark "not given" so --replay can tell what to override
IMAGE_DEFAULTS: dict[str, Any] = {
    "prompts": "",
    "image_prompts": "",
    "noise_prompts": "",
    "init_image": None,
    "init_noise": None,
    "init_weight": 0.0,
    "init_image_method": "original",
    "size": [256, 256],
    "iterations": 100,
    "save_every": None,
    "seed": None,
    "cutn": 32,
    "cut_pow": 1.0,
    "cut_method": "kornia",
    "optimizer": "Adam",
    "learning_rate": 0.1,
    "adaptive_lr": False,
    "model": DEFAULT_VQGAN,
    "clip_model": DEFAULT_CLIP,
    "yaml_url": None,
    "ckpt_url": None,
    "precision": "auto",
}


def add_image_command(commands: Any) -> None:
    """The `image` subcommand."""
    p = commands.add_parser("image", help="render a still image", description="Render a still image.")
    p.add_argument("--prompts", help="text prompts: 'a:1 | b:-0.5' (parts), '^' separates phrases")
    p.add_argument("--image-prompts", help="image prompts: file paths with optional :weight")
    p.add_argument("--noise-prompts", help="noise prompts: integer seeds with optional :weight")
    p.add_argument("--init-image", metavar="PATH", help="start from this picture")
    p.add_argument("--init-noise", choices=INIT_NOISE, help="start from seeded noise")
    p.add_argument("--init-weight", type=float, help="weight of the anchor to the start (default 0)")
    p.add_argument("--init-image-method", choices=INIT_IMAGE_METHODS, help="how the anchor works (default original)")
    p.add_argument("--size", nargs=2, type=int, metavar=("W", "H"), help="output size (default 256 256)")
    p.add_argument("--iterations", type=int, help="optimisation steps (default 100)")
    p.add_argument("--save-every", type=int, metavar="N", help="also save the image every N steps")
    p.add_argument(
        "--timelapse", type=int, metavar="N", help="also write <output stem>.timelapse.mp4, a frame every N steps"
    )
    p.add_argument("--seed", type=int, help="random seed, 0 ≤ N < 2^64 (default: a new one, printed)")
    p.add_argument("--cutn", type=int, help="cutouts per step (default 32)")
    p.add_argument("--cut-pow", type=float, help="cutout size exponent (default 1.0)")
    p.add_argument("--cut-method", choices=CUT_METHODS, help="cutout method (default kornia)")
    p.add_argument("--optimizer", help="Adam, AdamW, Adagrad, Adamax, RMSprop, RAdam or DiffGrad (default Adam)")
    p.add_argument("--learning-rate", type=float, help="learning rate (default 0.1)")
    p.add_argument("--adaptive-lr", action="store_true", default=None, help="reduce the rate when the loss stalls")
    p.add_argument("--model", help=f"VQGAN model name, or tiny (default {DEFAULT_VQGAN})")
    p.add_argument("--clip-model", help=f"CLIP model name (default {DEFAULT_CLIP}; tiny with --model tiny)")
    p.add_argument("--yaml-url", help="a custom VQGAN's config URL")
    p.add_argument("--ckpt-url", help="a custom VQGAN's checkpoint URL")
    p.add_argument("--model-dir", help="model cache directory (default ENGINE_MODEL_DIR or the user cache)")
    p.add_argument("--device", help="cpu or cuda[:N] (default cuda when there is one, else cpu)")
    add_precision_flag(p, replay=True)
    p.add_argument("--deterministic", action="store_true", help="cudnn deterministic mode")
    p.add_argument("--output", default="output.png", help="output file; its extension picks the format")
    p.add_argument(
        "--replay",
        metavar="PNG",
        help="render again from an engine-made image's parameters (input images: beside it or in the current folder)",
    )
    p.add_argument("--verbose", action="store_true", help="print every step's loss")
    p.set_defaults(run=run_image)


def image_values(args: argparse.Namespace) -> dict[str, Any]:
    """The image flags after --replay and defaults: replayed values, then explicit flags on top."""
    values = dict(IMAGE_DEFAULTS)
    explicit = {k: getattr(args, k) for k in IMAGE_DEFAULTS if getattr(args, k, None) is not None}
    if args.replay:
        replayed = replay_values(
            Path(args.replay),
            init_image_given="init_image" in explicit,
            image_prompts_given="image_prompts" in explicit,
        )
        values.update(replayed)
    values.update(explicit)
    if "model" in explicit and "clip_model" not in explicit and explicit["model"] == TINY:
        values["clip_model"] = TINY  # --model tiny implies --clip-model tiny
    check_model_pair(values["model"], values["clip_model"])
    return values


def run_image(args: argparse.Namespace) -> int:
    """Render one still and say where it went."""
    v = image_values(args)
    check_seed(v["seed"])
    config = VQGAN_CLIP_Config(
        output_image_size=list(v["size"]),
        init_noise=v["init_noise"],
        init_image_method=v["init_image_method"],
        seed=v["seed"],
        clip_model=v["clip_model"],
        vqgan_model_name=v["model"],
        vqgan_model_yaml_url=v["yaml_url"],
        vqgan_model_ckpt_url=v["ckpt_url"],
        learning_rate=v["learning_rate"],
        cut_method=v["cut_method"],
        num_cuts=v["cutn"],
        cut_power=v["cut_pow"],
        optimizer=v["optimizer"],
        adaptiveLR=bool(v["adaptive_lr"]),
        cudnn_determinism=args.deterministic,
        cuda_device=device_or_default(args.device),
        model_dir=args.model_dir,
        precision=v["precision"],
    )
    if v["init_image"] is None:
        config = dataclasses.replace(config, init_weight=v["init_weight"])
    spec, config = prepare_image(
        args.output, config, v["prompts"], v["image_prompts"], v["noise_prompts"], v["init_image"],
        v["init_weight"], v["iterations"], v["save_every"],
    )  # fmt: skip
    if args.timelapse is not None:
        spec = dataclasses.replace(spec, timelapse_every=args.timelapse)
    artifact = render_image(spec, args.output, config, verbose=args.verbose)
    state = "stopped early, saved" if artifact.partial else "saved"
    print(f"{state} {args.output} ({artifact.width}x{artifact.height}, seed {artifact.seed})")
    for extra in artifact.paths[1:]:
        print(f"saved {extra}")
    return 0
