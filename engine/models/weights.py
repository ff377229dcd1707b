"""Reading model files safely: taming YAMLs as data, torch checkpoints with their non-weight parts made inert.

No class a file names is ever imported or instantiated: the YAML is read as plain data, and a
checkpoint loads through `engine.models.inert_pickle`, which rebuilds tensors, calls a listed few
harmless constructors, records Lightning's, omegaconf's, numpy's and the like's objects as inert
data, and refuses every other name (docs/engine.md, "Safe loading"). CLIP files are TorchScript
archives and are opened only after their SHA-256 matched OpenAI's (the caller's job: fetch()).
"""

from __future__ import annotations

import logging
import tarfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from engine.errors import ModelLoadError
from engine.models import inert_pickle
from engine.models.clip_import import CLIP, clip
from engine.models.registry import VQGANKind
from engine.models.vqgan import VQGAN

log = logging.getLogger(__name__)

_TARGET_KINDS = {"VQModel": VQGANKind.PLAIN, "GumbelVQ": VQGANKind.GUMBEL, "Net2NetTransformer": VQGANKind.FIRST_STAGE}
_FIRST_STAGE_PREFIX = "first_stage_model."
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"  # torch's older format is a series of pickles (protocol 2 and up)


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


def read_checkpoint(path: Path) -> Any:
    """A torch checkpoint's contents: its tensors, and every other part as inert data; nothing it names is run.

    Both of torch's formats load: zip (torch 1.6 and later) and the older pickle stream. A file that
    names anything else than weights and data is refused (ModelLoadError) before any of it is called.
    """
    is_zip = _checkpoint_format(path)
    try:
        return torch.load(path, map_location="cpu", pickle_module=inert_pickle, weights_only=False, mmap=is_zip)
    except inert_pickle.Refused as exc:
        raise ModelLoadError(
            f"refusing {path.name}: {exc.what}, which a model checkpoint has no need of (it may try to run code); "
            "nothing in it was run"
        ) from None
    except Exception as exc:  # a corrupt pickle or archive raises many types; none of them ran anything
        raise ModelLoadError(f"{path.name} is not a readable torch checkpoint: {_first_line(exc)}") from None


def _checkpoint_format(path: Path) -> bool:
    """True for torch's zip format, False for its legacy pickle stream; ModelLoadError for anything else."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if head == _ZIP_MAGIC:
        try:
            records = torch._C.PyTorchFileReader(str(path)).get_all_records()
        except RuntimeError as exc:
            raise ModelLoadError(f"{path.name} is not a torch checkpoint: {_first_line(exc)}") from None
        if "constants.pkl" in records:  # torch.load would hand it to torch.jit.load
            raise ModelLoadError(f"refusing {path.name}: it is a TorchScript archive (a program), not a checkpoint")
        return True
    if tarfile.is_tarfile(path):  # checked before the pickle stream: torch.load tries tar first
        raise ModelLoadError(
            f"{path.name} is in torch's tar format (before torch 0.4), which is not read; convert it once, where "
            "you trust the file: python -c \"import torch; torch.save(torch.load('OLD', weights_only=False), 'NEW.ckpt')\""
        )
    if head[:1] != _PICKLE_PROTO:
        raise ModelLoadError(f"{path.name} is not a torch checkpoint (neither torch's zip format nor its older one)")
    return False


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def vqgan_state_dict(checkpoint: Any, kind: VQGANKind) -> dict[str, torch.Tensor]:
    """The VQGAN's own weights from a checkpoint: no loss network; a transformer's first stage unprefixed."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ModelLoadError("the checkpoint holds no state dict")
    if kind is VQGANKind.FIRST_STAGE:
        n = len(_FIRST_STAGE_PREFIX)
        kept = {key[n:]: value for key, value in state.items() if str(key).startswith(_FIRST_STAGE_PREFIX)}
        if not kept:
            raise ModelLoadError("the checkpoint has no first_stage_model weights")
    else:
        kept = {key: value for key, value in state.items() if not str(key).startswith("loss.")}
    not_tensors = sorted(str(key) for key, value in kept.items() if not isinstance(value, torch.Tensor))
    if not_tensors:
        raise ModelLoadError(
            f"the checkpoint's state dict holds other things than tensors: {', '.join(not_tensors[:5])}"
        )
    return kept


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
