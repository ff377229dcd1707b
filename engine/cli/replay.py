"""`image --replay FILE`: the settings an engine-made image carries, with its input images found again.

A result names its input images by file name and SHA-256 only, never by the folders of the machine
that made it (docs/engine.md, "Metadata and replay"). A replay looks for each one beside the
replayed file, then in the current directory, and takes a file only when its SHA-256 matches.
A missing or changed input is one line naming the file and the flag that supplies another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.cli.common import CliError
from engine.config import precision_from_dtype_name
from engine.pipelines.images import read_params, sha256_file
from engine.pipelines.metadata import file_name
from engine.prompts import rename_image_parts


def replay_values(path: Path, *, init_image_given: bool = False, image_prompts_given: bool = False) -> dict[str, Any]:
    """Flag values from an engine-made image, its inputs located; CliError when one is missing or changed.

    An input whose flag is given on the command line (`--init-image`, `--image-prompts`) is not looked for.
    """
    if not path.is_file():
        raise CliError(f"--replay: {str(path)!r} does not exist")
    try:
        params = read_params(path)
    except (ValueError, OSError) as e:
        raise CliError(f"--replay: {e}") from None
    config, prompts, files = params.get("config", {}), params.get("prompts", {}), params.get("files", {})
    init_image = None
    if files.get("init_image") and not init_image_given:
        init_image = str(_locate(files["init_image"], path, "init image", "--init-image"))
    image_prompts = prompts.get("image", "")
    if image_prompts and not image_prompts_given:
        found = {
            file_name(_recorded_name(entry)): _locate(entry, path, "image prompt", "--image-prompts")
            for entry in files.get("image_prompts") or []
        }
        image_prompts = rename_image_parts(image_prompts, lambda body: str(_found(found, body)))
    return {
        "prompts": prompts.get("text", ""),
        "image_prompts": image_prompts,
        "noise_prompts": prompts.get("noise", ""),
        "init_image": init_image,
        "init_noise": config.get("init_noise"),
        "init_weight": config.get("init_weight", 0.0),
        "init_image_method": config.get("init_image_method", "original"),
        "size": config.get("requested_size") or config.get("output_image_size"),
        "iterations": params.get("iterations"),
        "save_every": params.get("save_every"),
        "seed": config.get("seed"),
        "cutn": config.get("num_cuts"),
        "cut_pow": config.get("cut_power"),
        "cut_method": config.get("cut_method"),
        "optimizer": config.get("optimizer"),
        "learning_rate": config.get("learning_rate"),
        "adaptive_lr": config.get("adaptiveLR"),
        "model": config.get("vqgan_model_name"),
        "clip_model": config.get("clip_model"),
        "yaml_url": config.get("vqgan_model_yaml_url"),
        "ckpt_url": config.get("vqgan_model_ckpt_url"),
        "precision": precision_from_dtype_name(params.get("dtype")),  # the same bits need the same dtype
    }


def _recorded_name(entry: dict[str, Any]) -> str:
    # schema 2 records a name; files made before it recorded the full path
    return str(entry.get("name") or entry.get("path") or "")


def _locate(entry: dict[str, Any], replayed: Path, what: str, flag: str) -> Path:
    """The file an `engine_params` entry names, beside the replayed file or in the current directory."""
    recorded = _recorded_name(entry)
    name = file_name(recorded)
    candidates = [replayed.parent / name, Path.cwd() / name]
    if entry.get("path"):
        candidates.append(Path(recorded))  # an older file's own record of where its input was
    present = [c for c in candidates if c.is_file()]
    for candidate in present:
        if sha256_file(candidate) == entry.get("sha256"):
            return candidate
    if present:
        raise CliError(
            f"--replay: the {what} {name} has changed since {replayed.name} was made (its SHA-256 differs); "
            f"restore it or give {flag}"
        )
    raise CliError(
        f"--replay: the {what} {name} is not beside {replayed.name} nor in the current directory; "
        f"put it there or give {flag}"
    )


def _found(found: dict[str, Path], body: str) -> Path:
    try:
        return found[file_name(body)]
    except KeyError:
        raise CliError(
            f"--replay: the image prompt {file_name(body)} has no checksum in the file's parameters"
        ) from None
