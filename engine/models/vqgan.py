"""The VQGAN as the engine uses it: taming's Encoder, Decoder and quantizer, without Lightning.

The attribute names are those of taming's `VQModel`, so a real checkpoint's state dict (less its
`loss.*` keys) loads into this module with `strict=True`; taming's `VQModel` itself would pull in
Lightning and the training losses, which the engine never uses.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import torch
from taming.modules.diffusionmodules.model import Decoder, Encoder
from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer2
from torch import nn


class VQGAN(nn.Module):
    """Encoder, codebook and decoder of a taming VQGAN (plain or Gumbel)."""

    def __init__(self, ddconfig: dict[str, Any], embed_dim: int, n_embed: int, *, gumbel: bool = False) -> None:
        super().__init__()
        with contextlib.redirect_stdout(io.StringIO()):  # taming's Decoder prints "Working with z of shape"
            self.encoder = Encoder(**ddconfig)
            self.decoder = Decoder(**ddconfig)
        self.gumbel = gumbel
        self.quantize: nn.Module
        if gumbel:
            self.quantize = GumbelQuantize(ddconfig["z_channels"], embed_dim, n_embed=n_embed, kl_weight=1e-8)
            self.quant_conv = nn.Conv2d(ddconfig["z_channels"], ddconfig["z_channels"], 1)
        else:
            self.quantize = VectorQuantizer2(n_embed, embed_dim, beta=0.25)
            self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
        self.stride = 2 ** (len(ddconfig["ch_mult"]) - 1)

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors, shape (n_e, e_dim)."""
        table = self.quantize.embed if self.gumbel else self.quantize.embedding
        assert isinstance(table, nn.Embedding)
        return table.weight

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1], shape (B, 3, H, W) -> quantized latent (B, e_dim, H/f, W/f)."""
        h = self.quant_conv(self.encoder(x))
        if self.gumbel:  # GumbelQuantize samples even in eval; take the argmax for a deterministic encode
            proj = self.quantize.proj
            assert isinstance(proj, nn.Module)
            logits = proj(h)
            return torch.einsum(
                "bnhw,nd->bdhw",
                nn.functional.one_hot(logits.argmax(1), logits.shape[1]).permute(0, 3, 1, 2).to(h.dtype),
                self.codebook,
            )
        z_q: torch.Tensor = self.quantize(h)[0]
        return z_q

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantized latent -> pixels roughly in [-1, 1]."""
        pixels: torch.Tensor = self.decoder(self.post_quant_conv(z_q))
        return pixels
