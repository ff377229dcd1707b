"""Reading model files safely: taming YAMLs as data, Lightning checkpoints with torch's restricted unpickler.

No class a file names is ever imported or instantiated: the YAML is read as plain data, and the
checkpoint loads with `weights_only=True`, allowing only the Lightning names a taming checkpoint is
known to hold, each mapped to an inert stand-in (docs/engine.md, "Safe loading"). CLIP files are
TorchScript archives and are opened only after their SHA-256 matched OpenAI's (the caller's job: fetch()).
"""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

from engine.errors import ModelLoadError
from engine.models.clip_import import CLIP, clip
from engine.models.registry import VQGANKind
from engine.models.vqgan import VQGAN

log = logging.getLogger(__name__)


class LightningStandIn:
    """Built in place of a Lightning callback class that a checkpoint names; its state is never used."""


# name in a checkpoint -> what the restricted unpickler builds instead
EXPECTED_GLOBALS: Mapping[str, type] = {
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint": LightningStandIn,
    "pytorch_lightning.utilities.parsing.AttributeDict": dict,  # a dict subclass must map to dict itself
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint": LightningStandIn,
    "lightning_fabric.utilities.data.AttributeDict": dict,
}

_TARGET_KINDS = {"VQModel": VQGANKind.PLAIN, "GumbelVQ": VQGANKind.GUMBEL, "Net2NetTransformer": VQGANKind.FIRST_STAGE}
_FIRST_STAGE_PREFIX = "first_stage_model."


@dataclass(frozen=True, slots=True)
class VQGANArchitecture:
    """What a taming YAML says about the VQGAN inside its checkpoint."""

    kind: VQGANKind
    ddconfig: Mapping[str, Any]
    embed_dim: int
    n_embed: int


def read_vqgan_yaml(path: Path) -> VQGANArchitecture:
    """The VQGAN architecture a taming config describes; the classes it names are never imported."""
    try:
        config: Any = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:  # omegaconf/yaml raise many types for malformed text
        raise ModelLoadError(f"{path.name} is not a readable YAML file: {exc}") from exc
    try:
        model = config["model"]  # a str or list for a YAML of another shape: TypeError, caught below
        target = str(model["target"]).rsplit(".", 1)[-1]
        kind = _TARGET_KINDS[target]
        params = model["params"]
        if kind is VQGANKind.FIRST_STAGE:
            first_stage = params["first_stage_config"]
            target = str(first_stage["target"]).rsplit(".", 1)[-1]
            if target != "VQModel":
                raise ModelLoadError(f"{path.name}: a first stage of type {target} is not supported")
            params = first_stage["params"]
        ddconfig = {key: value for key, value in params["ddconfig"].items()}
        for key in ("z_channels", "ch", "ch_mult", "num_res_blocks", "resolution", "in_channels", "out_ch"):
            if key not in ddconfig:
                raise ModelLoadError(f"{path.name}: ddconfig lacks {key!r}")
        return VQGANArchitecture(kind, ddconfig, int(params["embed_dim"]), int(params["n_embed"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelLoadError(
            f"{path.name} does not describe a taming VQGAN (VQModel, GumbelVQ or Net2NetTransformer): {exc!r}"
        ) from exc


def read_checkpoint(path: Path, expected: Mapping[str, type] = EXPECTED_GLOBALS) -> Any:
    """A checkpoint's contents via torch's restricted unpickler; a file naming anything unexpected is refused."""
    try:
        named = set(get_unsafe_globals_in_checkpoint(path))
    except Exception as exc:  # not a zip archive, or a corrupt one
        raise ModelLoadError(f"{path.name} is not a torch checkpoint in zip format: {exc}") from exc
    unexpected = sorted(named - expected.keys())
    if unexpected:
        raise ModelLoadError(
            f"refusing {path.name}: it names {', '.join(unexpected)}, which a model checkpoint has no need of "
            "(it may try to run code); it was not loaded"
        )
    try:
        with safe_globals([(obj, name) for name, obj in expected.items()]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as exc:
        raise ModelLoadError(f"{path.name} could not be loaded safely: {_unpickler_reason(exc)}") from exc


def _unpickler_reason(exc: Exception) -> str:
    # torch's message advises weights_only=False, which must never be done with a downloaded file
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (reasons or lines or [type(exc).__name__])[0]


def vqgan_state_dict(checkpoint: Any, kind: VQGANKind) -> dict[str, torch.Tensor]:
    """The VQGAN's own weights from a checkpoint: no loss network; a transformer's first stage unprefixed."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ModelLoadError("the checkpoint holds no state dict")
    if kind is VQGANKind.FIRST_STAGE:
        n = len(_FIRST_STAGE_PREFIX)
        kept = {key[n:]: value for key, value in state.items() if key.startswith(_FIRST_STAGE_PREFIX)}
        if not kept:
            raise ModelLoadError("the checkpoint has no first_stage_model weights")
        return kept
    return {key: value for key, value in state.items() if not key.startswith("loss.")}


def load_vqgan_checkpoint(path: Path, architecture: VQGANArchitecture) -> VQGAN:
    """A VQGAN built from its YAML's architecture with the checkpoint's weights (strict), eval and frozen, on CPU."""
    state = vqgan_state_dict(read_checkpoint(path), architecture.kind)
    # Built on the meta device, then given the checkpoint's tensors: no time spent on a random init.
    with torch.device("meta"):
        model = VQGAN(
            dict(architecture.ddconfig),
            architecture.embed_dim,
            architecture.n_embed,
            gumbel=architecture.kind is VQGANKind.GUMBEL,
        )
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path.name} does not fit the architecture its YAML describes: {exc}") from exc
    return model.float().eval().requires_grad_(False)


def load_clip_file(path: Path) -> CLIP:
    """A CLIP model from an OpenAI `.pt` file whose SHA-256 the caller has checked; fp32, eval, frozen, on CPU."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning)
            # on CPU, clip.load returns fp32; elsewhere it would return fp16
            model: CLIP = clip.load(str(path), device="cpu", jit=False)[0]
    except Exception as exc:  # clip.load raises whatever torch.jit, torch.load or build_model raise
        raise ModelLoadError(f"{path.name} is not a loadable CLIP model: {exc}") from exc
    return model.float().eval().requires_grad_(False)
