"""Checkpoints written the way PyTorch Lightning 1.x and 2.x write them, with Lightning not installed.

Lightning's classes are stood in for by classes defined under their real module paths, importable
from sys.modules only while torch.save runs, so a file names exactly the globals a real one names.
omegaconf, numpy, argparse, pathlib and typing are the real ones. The layouts follow Lightning's
`dump_checkpoint` (1.0's trainer/training_io.py, 1.9's and 2.x's checkpoint_connector.py).
"""

from __future__ import annotations

import argparse
import io
import pathlib
import sys
import types
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf


@dataclass(frozen=True, slots=True)
class LightningRelease:
    """Where one Lightning release keeps the classes its checkpoints name, and how it keys callbacks."""

    version: str
    package: str  # `pytorch_lightning`, or `lightning.pytorch` in the unified package
    attribute_dict_module: str
    callbacks_keyed_by_class: bool  # 1.0-1.4: the class itself; later: a string state key
    has_loops: bool


LIGHTNING_1_0 = LightningRelease("1.0.8", "pytorch_lightning", "pytorch_lightning.utilities.parsing", True, False)
LIGHTNING_1_9 = LightningRelease("1.9.5", "pytorch_lightning", "lightning_fabric.utilities.data", False, True)
LIGHTNING_2 = LightningRelease("2.4.0", "lightning.pytorch", "lightning.fabric.utilities.data", False, True)
HPARAMS_KINDS = ("attribute_dict", "dictconfig", "namespace")


class _AttributeDict(dict[str, Any]):
    """Lightning's AttributeDict: a dict whose keys are also attributes."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(key) from exc


class _Callback:
    """A Lightning callback stand-in: only its class's name and module matter to a checkpoint."""


@contextmanager
def classes_under(paths: Mapping[str, type]) -> Iterator[dict[str, type]]:
    """Subclasses of the given classes, importable under the given dotted paths while the block runs.

    Yields path -> class. Only missing modules are made (a real `pathlib` stays); all are removed afterwards.
    """
    saved = dict(sys.modules)
    made: dict[str, type] = {}
    try:
        for path, base in paths.items():
            module_name, _, name = path.rpartition(".")
            parts = module_name.split(".")
            for i in range(1, len(parts) + 1):
                sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
            cls = type(name, (base,), {"__module__": module_name, "__qualname__": name})
            setattr(sys.modules[module_name], name, cls)
            made[path] = cls
        yield made
    finally:
        for name in set(sys.modules) - set(saved):
            del sys.modules[name]


def _state_dict(weights: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    # a module's state_dict(): an OrderedDict with a `_metadata` attribute (which pickles as BUILD state)
    state: OrderedDict[str, torch.Tensor] = OrderedDict((key, value.clone()) for key, value in weights.items())
    state._metadata = OrderedDict({"": {"version": 1}})  # type: ignore[attr-defined]
    return state


def _optimizer_states() -> list[dict[str, Any]]:
    # taming trains with two Adams (autoencoder, discriminator); a real step fills their state
    states = []
    for seed in (0, 1):
        generator = torch.Generator().manual_seed(seed)
        params = [torch.nn.Parameter(torch.randn(4, 4, generator=generator)), torch.nn.Parameter(torch.zeros(4))]
        optimizer = torch.optim.Adam(params, lr=4.5e-6, betas=(0.5, 0.9))
        torch.stack([p.square().sum() for p in params]).sum().backward()
        optimizer.step()
        states.append(optimizer.state_dict())
    return states


def _hyper_parameters(kind: str, attribute_dict: type) -> Any:
    params: dict[str, Any] = {
        "embed_dim": 32,
        "n_embed": 64,
        "ddconfig": {"ch": 32, "ch_mult": [1, 2, 2], "attn_resolutions": []},
        "lossconfig": {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator", "params": {}},
        "ckpt_path": None,
        "image_key": "image",
    }
    if kind == "attribute_dict":
        return attribute_dict(params)
    if kind == "dictconfig":
        return OmegaConf.create(params)  # its nodes pickle as omegaconf.base/nodes/listconfig objects, typing.Any…
    if kind == "namespace":
        return argparse.Namespace(**params, logdir=pathlib.PosixPath("/data/logs/2020-11-09T13-31-51"))
    raise ValueError(kind)


def _custom_callback_state() -> dict[str, Any]:
    """What a user's own callback might return from state_dict(): numpy values, paths, sets, bytes…"""
    return {
        "best": np.float64(0.125),
        "history": np.linspace(0.5, 0.1, 5),
        "steps": np.int64(1200),
        "dtype": np.dtype("float32"),
        "seen_splits": {"train", "validation"},
        "frozen": frozenset({1, 2}),
        "window": slice(0, 10, 2),
        "logdir": pathlib.PosixPath("/data/logs/images"),
        "windows_logdir": _WindowsPath("C:\\", "logs", "images"),
        "tag": b"\x00run-7",
        "counts": defaultdict(int, {"images": 3}),
        "order": OrderedDict(a=1),
        "complex": 1 + 2j,
    }


class _WindowsPath:
    """Pickles as pathlib.WindowsPath (which cannot be made on this OS) does: the class and its parts."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __reduce__(self) -> tuple[Any, tuple[str, ...]]:
        return pathlib.WindowsPath, self.parts


def lightning_checkpoint(
    weights: Mapping[str, torch.Tensor],
    release: LightningRelease = LIGHTNING_1_0,
    *,
    hparams: str = "attribute_dict",
    numpy_score: bool = False,
    legacy_format: bool = False,
) -> bytes:
    """`weights` in a checkpoint laid out as `release` writes one, with the callbacks and hparams it would name.

    `numpy_score`: the callbacks' best scores are numpy float64 (as a monitor logged from numpy gives)
    instead of tensors. `legacy_format`: torch's pre-1.6 pickle stream instead of its zip archive.
    """
    package = release.package
    with classes_under({
        f"{package}.callbacks.model_checkpoint.ModelCheckpoint": _Callback,
        f"{package}.callbacks.early_stopping.EarlyStopping": _Callback,
        f"{package}.callbacks.lr_monitor.LearningRateMonitor": _Callback,
        f"{release.attribute_dict_module}.AttributeDict": _AttributeDict,
    }) as made:  # fmt: skip
        model_checkpoint = made[f"{package}.callbacks.model_checkpoint.ModelCheckpoint"]
        early_stopping = made[f"{package}.callbacks.early_stopping.EarlyStopping"]
        attribute_dict = made[f"{release.attribute_dict_module}.AttributeDict"]
        score: Any = np.float64(0.25) if numpy_score else torch.tensor(0.25)
        checkpoint_state = {
            "monitor": "val/rec_loss",
            "best_model_score": score,
            "best_model_path": "/data/logs/checkpoints/epoch=3.ckpt",
            "current_score": score,
            "dirpath": "/data/logs/checkpoints",
        }
        early_stopping_state = {"wait_count": 0, "stopped_epoch": 0, "best_score": score, "patience": 3}
        callbacks: dict[Any, Any]
        if release.callbacks_keyed_by_class:
            callbacks = {model_checkpoint: checkpoint_state, early_stopping: early_stopping_state}
        else:
            checkpoint_state |= {
                "best_k_models": {"/data/logs/checkpoints/epoch=3.ckpt": score},
                "kth_best_model_path": "/data/logs/checkpoints/epoch=3.ckpt",
                "kth_value": torch.tensor(float("inf")),
                "last_model_path": "/data/logs/checkpoints/last.ckpt",
            }
            callbacks = {
                "ModelCheckpoint{'monitor': 'val/rec_loss', 'mode': 'min', 'every_n_train_steps': 0, "
                "'every_n_epochs': 1, 'train_time_interval': None}": checkpoint_state,
                "EarlyStopping{'monitor': 'val/rec_loss', 'mode': 'min'}": early_stopping_state,
                "ImageLogger": _custom_callback_state(),  # a user's own callback
            }
        hyper_parameters = _hyper_parameters(hparams, attribute_dict)
        checkpoint: dict[str, Any] = {
            "epoch": 3,
            "global_step": 1200,
            "pytorch-lightning_version": release.version,
            "state_dict": _state_dict(weights),
            "callbacks": callbacks,
            "optimizer_states": _optimizer_states(),
            "lr_schedulers": [{"step_size": 10, "gamma": 0.5, "base_lrs": [4.5e-6], "last_epoch": 3, "_step_count": 4}],
            "hparams_name": "kwargs",
            "hyper_parameters": hyper_parameters,
        }
        if hparams == "dictconfig":
            checkpoint["hparams_type"] = type(hyper_parameters)  # the class itself: omegaconf.dictconfig.DictConfig
        if release.has_loops:
            progress = {"total": {"ready": 1200, "completed": 1200}, "current": {"ready": 300, "completed": 300}}
            checkpoint["loops"] = {
                "fit_loop": {
                    "state_dict": {},
                    "epoch_loop.state_dict": {"_batches_that_stepped": 1200},
                    "epoch_loop.batch_progress": {**progress, "is_last_batch": False},
                    "epoch_progress": progress,
                },
                "validate_loop": {"state_dict": {}, "batch_progress": progress},
                "test_loop": {"state_dict": {}, "batch_progress": progress},
                "predict_loop": {"state_dict": {}, "batch_progress": progress},
            }
            # the precision plugin's state, under its class's name (16-bit mixed precision)
            checkpoint["MixedPrecision"] = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                            "growth_interval": 2000, "_growth_tracker": 12}  # fmt: skip
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer, _use_new_zipfile_serialization=not legacy_format)
    return buffer.getvalue()
