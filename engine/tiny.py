"""The `tiny` preset: a random tiny VQGAN and a random tiny CLIP of the real classes (engine.md §12).

They run the real code path on CPU in milliseconds per iteration, for tests and demos. Weights come
from a fixed seed inside `torch.random.fork_rng`, so every process builds the same models and the
caller's global RNG is left as it was.
"""

from __future__ import annotations

import threading

import torch
from clip.model import CLIP

from engine.vqgan import VQGAN

TINY = "tiny"
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

_seed_lock = threading.Lock()  # fork_rng swaps the process-wide RNG state; serialise the swap


def build_tiny_vqgan() -> VQGAN:
    """The tiny VQGAN (f = 4, 512 codes of 32 dims), identical in every process."""
    with _seed_lock, torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_WEIGHT_SEED)
        model = VQGAN(TINY_DDCONFIG, TINY_EMBED_DIM, TINY_N_EMBED)
        # taming draws the codebook from U(±1/n_e), which makes the clamp box around z tiny and the
        # output flat; N(0, 1) codes give the random decoder something to show.
        with torch.no_grad():
            model.codebook.normal_()
    return model.eval().requires_grad_(False)


def build_tiny_clip() -> CLIP:
    """The tiny CLIP (input 64 px, 64-dim embeddings), with the real tokenizer's vocabulary."""
    with _seed_lock, torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_WEIGHT_SEED + 1)
        model = CLIP(**TINY_CLIP)
    return model.float().eval().requires_grad_(False)
