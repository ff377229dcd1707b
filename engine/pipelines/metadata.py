"""What a result says about how it was made: the seed's text keys and the `engine_params` JSON.

Stills carry both (PNG text chunks, or EXIF in a JPEG: `engine.pipelines.images`); videos carry the
JSON as their container comment. Together they are enough to render the same job again
(`python -m engine image --replay`; docs/engine.md, "Metadata and replay").
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import torch

from engine.jobs import JobSpec, spec_to_json
from engine.models.registry import CLIP_MODELS
from engine.pipelines import images
from engine.precision import Precision, onednn_isa_cap
from engine.prompts import PromptType, parse_prompts, rename_image_parts

PARAMS_SCHEMA = 2  # 2: input files by name (`files.*.name`), never by path
ENGINE_VERSION = "0.1.0"
_SEPARATORS = re.compile(r"[\\/]")


def file_name(path: str) -> str:
    """The last part of a path, '/' or '\\' separated: how a result names a file of the host's."""
    return _SEPARATORS.split(path)[-1]


def public_spec(spec: JobSpec) -> JobSpec:
    """`spec` as a result may show it: every input file by its name, no folder of the host's."""

    def named(path: str | None) -> str | None:
        return file_name(path) if path else path

    model = spec.upscale_model
    return dataclasses.replace(
        spec,
        init_image=named(spec.init_image),
        video=named(spec.video),
        image_prompts=rename_image_parts(spec.image_prompts, file_name),
        upscale_model=file_name(model) if _SEPARATORS.search(model) else model,  # a weight file of the host's
    )


def job_metadata(
    spec: JobSpec, width: int, height: int, device: torch.device, precision: Precision
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The seed's PNG text keys and the `engine_params` object of a job rendered at `width`×`height`.

    Input images appear by file name and SHA-256 only (docs/engine.md, "Metadata and replay").
    `dtype` is what the models computed in (a replay renders in it again); `precision` says what was
    asked for and what else shapes the bits: the thread count and, on a CPU, torch's vector ISA and
    any oneDNN cap (docs/engine.md, "Seeds, determinism and resume").
    """
    public = public_spec(spec)
    text = {
        "text_prompts": public.text_prompts,
        "image_prompts": public.image_prompts,
        "noise_prompts": public.noise_prompts,
        "iterations": public.iterations,
        "init_image": public.init_image,
        "save_every": public.save_every,
        "cut_method": public.cut_method,
        "seed": public.seed,
    }
    files: dict[str, Any] = {"init_image": None, "image_prompts": []}
    if spec.init_image:
        files["init_image"] = _file_entry(spec.init_image)
    for path in _image_paths(spec):
        files["image_prompts"].append(_file_entry(path))
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
        "prompts": {"text": public.text_prompts, "image": public.image_prompts, "noise": public.noise_prompts},
        "iterations": spec.iterations,
        "save_every": spec.save_every,
        "files": files,
        "spec": json.loads(spec_to_json(public)),
    }
    return text, params


def _file_entry(path: str) -> dict[str, str]:
    return {"name": file_name(path), "sha256": images.sha256_file(path)}


def scrub_inherited(text: dict[str, Any], params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Text keys and `engine_params` copied from another file (an upscale's source), with file paths
    cut to names: files written before schema 2 named their inputs by path."""
    text = dict(text)
    if text.get("init_image"):
        text["init_image"] = file_name(str(text["init_image"]))
    if text.get("image_prompts"):
        text["image_prompts"] = _names_in_prompt(str(text["image_prompts"]))
    params = json.loads(json.dumps(params))
    spec, files, prompts = params.get("spec") or {}, params.get("files") or {}, params.get("prompts") or {}
    for key in ("video", "init_image"):
        if isinstance(spec.get(key), str):
            spec[key] = file_name(spec[key])
    for holder, key in ((spec, "image_prompts"), (prompts, "image")):
        if isinstance(holder.get(key), str):
            holder[key] = _names_in_prompt(holder[key])
    for entry in [files.get("init_image"), *(files.get("image_prompts") or [])]:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            entry["name"] = file_name(entry.pop("path"))
    return text, params


def _names_in_prompt(prompt: str) -> str:
    return rename_image_parts(prompt, file_name)


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
    """The MP4 comment: the generation parameters as one compact JSON object (prompts, seed, settings)."""
    return json.dumps(params, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
