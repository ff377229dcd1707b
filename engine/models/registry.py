"""The model registry as data: pretrained VQGANs, CLIP models and Real-ESRGAN upscalers.

Nothing here downloads; `engine.models.loading` and `engine.models.esrgan` turn these entries into
loaded modules. Where each file comes from: docs/engine.md, "Models".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from engine.jobs import DEFAULT_UPSCALER, TINY
from engine.models.tiny import TINY_CLIP, TINY_DDCONFIG, TINY_EMBED_DIM, TINY_N_EMBED


class VQGANKind(StrEnum):
    """How a checkpoint holds the VQGAN: a plain VQModel, a GumbelVQ, or a transformer's first stage."""

    PLAIN = "plain"
    GUMBEL = "gumbel"
    FIRST_STAGE = "first_stage"  # Net2NetTransformer: keep `first_stage_model.*`, prefix stripped


@dataclass(frozen=True, slots=True)
class VQGANSpec:
    """A known VQGAN: where its YAML and checkpoint live and the architecture they describe."""

    name: str
    yaml_url: str | None
    ckpt_url: str | None
    kind: VQGANKind
    ddconfig: Mapping[str, Any]
    embed_dim: int
    n_embed: int | None  # None: not verified; the YAML says (coco)
    yaml_mirrors: tuple[str, ...] = ()  # tried in order when the main URL fails
    ckpt_mirrors: tuple[str, ...] = ()

    @property
    def stride(self) -> int:
        """The downsampling factor f (pixels per latent cell along one side)."""
        return int(2 ** (len(self.ddconfig["ch_mult"]) - 1))


@dataclass(frozen=True, slots=True)
class CLIPSpec:
    """A known CLIP model: its OpenAI URL, the SHA-256 that URL names, and its architecture."""

    name: str
    url: str | None
    sha256: str | None
    input_resolution: int
    embed_dim: int
    # clip.model.CLIP's constructor arguments, in order (vision_layers is a tuple for the ResNets)
    architecture: tuple[Any, ...]

    @property
    def file_name(self) -> str:
        """The cache file name: the model name with `/` made safe, as OpenAI's URLs spell it."""
        return self.name.replace("/", "-") + ".pt"


@dataclass(frozen=True, slots=True)
class UpscalerSpec:
    """A Real-ESRGAN weight file (RRDBNet, num_feat 64, num_grow_ch 32)."""

    file_name: str
    url: str
    scale: int
    num_blocks: int
    note: str = ""


def _frozen(d: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(d)


# The f16 ddconfig that most taming VQGANs share: 76.07 M parameters, 343 keys.
F16_DDCONFIG = _frozen({
    "double_z": False, "z_channels": 256, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
    "ch_mult": (1, 1, 2, 2, 4), "num_res_blocks": 2, "attn_resolutions": (16,), "dropout": 0.0,
})  # fmt: skip
GUMBEL_F8_DDCONFIG = _frozen({**F16_DDCONFIG, "ch_mult": (1, 1, 2, 4), "attn_resolutions": (32,)})


def _heibox(share_id: str, path: str) -> str:
    return f"https://heibox.uni-heidelberg.de/d/{share_id}/files/?p={path}&dl=1"


_MODEL_YAML, _LAST_CKPT = "%2Fconfigs%2Fmodel.yaml", "%2Fckpts%2Flast.ckpt"

VQGAN_MODELS: Mapping[str, VQGANSpec] = _frozen({
    spec.name: spec
    for spec in (
        VQGANSpec("vqgan_imagenet_f16_16384", _heibox("a7530b09fed84f80a887", _MODEL_YAML),
                  _heibox("a7530b09fed84f80a887", _LAST_CKPT), VQGANKind.PLAIN, F16_DDCONFIG, 256, 16384,
                  yaml_mirrors=("https://heibox.uni-heidelberg.de/f/274fb24ed38341bfa753/?dl=1",),
                  ckpt_mirrors=("https://heibox.uni-heidelberg.de/f/867b05fc8c4841768640/?dl=1",)),
        # The seed README's checkpoint link ends `&dl=` (no 1); the working form is used here.
        VQGANSpec("vqgan_imagenet_f16_1024", _heibox("8088892a516d4e3baf92", _MODEL_YAML),
                  _heibox("8088892a516d4e3baf92", _LAST_CKPT), VQGANKind.PLAIN, F16_DDCONFIG, 256, 1024),
        VQGANSpec("vqgan_gumbel_f8", _heibox("2e5662443a6b4307b470", _MODEL_YAML),
                  _heibox("2e5662443a6b4307b470", _LAST_CKPT), VQGANKind.GUMBEL, GUMBEL_F8_DDCONFIG, 256, 8192),
        VQGANSpec("sflckr", _heibox("73487ab6e5314cb5adba", "%2Fconfigs%2F2020-11-09T13-31-51-project.yaml"),
                  _heibox("73487ab6e5314cb5adba", "%2Fcheckpoints%2Flast.ckpt"), VQGANKind.FIRST_STAGE,
                  F16_DDCONFIG, 256, 1024),
        # A community mirror of https://k00.fr/2zz6i2ce; the first stage's n_embed is not verified.
        VQGANSpec("coco", "https://dl.nmkd.de/ai/clip/coco/coco.yaml", "https://dl.nmkd.de/ai/clip/coco/coco.ckpt",
                  VQGANKind.FIRST_STAGE, F16_DDCONFIG, 256, None),
        VQGANSpec("wikiart_16384", "http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600.yaml",
                  "http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600.ckpt", VQGANKind.PLAIN,
                  F16_DDCONFIG, 256, 16384),
        VQGANSpec("faceshq", "https://drive.google.com/uc?export=download&id=1fHwGx_hnBtC8nsq7hesJvs-Klv-P0gzT",
                  "https://app.koofr.net/content/links/a04deec9-0c59-4673-8b37-3d696fe63a5d/files/get/last.ckpt"
                  "?path=%2F2020-11-13T21-41-45_faceshq_transformer%2Fcheckpoints%2Flast.ckpt",
                  VQGANKind.FIRST_STAGE, F16_DDCONFIG, 256, 1024),
        VQGANSpec(TINY, None, None, VQGANKind.PLAIN, _frozen(TINY_DDCONFIG), TINY_EMBED_DIM, TINY_N_EMBED),
    )
})  # fmt: skip


_OPENAI = "https://openaipublic.azureedge.net/clip/models"


def _openai_clip(name: str, sha256: str, resolution: int, embed_dim: int, *architecture: Any) -> CLIPSpec:
    return CLIPSpec(
        name=name,
        url=f"{_OPENAI}/{sha256}/{name.replace('/', '-')}.pt",
        sha256=sha256,
        input_resolution=resolution,
        embed_dim=embed_dim,
        architecture=(embed_dim, resolution, *architecture),
    )


# architecture = CLIP(embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
#                     context_length, vocab_size, transformer_width, transformer_heads, transformer_layers)
CLIP_MODELS: Mapping[str, CLIPSpec] = _frozen({
    spec.name: spec
    for spec in (
        _openai_clip("ViT-B/32", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", 224, 512,
                     12, 768, 32, 77, 49408, 512, 8, 12),
        _openai_clip("ViT-B/16", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", 224, 512,
                     12, 768, 16, 77, 49408, 512, 8, 12),
        _openai_clip("ViT-L/14", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", 224, 768,
                     24, 1024, 14, 77, 49408, 768, 12, 12),
        _openai_clip("ViT-L/14@336px", "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", 336, 768,
                     24, 1024, 14, 77, 49408, 768, 12, 12),
        _openai_clip("RN50", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", 224, 1024,
                     (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12),
        _openai_clip("RN101", "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599", 224, 512,
                     (3, 4, 23, 3), 64, None, 77, 49408, 512, 8, 12),
        _openai_clip("RN50x4", "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd", 288, 640,
                     (4, 6, 10, 6), 80, None, 77, 49408, 640, 10, 12),
        _openai_clip("RN50x16", "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", 384, 768,
                     (6, 8, 18, 8), 96, None, 77, 49408, 768, 12, 12),
        _openai_clip("RN50x64", "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c", 448, 1024,
                     (3, 15, 36, 10), 128, None, 77, 49408, 1024, 16, 12),
        CLIPSpec(TINY, None, None, TINY_CLIP["image_resolution"], TINY_CLIP["embed_dim"], tuple(TINY_CLIP.values())),
    )
})  # fmt: skip


_G = "https://github.com/xinntao/Real-ESRGAN/releases/download"

REAL_ESRGAN_MODELS: Mapping[str, UpscalerSpec] = _frozen({
    spec.file_name: spec
    for spec in (
        UpscalerSpec("RealESRGAN_x4plus.pth", f"{_G}/v0.1.0/RealESRGAN_x4plus.pth", 4, 23, "default, about 64 MB"),
        UpscalerSpec("RealESRGAN_x4plus_anime_6B.pth", f"{_G}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth", 4, 6,
                     "anime; x4 (the seed's doc wrongly says 2X)"),
        UpscalerSpec("RealESRGAN_x2plus.pth", f"{_G}/v0.2.1/RealESRGAN_x2plus.pth", 2, 23, "pixel-unshuffle input"),
        UpscalerSpec("RealESRNet_x4plus.pth", f"{_G}/v0.1.1/RealESRNet_x4plus.pth", 4, 23, "MSE-trained, smoother"),
        UpscalerSpec("ESRGAN_SRx4_DF2KOST_official-ff704c30.pth",
                     f"{_G}/v0.1.1/ESRGAN_SRx4_DF2KOST_official-ff704c30.pth", 4, 23, "original ESRGAN"),
    )
})  # fmt: skip
DEFAULT_REAL_ESRGAN = DEFAULT_UPSCALER + ".pth"  # the registry key (and file name) of the default
# Face restoration, optional and not an upscaler by scale; listed for completeness.
GFPGAN_URL = "https://github.com/TencentARC/GFPGAN/releases/download/v0.2.0/GFPGANCleanv1-NoCE-C2.pth"

_MB, _MIB = 10**6, 2**20
# Approximate download sizes in bytes, where published or derived: the VQGAN checkpoints' (with their loss
# network and optimizer state), OpenAI's CLIP files as their download reports them, and the Real-ESRGAN
# weights from their parameter counts (fp32). Not listed: unknown until the file is cached.
DOWNLOAD_SIZES: Mapping[str, int] = _frozen({
    "vqgan_imagenet_f16_16384": 980 * _MB, "vqgan_imagenet_f16_1024": 958 * _MB, "vqgan_gumbel_f8": 376 * _MB,
    "sflckr": 4_263_525_412, "coco": 8400 * _MB, "wikiart_16384": 1000 * _MB,
    "ViT-B/32": 338 * _MIB, "ViT-B/16": 335 * _MIB, "ViT-L/14": 890 * _MIB, "ViT-L/14@336px": 891 * _MIB,
    "RN50": 244 * _MIB, "RN101": 278 * _MIB, "RN50x4": 402 * _MIB, "RN50x16": 630 * _MIB, "RN50x64": 1290 * _MIB,
    "RealESRGAN_x4plus.pth": 67 * _MB, "RealESRGAN_x2plus.pth": 67 * _MB, "RealESRNet_x4plus.pth": 67 * _MB,
    "ESRGAN_SRx4_DF2KOST_official-ff704c30.pth": 67 * _MB, "RealESRGAN_x4plus_anime_6B.pth": 18 * _MB,
})  # fmt: skip
