"""One job's optimisation state: z, its optimizer, the prompt targets and the step (docs/engine.md, "The step").

A still image drives it for `iterations` steps; an animation or style transfer can reuse it frame
by frame (`set_z_from_image`, `set_prompts`, `step`, `image`), and `state_dict`/`load_state_dict`
carry everything a resumed job needs.

Where the models compute in bf16 (`LoadedModels.compute_dtype`), only the decoder and CLIP's image
tower run in it, under autocast; z, the optimizer's state, the quantiser, the clamp, the cutouts,
the embeddings and the loss stay fp32 (docs/engine.md, "Precision").
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from PIL import Image

from engine.jobs import JobSpec
from engine.models.cache import LoadedModels
from engine.models.casting import encode_text
from engine.models.clip_import import tokenizer
from engine.optim.cutouts import Cutouts
from engine.optim.losses import PromptTarget, init_weight_loss, normalise
from engine.optim.optimizers import make_optimizer
from engine.optim.pixels import fit_to_area, noise_pixels, to_image, to_tensor
from engine.optim.quantize import Codebook, clamp_with_grad
from engine.optim.rng import JobRandom
from engine.prompts import WeightedPrompt

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StepSettings:
    """What the optimisation needs to know about a job."""

    width: int
    height: int
    num_cuts: int = 32
    cut_power: float = 1.0
    cut_method: str = "kornia"
    optimizer: str = "Adam"
    learning_rate: float = 0.1
    adaptive_lr: bool = False
    init_weight: float = 0.0
    init_image_method: str = "original"

    @classmethod
    def for_job(cls, spec: JobSpec, width: int, height: int) -> StepSettings:
        """The settings of `spec` on its final (floored) canvas."""
        return cls(
            width=width,
            height=height,
            num_cuts=spec.num_cuts,
            cut_power=spec.cut_power,
            cut_method=spec.cut_method,
            optimizer=spec.optimizer,
            learning_rate=spec.learning_rate,
            adaptive_lr=spec.adaptive_lr,
            init_weight=spec.init_weight,
            init_image_method=spec.init_image_method,
        )


class OptimisationState:
    """z, its optimizer and targets, and one step of VQGAN+CLIP."""

    def __init__(self, models: LoadedModels, settings: StepSettings, rng: JobRandom) -> None:
        self.models, self.settings, self.rng = models, settings, rng
        self.codebook = Codebook(models.vqgan.codebook)
        self.cutouts = Cutouts(models.cut_size, settings.num_cuts, settings.cut_power, settings.cut_method)
        self.targets: list[PromptTarget] = []
        self.iteration = 0
        self.phrase = 0
        self.z = torch.empty(0)
        self.z_orig = torch.empty(0)
        self.z_target: torch.Tensor | None = None  # the alternate_img_target methods' anchor
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self.decoded: torch.Tensor | None = None  # the picture the last step decoded, (1, 3, H, W) fp32

    @property
    def latent_size(self) -> tuple[int, int]:
        s = self.models.stride
        return self.settings.width // s, self.settings.height // s

    # -- z ---------------------------------------------------------------------------------------

    def set_z(self, z: torch.Tensor) -> None:
        """Start from latent `z`: it becomes the anchor z_orig and the optimizer is rebuilt."""
        self.z = z.detach().clone().to(self.models.device).requires_grad_(True)
        self.z_orig = z.detach().clone().to(self.models.device)
        self.decoded = None
        self.optimizer = make_optimizer(self.settings.optimizer, [self.z], self.settings.learning_rate)
        self.scheduler = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer) if self.settings.adaptive_lr else None
        )

    def set_z_random(self) -> None:
        """Random codebook tokens, drawn on the CPU from the job generator."""
        w, h = self.latent_size
        tokens = torch.randint(self.codebook.size, (1, h, w), generator=self.rng.cpu)
        self.set_z(self.codebook.lookup(tokens.to(self.models.device)))

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) in [0, 1] -> the quantized latent (in fp32: the encoder and its quantiser are never cast)."""
        with torch.no_grad():
            return self.models.vqgan.encode(pixels.to(self.models.device) * 2 - 1).float()

    def set_z_from_image(self, img: Image.Image) -> None:
        """Start from a picture, LANCZOS-resized to the canvas and encoded."""
        resized = img.resize((self.settings.width, self.settings.height), Image.Resampling.LANCZOS)
        self.set_z(self.encode_pixels(to_tensor(resized, self.models.device)))

    def set_z_from_noise(self, kind: str) -> None:
        """Start from seeded `pixels` or `gradient` noise, encoded like an init image."""
        pixels = noise_pixels(kind, self.settings.width, self.settings.height, self.rng.cpu)
        self.set_z(self.encode_pixels(pixels))

    # -- prompts ---------------------------------------------------------------------------------

    def set_prompts(
        self,
        text: Sequence[WeightedPrompt] = (),
        image: Sequence[tuple[WeightedPrompt, Image.Image]] = (),
        noise: Sequence[WeightedPrompt] = (),
    ) -> None:
        """Encode one phrase's prompts as targets; image prompts use the job's cutouts (and its RNG)."""
        clip, device = self.models.clip, self.models.device
        targets = []
        with torch.no_grad():
            for part in text:
                embed = encode_text(clip, tokenizer()(part.text).to(device))
                targets.append(PromptTarget(normalise(embed), part.weight, part.stop, f"text {part.text!r}"))
            for part, picture in image:
                fitted = fit_to_area(picture, self.settings.width, self.settings.height)
                cuts = self.cutouts(to_tensor(fitted, device), self.rng.cpu, self.rng.device)
                targets.append(PromptTarget(self._embed_cuts(cuts), part.weight, part.stop, f"image {part.text!r}"))
            dim = int(clip.text_projection.shape[1])
            for part in noise:
                gen = torch.Generator().manual_seed(int(part.text))
                embed = torch.empty(1, dim).normal_(generator=gen).to(device)
                targets.append(PromptTarget(normalise(embed), part.weight, part.stop, f"noise {part.text}"))
        self.targets = targets

    # -- the step --------------------------------------------------------------------------------

    def synth(self, z: torch.Tensor) -> torch.Tensor:
        """Quantise (straight-through), decode and clamp: pixels (1, 3, H, W) in [0, 1]."""
        z_q = self.codebook.quantize(z)
        with self._autocast():
            pixels = self.models.vqgan.decode(z_q)
        return clamp_with_grad(pixels.float().add(1).div(2), 0.0, 1.0)

    def _embed_cuts(self, cuts: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            feats = self.models.clip.encode_image((cuts - self.models.mean) / self.models.std)
        return normalise(feats)

    def loss(self) -> torch.Tensor:
        """The total loss of the current z at the next iteration (a 0-d tensor with a graph)."""
        picture = self.synth(self.z)
        self.decoded = picture.detach()  # a preview shows it instead of decoding z again
        feats = self._embed_cuts(self.cutouts(picture, self.rng.cpu, self.rng.device))
        total = feats.new_zeros(())
        s = self.settings
        if s.init_weight:
            anchor = self.z_target if self.z_target is not None and "alternate" in s.init_image_method else self.z_orig
            total = total + init_weight_loss(s.init_image_method, self.z, anchor, s.init_weight, self.iteration + 1)
        for target in self.targets:
            total = total + target.loss(feats)
        return total

    def step(self) -> torch.Tensor:
        """One iteration: loss, backward, optimizer (and scheduler) step, clamp z. Returns the detached loss."""
        assert self.optimizer is not None, "set_z first"
        self.optimizer.zero_grad(set_to_none=True)
        total = self.loss()
        torch.autograd.backward(total)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step(total.detach())
        self.codebook.clamp_(self.z)
        self.iteration += 1
        return total.detach()

    def image(self) -> Image.Image:
        """The current z decoded (after the last step), as an RGB image."""
        with torch.inference_mode():
            return to_image(self.synth(self.z.detach()))

    def preview_image(self) -> Image.Image:
        """The picture the last step already decoded (z before that step's update): no decoder pass.

        One step behind `image()`; before any step, or after z was replaced, it is `image()`.
        """
        if self.decoded is None:
            return self.image()
        return to_image(self.decoded)

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        """Autocast to the models' compute dtype: a net for stray fp32 inputs (the weights are cast at load)."""
        dtype = self.models.compute_dtype
        if dtype == torch.float32:
            yield
        else:
            with torch.autocast(self.models.device.type, dtype=dtype):
                yield

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes while the job runs (tensors moved to the CPU)."""
        assert self.optimizer is not None
        return {
            "z": self.z.detach().cpu(),
            "z_orig": self.z_orig.cpu(),
            "z_target": None if self.z_target is None else self.z_target.cpu(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "iteration": self.iteration,
            "phrase": self.phrase,
            "rng": self.rng.state(),
            "compute_dtype": str(self.models.compute_dtype).removeprefix("torch."),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`'s result (targets are re-encoded by the caller beforehand)."""
        device = self.models.device
        self.set_z(state["z"].to(device))
        self.z_orig = state["z_orig"].to(device)
        self.z_target = None if state["z_target"] is None else state["z_target"].to(device)
        assert self.optimizer is not None
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.iteration = int(state["iteration"])
        self.phrase = int(state["phrase"])
        self.rng.load(state["rng"])
        saved_dtype, dtype = (
            state.get("compute_dtype", "float32"),
            str(self.models.compute_dtype).removeprefix("torch."),
        )
        if saved_dtype != dtype:  # it continues, but not to the pixels the first renderer would have made
            log.warning(
                "resuming a job started in %s in %s: its result will differ from an unbroken run", saved_dtype, dtype
            )
