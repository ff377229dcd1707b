"""What a result says about how it was made: the seed's text keys and the `engine_params` JSON.

Stills carry both (PNG text chunks, or EXIF in a JPEG: `engine.pipelines.images`); videos carry the
JSON as their container comment. Together they are enough to render the same job again
(`python -m engine image --replay`; docs/engine.md, "Metadata and replay").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from engine.jobs import JobSpec, spec_to_json
from engine.models.registry import CLIP_MODELS
from engine.pipelines import images
from engine.precision import Precision, onednn_isa_cap
from engine.prompts import PromptType, parse_prompts

PARAMS_SCHEMA = 1
ENGINE_VERSION = "0.1.0"


def job_metadata(
    spec: JobSpec, width: int, height: int, device: torch.device, precision: Precision
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The seed's PNG text keys and the `engine_params` object of a job rendered at `width`×`height`.

    `dtype` is what the models computed in (a replay renders in it again); `precision` says what was
    asked for and what else shapes the bits: the thread count and, on a CPU, torch's vector ISA and
    any oneDNN cap (docs/engine.md, "Seeds, determinism and resume").
    """
    text = {
        "text_prompts": spec.text_prompts,
        "image_prompts": spec.image_prompts,
        "noise_prompts": spec.noise_prompts,
        "iterations": spec.iterations,
        "init_image": spec.init_image,
        "save_every": spec.save_every,
        "cut_method": spec.cut_method,
        "seed": spec.seed,
    }
    files: dict[str, Any] = {"init_image": None, "image_prompts": []}
    if spec.init_image:
        files["init_image"] = {"path": spec.init_image, "sha256": images.sha256_file(spec.init_image)}
    for path in _image_paths(spec):
        files["image_prompts"].append({"path": path, "sha256": images.sha256_file(path)})
    params = {
        "schema": PARAMS_SCHEMA,
        "engine": ENGINE_VERSION,
        "torch": torch.__version__,
        "device": device.type,
        "dtype": precision.dtype_name,
        "precision": _precision_record(precision, device),
        "config": {
            "vqgan_model_name": spec.vqgan_model,
            "vqgan_model_yaml_url": spec.vqgan_yaml_url,
            "vqgan_model_ckpt_url": spec.vqgan_ckpt_url,
            "clip_model": spec.clip_model,
            "clip_sha256": _clip_sha256(spec.clip_model),
            "requested_size": [spec.width, spec.height],
            "output_image_size": [width, height],
            "cut_method": spec.cut_method,
            "num_cuts": spec.num_cuts,
            "cut_power": spec.cut_power,
            "optimizer": spec.optimizer,
            "learning_rate": spec.learning_rate,
            "adaptiveLR": spec.adaptive_lr,
            "init_image_method": spec.init_image_method,
            "init_weight": spec.init_weight,
            "init_noise": spec.init_noise,
            "seed": spec.seed,
        },
        "prompts": {"text": spec.text_prompts, "image": spec.image_prompts, "noise": spec.noise_prompts},
        "iterations": spec.iterations,
        "save_every": spec.save_every,
        "files": files,
        "spec": json.loads(spec_to_json(spec)),
    }
    return text, params


def _precision_record(precision: Precision, device: torch.device) -> dict[str, Any]:
    record: dict[str, Any] = {"requested": precision.requested, "threads": torch.get_num_threads()}
    if device.type == "cpu":
        record["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        record["onednn_isa_cap"] = onednn_isa_cap()
    return record


def _clip_sha256(name: str) -> str | None:
    """The registry's SHA-256 of a CLIP checkpoint (None for tiny and unknown names)."""
    known = CLIP_MODELS.get(name)
    return None if known is None else known.sha256


def _image_paths(spec: JobSpec) -> list[str]:
    """Image-prompt paths of every phrase, in order and without repeats."""
    seen: list[str] = []
    for phrase in parse_prompts(spec.image_prompts, PromptType.IMAGE):
        for part in phrase:
            if part.text not in seen:
                seen.append(part.text)
    return seen


def container_comment(params: dict[str, Any]) -> str:
    """The MP4 comment: the generation parameters as one JSON object (prompts, seed, settings).

    Input files appear by name only: the video is posted, the folders of the machine that made it are not.
    """
    public = json.loads(json.dumps(params))
    spec, files = public.get("spec", {}), public.get("files", {})
    for key in ("video", "init_image"):
        if spec.get(key):
            spec[key] = Path(spec[key]).name
    if public.get("config", {}).get("init_image"):
        public["config"]["init_image"] = Path(public["config"]["init_image"]).name
    for entry in [files.get("init_image"), *(files.get("image_prompts") or [])]:
        if entry:
            entry["path"] = Path(entry["path"]).name
    return json.dumps(public, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
