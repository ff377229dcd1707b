"""Speed-ups that keep the models' maths: the same functions computed with fewer operations.

Each swap is applied once, after the weights are loaded, to models that stay frozen:

- taming's swish `x·sigmoid(x)` and CLIP's QuickGELU `x·sigmoid(1.702x)` become SiLU kernels: one
  kernel forward and one backward instead of several; QuickGELU is `silu(1.702x)/1.702`, and the two
  factors are folded into the weights of the linear layers on either side;
- on the CPU, taming's nearest-neighbour ×2 upsample and its 3×3 convolution become four 2×2
  convolutions at the low resolution, one per output phase, interleaved by `pixel_shuffle`
  (a 3×3 window over a doubled image sees at most 2×2 distinct pixels): 16 taps per 2×2 output
  block instead of 36;
- on the CPU, the VQGAN's large 3×3 convolutions (stride 1, padding 1) run forward and backward
  through NNPACK's Winograd kernels, which PyTorch ships but only picks for batches of 16 or more:
  2-3× faster than oneDNN's direct convolution alone from 128×128 pixels up, within ~2e-5 of it;
- CLIP's patch embedding (a convolution whose stride equals its kernel) becomes a reshape and a
  matrix product, whose backward pass PyTorch's CPU convolution makes several times slower;
- CLIP's last vision block computes only the class token, the one row `encode_image` reads: keys
  and values still come from every token, but the query, the attention output and the MLP are one
  row per image instead of fifty.
"""

from __future__ import annotations

from typing import Any, TypeGuard, TypeVar

import taming.modules.diffusionmodules.model as taming_model
import torch
import torch.nn.functional as F
from torch import nn

from engine.models.clip_import import QuickGELU, VisionTransformer

_QUICK_GELU_SCALE = 1.702
ModuleT = TypeVar("ModuleT", bound=nn.Module)


class FastQuickGELU(nn.Module):
    """CLIP's QuickGELU, x·sigmoid(1.702x), computed as silu(1.702x)/1.702."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x * _QUICK_GELU_SCALE) / _QUICK_GELU_SCALE


# For one axis: which of a 3-tap kernel's taps fall on each of the two low-resolution pixels
# that output phase 0 (even rows) and phase 1 (odd rows) of a doubled image see.
_PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


class SubpixelUpsample(nn.Module):
    """`conv3x3(upsample_nearest_x2(x))` (taming's Upsample with a conv) at the input's resolution."""

    phase_weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv  # kept so the state_dict keeps taming's keys; forward uses the phase kernels
        weight = conv.weight.detach()
        taps = _PHASE_TAPS.to(weight.device, weight.dtype)
        # (phase_y, phase_x, out, in, 2, 2): each phase's 2×2 kernel, summing the 3×3 taps that coincide
        phases = torch.einsum("ayk,bxl,oikl->aboiyx", taps, taps, weight)
        self.out_channels = int(weight.shape[0])
        phase_weight = phases.reshape(4 * self.out_channels, weight.shape[1], 2, 2)
        self.register_buffer("phase_weight", phase_weight, persistent=False)
        bias = conv.bias.detach().clone() if conv.bias is not None else weight.new_zeros(self.out_channels)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":  # measured on the CPU only; elsewhere keep taming's two steps
            upsampled: torch.Tensor = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
            return upsampled
        n, _, h, w = x.shape
        o = self.out_channels
        padded = F.pad(x, (1, 1, 1, 1))
        phases = [
            F.conv2d(padded[:, :, a : a + h + 1, b : b + w + 1], self.phase_weight[(2 * a + b) * o : (2 * a + b + 1) * o], self.bias)
            for a in (0, 1)
            for b in (0, 1)
        ]  # fmt: skip
        # channel c·4 + 2a + b of the stack lands on pixel (2i + a, 2j + b)
        return F.pixel_shuffle(torch.stack(phases, dim=2).view(n, 4 * o, h, w), 2)


# NNPACK's Winograd convolution only pays from this many output pixels on (measured on a 2-core AVX2 CPU)
WINOGRAD_MIN_PIXELS = 128 * 128


class _Winograd3x3(torch.autograd.Function):
    """A 3×3, stride 1, padding 1 convolution through NNPACK; the input's gradient is the same
    convolution of the output's gradient with the kernel flipped and its channels swapped."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, [1, 1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (weight,) = ctx.saved_tensors
        flipped = weight.flip(2, 3).transpose(0, 1).contiguous()
        return torch._nnpack_spatial_convolution(grad.contiguous(), flipped, None, [1, 1]), None, None


class WinogradConv2d(nn.Conv2d):
    """A frozen 3×3 `Conv2d` (stride 1, padding 1) that uses NNPACK for large float32 CPU inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and x.dim() == 4
            and x.shape[2] * x.shape[3] >= WINOGRAD_MIN_PIXELS
            and not self.weight.requires_grad
        ):
            out: torch.Tensor = _Winograd3x3.apply(x, self.weight, self.bias)
            return out
        return super().forward(x)


def _winograd_eligible(conv: nn.Module) -> TypeGuard[nn.Conv2d]:
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def _as_winograd(conv: nn.Conv2d) -> WinogradConv2d:
    """The same convolution, same Parameter objects, as a WinogradConv2d."""
    swapped = WinogradConv2d(
        conv.in_channels, conv.out_channels, 3, padding=1, bias=conv.bias is not None, device="meta"
    )
    swapped.weight = conv.weight
    swapped.bias = conv.bias
    swapped.train(conv.training)
    return swapped


class PatchEmbedding(nn.Module):
    """CLIP's `conv1` (kernel = stride = patch, no bias) as a matrix product; keeps the same `weight`."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = conv.weight  # (width, 3, p, p), shared, so state_dict keys stay `conv1.weight`
        self.patch = int(conv.kernel_size[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p, gh, gw = self.patch, h // self.patch, w // self.patch
        x = x[:, :, : gh * p, : gw * p]  # a convolution drops the remainder the same way
        rows = x.reshape(n, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(n * gh * gw, c * p * p)
        weight = self.weight.reshape(self.weight.shape[0], -1).t()
        out = rows.to(weight.dtype) @ weight  # the rows follow the weight: a bf16 tower stays bf16
        return out.view(n, gh, gw, -1).permute(0, 3, 1, 2)  # (n, width, gh, gw) like the convolution


class ClassTokenTransformer(nn.Module):
    """A CLIP vision Transformer whose last block computes only the class token (row 0); returns (1, N, D)."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        blocks = transformer.resblocks
        assert isinstance(blocks, nn.Sequential)
        self.resblocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (L, N, D)
        for block in self.resblocks[:-1]:
            x = block(x)
        last: Any = self.resblocks[-1]  # clip.model.ResidualAttentionBlock
        tokens = last.ln_1(x)
        cls = x[:1] + last.attn(tokens[:1], tokens, tokens, need_weights=False)[0]
        out: torch.Tensor = cls + last.mlp(last.ln_2(cls))
        return out


def fuse_vqgan_activations() -> None:
    """Make taming's decoder use F.silu for its swish (the same function; taming looks it up at call time)."""
    taming_model.nonlinearity = F.silu


def fuse_vqgan(vqgan: ModuleT, *, winograd: bool = True) -> ModuleT:
    """SiLU swish, sub-pixel upsampling and (with `winograd`, where NNPACK is built in) Winograd
    convolutions for a loaded VQGAN, in place; returns the model. NNPACK is fp32-only: a model that
    will compute in bf16 leaves `winograd` off."""
    fuse_vqgan_activations()
    for parent in list(vqgan.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, taming_model.Upsample) and child.with_conv:
                setattr(parent, name, SubpixelUpsample(child.conv))
    if winograd and torch._nnpack_available():  # also initialises NNPACK, which its convolution needs first
        for parent in list(vqgan.modules()):
            for name, child in list(parent.named_children()):
                if _winograd_eligible(child):
                    setattr(parent, name, _as_winograd(child))
    return vqgan


def fuse_clip_activations(clip: ModuleT) -> ModuleT:
    """Swap every QuickGELU module of a CLIP model for FastQuickGELU, in place; returns the model."""
    for parent in list(clip.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QuickGELU):
                setattr(parent, name, FastQuickGELU())
    return clip


def fold_quick_gelu_scales(clip: ModuleT) -> ModuleT:
    """Each transformer MLP `c_proj(quick_gelu(c_fc(x)))` becomes `c_proj'(silu(c_fc'(x)))`, in place.

    quick_gelu(y) = silu(1.702·y)/1.702, so c_fc's weight and bias take the factor 1.702 and c_proj's
    weight 1/1.702: two elementwise passes fewer forward and backward per block (~2 % of a step).
    """
    with torch.no_grad():
        for mlp in list(clip.modules()):
            c_fc, act, c_proj = (getattr(mlp, name, None) for name in ("c_fc", "gelu", "c_proj"))
            if (
                isinstance(c_fc, nn.Linear)
                and isinstance(c_proj, nn.Linear)
                and isinstance(act, QuickGELU | FastQuickGELU)
            ):
                c_fc.weight.mul_(_QUICK_GELU_SCALE)
                if c_fc.bias is not None:
                    c_fc.bias.mul_(_QUICK_GELU_SCALE)
                c_proj.weight.div_(_QUICK_GELU_SCALE)
                mlp.gelu = nn.SiLU()
    return clip


def fuse_clip(clip: ModuleT) -> ModuleT:
    """All of CLIP's swaps for a loaded model, in place; returns the model."""
    fold_quick_gelu_scales(clip)
    fuse_clip_activations(clip)  # any QuickGELU outside an MLP
    visual = getattr(clip, "visual", None)
    if isinstance(visual, VisionTransformer):  # the ResNet CLIPs keep their own image tower
        if isinstance(visual.conv1, nn.Conv2d):
            visual.conv1 = PatchEmbedding(visual.conv1)
        if not isinstance(visual.transformer, ClassTokenTransformer):
            visual.transformer = ClassTokenTransformer(visual.transformer)
    return clip
