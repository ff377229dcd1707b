"""The models a renderer keeps loaded between jobs, prepared once for the step, and the pair a job gets.

`ModelCache` loads (or, for the benchmark, builds with random weights) each VQGAN and CLIP the first
time a job names it, applies the speed-ups, the renderer's precision and the memory layout once, and
keeps it: one cache per renderer, so models stay resident per (model, precision). `LoadedModels` is
what one job's optimisation reads from the pair. `UpscalerCache` does the same for Real-ESRGAN.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from engine.jobs import JobSpec
from engine.models import esrgan, loading, speedups
from engine.models.casting import cast_frozen
from engine.models.clip_import import CLIP
from engine.models.vqgan import VQGAN
from engine.precision import FP32, Precision

ModuleT = TypeVar("ModuleT", bound=nn.Module)

log = logging.getLogger(__name__)

# CLIP's input normalisation (OpenAI's), applied to every cutout after the augments
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

VQGANKey = tuple[str, str | None, str | None]  # name, custom YAML URL, custom checkpoint URL


@dataclasses.dataclass(slots=True)
class LoadedModels:
    """A VQGAN and a CLIP on one device, with what the step needs from them precomputed."""

    vqgan: VQGAN
    clip: CLIP
    device: torch.device
    cut_size: int
    stride: int
    mean: torch.Tensor
    std: torch.Tensor
    compute_dtype: torch.dtype = torch.float32  # what the decoder and the image tower compute in

    @classmethod
    def build(
        cls, vqgan: VQGAN, clip: CLIP, device: torch.device, compute_dtype: torch.dtype = torch.float32
    ) -> LoadedModels:
        """Wrap two loaded (eval, frozen) models."""
        return cls(
            vqgan=vqgan,
            clip=clip,
            device=device,
            compute_dtype=compute_dtype,
            cut_size=int(clip.visual.input_resolution),
            stride=int(vqgan.stride),
            mean=torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1),
            std=torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1),
        )


class ModelCache:
    """VQGANs and CLIPs on one device, loaded on first use and kept.

    `precision` is what the frozen parts compute in: in bf16, the VQGAN decoder and CLIP's image
    tower are cast once here (the encoder, the codebook and the text tower stay fp32; they run once
    per job or frame). `random_weights` builds the real architectures with fixed random weights
    instead of loading files (the benchmark: the same shapes and the same preparation, nothing to
    download).
    """

    def __init__(
        self,
        device: torch.device,
        *,
        model_dir: Path | None = None,
        precision: Precision = FP32,
        channels_last: bool = False,
        download_progress: bool = False,
        random_weights: bool = False,
    ) -> None:
        self.device = device
        self.model_dir = model_dir
        self.precision = precision
        self.channels_last = channels_last
        self.download_progress = download_progress
        self.random_weights = random_weights
        self._vqgans: dict[VQGANKey, VQGAN] = {}
        self._clips: dict[str, CLIP] = {}

    def for_job(self, spec: JobSpec) -> LoadedModels:
        """The spec's VQGAN and CLIP, loaded and prepared on first use."""
        key = (spec.vqgan_model, spec.vqgan_yaml_url, spec.vqgan_ckpt_url)
        if key not in self._vqgans:
            log.info("loading VQGAN %s on %s", spec.vqgan_model, self.device)
            self._vqgans[key] = self._prepare_vqgan(self._load_vqgan(spec))
        if spec.clip_model not in self._clips:
            log.info("loading CLIP %s on %s", spec.clip_model, self.device)
            self._clips[spec.clip_model] = self._prepare_clip(self._load_clip(spec.clip_model))
        vqgan, clip = self._vqgans[key], self._clips[spec.clip_model]
        return LoadedModels.build(vqgan, clip, self.device, self.precision.dtype)

    def _prepare_vqgan(self, vqgan: VQGAN) -> VQGAN:
        dtype = self.precision.dtype
        speedups.fuse_vqgan(vqgan, winograd=dtype == torch.float32)  # NNPACK computes fp32 only
        if dtype != torch.float32:
            cast_frozen(vqgan.post_quant_conv, dtype)
            cast_frozen(vqgan.decoder, dtype)
        return self._layout(vqgan)

    def _prepare_clip(self, clip: CLIP) -> CLIP:
        speedups.fuse_clip(clip)
        if self.precision.dtype != torch.float32:
            cast_frozen(clip.visual, self.precision.dtype)
        return self._layout(clip)

    def _load_vqgan(self, spec: JobSpec) -> VQGAN:
        if self.random_weights:
            return loading.build_vqgan_architecture(spec.vqgan_model).to(self.device)
        return loading.load_vqgan(
            spec.vqgan_model,
            device=self.device,
            model_dir=self.model_dir,
            yaml_url=spec.vqgan_yaml_url,
            ckpt_url=spec.vqgan_ckpt_url,
            progress=self.download_progress,
        )

    def _load_clip(self, name: str) -> CLIP:
        if self.random_weights:
            return loading.build_clip_architecture(name).to(self.device)
        return loading.load_clip(name, device=self.device, model_dir=self.model_dir, progress=self.download_progress)

    def _layout(self, model: ModuleT) -> ModuleT:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


class UpscalerCache:
    """Real-ESRGAN upscalers on one device, loaded on first use and kept, like the VQGAN and CLIP models."""

    def __init__(self, device: torch.device, *, model_dir: Path | None = None, download_progress: bool = False) -> None:
        self.device = device
        self.model_dir = model_dir
        self.download_progress = download_progress
        self._loaded: dict[str, esrgan.Upscaler] = {}

    def get(self, name: str) -> esrgan.Upscaler:
        """The upscaler `name` (a registry name, a weight file, or tiny); ModelLoadError when it cannot load."""
        if name not in self._loaded:
            log.info("loading upscaler %s on %s", name, self.device)
            self._loaded[name] = esrgan.load_upscaler(
                name,
                device=self.device,
                half=self.device.type == "cuda",  # Real-ESRGAN's own default on a GPU
                model_dir=self.model_dir,
                progress=self.download_progress,
            )
        return self._loaded[name]
