"""The `tiny` preset: a random tiny VQGAN, CLIP and ×2 upscaler of the real classes.

They run the real code path on CPU in milliseconds per iteration, for tests and demos. Weights come
from a fixed seed drawn inside `isolated_rng`, so every process builds the same models and the
caller's global RNG is left as it was (docs/engine.md, "The tiny preset").
"""

from __future__ import annotations

import re

import torch

from engine.models.clip_import import CLIP
from engine.models.seeding import isolated_rng
from engine.models.vqgan import VQGAN

TINY_WEIGHT_SEED = 20211125
TINY_DDCONFIG = {
    "double_z": False, "z_channels": 32, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
    "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
}  # fmt: skip
TINY_EMBED_DIM, TINY_N_EMBED = 32, 512
TINY_CLIP = {
    "embed_dim": 64, "image_resolution": 64, "vision_layers": 2, "vision_width": 64, "vision_patch_size": 16,
    "context_length": 77, "vocab_size": 49408, "transformer_width": 64, "transformer_heads": 2,
    "transformer_layers": 2,
}  # fmt: skip


def build_tiny_vqgan() -> VQGAN:
    """The tiny VQGAN (f = 4, 512 codes of 32 dims), identical in every process."""
    with isolated_rng(TINY_WEIGHT_SEED):
        model = VQGAN(TINY_DDCONFIG, TINY_EMBED_DIM, TINY_N_EMBED)
        # taming draws the codebook from U(±1/n_e), which makes the clamp box around z tiny and the
        # output flat; N(0, 1) codes give the random decoder something to show.
        with torch.no_grad():
            model.codebook.normal_()
    return model.eval().requires_grad_(False)


def build_tiny_clip() -> CLIP:
    """The tiny CLIP (input 64 px, 64-dim embeddings), with the real tokenizer's vocabulary."""
    with isolated_rng(TINY_WEIGHT_SEED + 1):
        model: CLIP = CLIP(**TINY_CLIP)
    return model.float().eval().requires_grad_(False)


# The tiny upscaler: Real-ESRGAN's ×2 layout (pixel-unshuffled input, RRDB body at half resolution, two ×2
# upsamplings), with 16 features and 2 blocks: ~0.6 M parameters, ~60 ms for a 64×48 input on one CPU thread.
TINY_UPSCALER = {"in_nc": 12, "out_nc": 3, "num_filters": 16, "num_blocks": 2, "scale": 4, "shuffle_factor": 2}
TINY_UPSCALER_SCALE = 2
_TINY_TEXTURE = 0.1  # how much of the random weights shows on top of the picture


def build_tiny_upscaler_state() -> dict[str, torch.Tensor]:
    """The tiny ×2 upscaler's weights, in the old-arch ESRGAN keys spandrel detects; identical in every process.

    Random weights alone turn any picture into noise; here the random weights are damped and an identity
    path is added (each colour's 2×2 cell averaged, then carried through every layer), so the output is the
    picture, enlarged, with a faint random texture: a reviewer can see the right frame came out.
    """
    from spandrel.architectures.ESRGAN import ESRGAN  # spandrel's own RRDBNet, the class it loads files into

    with isolated_rng(TINY_WEIGHT_SEED + 2):
        net = ESRGAN(**TINY_UPSCALER)
    state = {key: value.detach().clone() for key, value in net.state_dict().items()}
    blocks = int(TINY_UPSCALER["num_blocks"])
    top = sorted(
        {int(key.split(".")[1]) for key in state if re.fullmatch(r"model\.\d+\.weight", key)} - {0}
    )  # the upsampling convolutions, the HR convolution and the last one, in order
    damped = ["model.0", f"model.1.sub.{blocks}", *(f"model.{k}" for k in top)]
    with torch.no_grad():
        for name in damped:
            state[f"{name}.weight"].mul_(_TINY_TEXTURE)
            state[f"{name}.bias"].mul_(_TINY_TEXTURE)
        first = state["model.0.weight"]  # [features, 12, 3, 3]; input channel c*4+k: sub-pixel k of colour c
        for colour in range(3):
            first[colour, colour * 4 : colour * 4 + 4, 1, 1] += 0.25
        for k in top:
            weight = state[f"model.{k}.weight"]
            for colour in range(3):
                weight[colour, colour, 1, 1] += 1.0
    return state
