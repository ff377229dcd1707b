"""Model loading: a VQGAN and a CLIP by registry name, on a device, downloaded into the cache on first use.

`build_*_architecture` give the real architectures with fixed random weights, for the benchmark
(its numbers need the real shapes, not the real weights) and for tests.
"""

from __future__ import annotations

import logging
import re
import zlib
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from engine.devices import out_of_memory_as_error
from engine.errors import ModelLoadError
from engine.jobs import TINY
from engine.models.clip_import import CLIP
from engine.models.download import fetch, fetch_first, model_cache_dir
from engine.models.registry import CLIP_MODELS, VQGAN_MODELS, VQGANKind
from engine.models.seeding import isolated_rng
from engine.models.tiny import build_tiny_clip, build_tiny_vqgan
from engine.models.vqgan import VQGAN
from engine.models.weights import load_clip_file, load_vqgan_checkpoint, read_vqgan_yaml

log = logging.getLogger(__name__)

ARCHITECTURE_WEIGHT_SEED = 20211126
ModuleT = TypeVar("ModuleT", bound=nn.Module)
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def load_vqgan(
    name: str,
    *,
    device: torch.device,
    model_dir: Path | None = None,
    yaml_url: str | None = None,
    ckpt_url: str | None = None,
    progress: bool = True,
) -> VQGAN:
    """The VQGAN called `name` (a registry key, `tiny`, or a custom name with URLs), eval and frozen, on `device`."""
    if name == TINY:
        return build_tiny_vqgan().to(device)
    yaml_urls, ckpt_urls = _vqgan_urls(name, yaml_url, ckpt_url)
    directory = model_cache_dir(model_dir)
    yaml_path = fetch_first(yaml_urls, directory / f"{name}.yaml", progress=progress)
    ckpt_path = fetch_first(ckpt_urls, directory / f"{name}.ckpt", progress=progress)
    architecture = read_vqgan_yaml(yaml_path)
    known = VQGAN_MODELS.get(name)
    if known is not None and (architecture.embed_dim, architecture.n_embed) != (known.embed_dim, known.n_embed):
        log.warning("%s: its YAML says embed_dim/n_embed %d/%d, the registry %s/%s; using the YAML", name,
                    architecture.embed_dim, architecture.n_embed, known.embed_dim, known.n_embed)  # fmt: skip
    model = load_vqgan_checkpoint(ckpt_path, architecture)
    log.info("loaded VQGAN %s (%s, %d codes)", name, architecture.kind.value, architecture.n_embed)
    return _to_device(model, device, name)


def load_clip(name: str, *, device: torch.device, model_dir: Path | None = None, progress: bool = True) -> CLIP:
    """The CLIP model called `name` (`ViT-B/32`, …, or `tiny`), fp32, eval and frozen, on `device`."""
    if name == TINY:
        return build_tiny_clip().to(device)
    spec = CLIP_MODELS.get(name)
    if spec is None or spec.url is None:
        raise ModelLoadError(f"unknown CLIP model {name!r}; known: {', '.join(CLIP_MODELS)}")
    path = fetch(spec.url, model_cache_dir(model_dir) / spec.file_name, sha256=spec.sha256, progress=progress)
    model = load_clip_file(path)
    log.info("loaded CLIP %s", name)
    return _to_device(model, device, name)


def build_vqgan_architecture(name: str) -> VQGAN:
    """The real VQGAN architecture of a registry name with fixed random weights, eval and frozen, on CPU."""
    if name == TINY:
        return build_tiny_vqgan()
    spec = VQGAN_MODELS.get(name)
    if spec is None:
        raise ModelLoadError(f"unknown VQGAN model {name!r}; known: {', '.join(VQGAN_MODELS)}")
    if spec.n_embed is None:
        raise ModelLoadError(f"the architecture of {name!r} is known only from its YAML; load the real model")
    with isolated_rng(ARCHITECTURE_WEIGHT_SEED + zlib.crc32(name.encode())):
        model = VQGAN(dict(spec.ddconfig), spec.embed_dim, spec.n_embed, gumbel=spec.kind is VQGANKind.GUMBEL)
    return model.eval().requires_grad_(False)


def build_clip_architecture(name: str) -> CLIP:
    """The real CLIP architecture of a registry name with fixed random weights, fp32, eval and frozen, on CPU."""
    if name == TINY:
        return build_tiny_clip()
    spec = CLIP_MODELS.get(name)
    if spec is None:
        raise ModelLoadError(f"unknown CLIP model {name!r}; known: {', '.join(CLIP_MODELS)}")
    with isolated_rng(ARCHITECTURE_WEIGHT_SEED + zlib.crc32(name.encode())):
        model: CLIP = CLIP(*spec.architecture)
    return model.float().eval().requires_grad_(False)


def _vqgan_urls(name: str, yaml_url: str | None, ckpt_url: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The URLs to try, in order: the registry's (with mirrors) for a known name, the caller's for a custom one."""
    known = VQGAN_MODELS.get(name)
    if known is not None and known.yaml_url and known.ckpt_url:
        if (yaml_url or known.yaml_url, ckpt_url or known.ckpt_url) != (known.yaml_url, known.ckpt_url):
            # the cache holds files by name, so other URLs under a known name would mix two models
            raise ModelLoadError(
                f"{name!r} is a registry model with its own URLs; give your model another name to use other URLs"
            )
        return (known.yaml_url, *known.yaml_mirrors), (known.ckpt_url, *known.ckpt_mirrors)
    if not (yaml_url and ckpt_url):
        raise ModelLoadError(
            f"unknown VQGAN model {name!r}: known are {', '.join(VQGAN_MODELS)}; "
            "a custom model needs both a YAML URL and a checkpoint URL"
        )
    if not _SAFE_NAME.fullmatch(name):
        raise ModelLoadError(f"a custom model name must be letters, digits, '.', '_' or '-', not {name!r}")
    return (yaml_url,), (ckpt_url,)


def _to_device(model: ModuleT, device: torch.device, name: str) -> ModuleT:
    with out_of_memory_as_error(f"{name} does not fit in the memory of {device}"):
        return model.to(device)
