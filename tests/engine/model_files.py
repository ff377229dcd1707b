"""Small model files made the way the real ones are: taming YAMLs, Lightning checkpoints, OpenAI CLIP archives."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from clip.model import CLIP, convert_weights
from omegaconf import OmegaConf

from engine.models.tiny import TINY_DDCONFIG
from engine.models.vqgan import VQGAN
from tests.engine.lightning_files import LIGHTNING_1_0, LightningRelease, lightning_checkpoint

LOSS_TARGET = "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator"  # must never be imported


def small_vqgan(*, gumbel: bool = False, n_embed: int = 64, seed: int = 1) -> VQGAN:
    """A small random VQGAN of the real classes, different from `tiny` so a mix-up would show."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VQGAN(TINY_DDCONFIG, 32, n_embed, gumbel=gumbel)
        with torch.no_grad():
            model.codebook.normal_()
    return model.eval()


def taming_yaml(
    target: str, *, n_embed: int = 64, embed_dim: int = 32, ddconfig: Mapping[str, Any] = TINY_DDCONFIG
) -> bytes:
    """A config shaped like taming's: `model.target` and params with ddconfig and a lossconfig."""
    params: dict[str, Any] = {
        "embed_dim": embed_dim,
        "n_embed": n_embed,
        "ddconfig": dict(ddconfig),
        "lossconfig": {"target": LOSS_TARGET, "params": {"disc_start": 0, "disc_weight": 0.75}},
    }
    if target.endswith("Net2NetTransformer"):
        params = {
            "transformer_config": {"target": "taming.modules.transformer.mingpt.GPT", "params": {"n_layer": 24}},
            "first_stage_config": {"target": "taming.models.vqgan.VQModel", "params": params},
            "cond_stage_config": {"target": "taming.modules.misc.coord.CoordStage", "params": {"n_embed": 1024}},
        }
    elif target.endswith("GumbelVQ"):
        params["kl_weight"] = 1.0e-08
    config = {"model": {"base_learning_rate": 4.5e-06, "target": target, "params": params}}
    return OmegaConf.to_yaml(OmegaConf.create(config)).encode()


def vqgan_checkpoint(
    model: VQGAN,
    *,
    prefix: str = "",
    with_loss: bool = True,
    release: LightningRelease = LIGHTNING_1_0,
    **layout: Any,
) -> bytes:
    """`model`'s weights as a taming checkpoint: under `prefix`, plus loss-network (and GPT) keys to drop.

    Written as Lightning `release` writes it; `layout` goes to lightning_files.lightning_checkpoint.
    """
    state = {prefix + key: value.clone() for key, value in model.state_dict().items()}
    if with_loss:
        state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
        state["loss.logvar"] = torch.zeros(())
    if prefix:
        state["transformer.tok_emb.weight"] = torch.randn(16, 8)
        state["cond_stage_model.dummy"] = torch.zeros(2)
    return lightning_checkpoint(state, release, **layout)


class RunsCode:
    """Pickles as a call to os.system: what a malicious checkpoint hides."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


def malicious_checkpoint(model: VQGAN, marker: Path) -> bytes:
    """A VQGAN checkpoint that also holds a payload creating `marker` when unpickled."""
    checkpoint = {"state_dict": dict(model.state_dict()), "callbacks": RunsCode(f"touch '{marker}'")}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def small_clip(seed: int = 3) -> CLIP:
    """A small CLIP whose shape clip.build_model can infer (heads = width // 64), with fp16-exact weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(64, 32, 1, 64, 16, 77, 49408, 64, 1, 1)
    convert_weights(model)  # OpenAI's files hold fp16 weights; round as they did
    return model.float().eval()


def clip_archive(model: CLIP) -> bytes:
    """`model` as OpenAI ships CLIP: a TorchScript archive, made by tracing."""
    image = torch.zeros(1, 3, model.visual.input_resolution, model.visual.input_resolution)
    text = torch.zeros(1, model.context_length, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated, and warns about tracer constants
        traced = torch.jit.trace(model, (image, text))
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    return buffer.getvalue()
