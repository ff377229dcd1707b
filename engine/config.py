"""`VQGAN_CLIP_Config`: the seed package's configuration object, with its field names and code defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from engine.jobs import DEFAULT_CLIP, DEFAULT_VQGAN, JobKind, JobSpec

# The choices a job may name; torch-free here, so the CLI and the checks need no model code to know them.
CUT_METHODS = ("original", "kornia", "sg3")
INIT_IMAGE_METHODS = ("original", "decay", "alternate_img_target", "alternate_img_target_decay")
INIT_NOISE = ("pixels", "gradient")
OPTIMIZERS = ("Adam", "AdamW", "Adagrad", "Adamax", "RMSprop", "RAdam", "DiffGrad")
# auto: bf16 where the device computes it natively and faster, else fp32 (engine.precision)
PRECISIONS = ("auto", "fp32", "bf16")


@dataclasses.dataclass(slots=True)
class VQGAN_CLIP_Config:  # the seed's class name, so seed scripts keep working
    """Settings of a VQGAN+CLIP run, with the seed's code defaults; `generate.*` copies it and never writes into it."""

    output_image_size: list[int] = dataclasses.field(default_factory=lambda: [256, 256])
    init_image: str | None = None
    init_noise: str | None = None
    init_weight: float = 0.0
    init_image_method: str = "original"
    seed: int | None = None
    clip_model: str = DEFAULT_CLIP
    vqgan_model_name: str = DEFAULT_VQGAN
    vqgan_model_yaml_url: str | None = None  # None: from the registry
    vqgan_model_ckpt_url: str | None = None
    learning_rate: float = 0.1
    cut_method: str = "kornia"
    num_cuts: int = 32
    cut_power: float = 1.0
    optimizer: str = "Adam"
    adaptiveLR: bool = False  # the seed's field name
    cudnn_determinism: bool = False
    cuda_device: str = "cuda:0"
    model_dir: str | Path | None = None  # None: ENGINE_MODEL_DIR or the user cache
    precision: str = "auto"  # auto, fp32 or bf16: what the frozen models compute in (engine.precision)

    def copy(self) -> VQGAN_CLIP_Config:
        """A deep-enough copy: the size list is not shared."""
        return dataclasses.replace(self, output_image_size=list(self.output_image_size))


def precision_from_dtype_name(dtype_name: object) -> str | None:
    """The precision of a result's recorded `dtype` (`float32` → fp32, `bfloat16` → bf16); None if unknown."""
    return {"float32": "fp32", "bfloat16": "bf16"}.get(str(dtype_name))


def canonical_choice(value: object, choices: tuple[str, ...], what: str) -> str:
    """`value` spelled as in `choices` (case-insensitive); ValueError naming the choices otherwise."""
    for choice in choices:
        if isinstance(value, str) and value.lower() == choice.lower():
            return choice
    raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def check_config(config: VQGAN_CLIP_Config) -> None:
    """Refuse values the seed would silently replace (unknown cut method, optimizer, init method)."""
    canonical_choice(config.cut_method, CUT_METHODS, "cut_method")
    canonical_choice(config.optimizer, OPTIMIZERS, "optimizer")
    canonical_choice(config.init_image_method, INIT_IMAGE_METHODS, "init_image_method")
    canonical_choice(config.precision, PRECISIONS, "precision")
    if config.init_noise is not None:
        canonical_choice(config.init_noise, INIT_NOISE, "init_noise")
    size = config.output_image_size
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ValueError("output_image_size must be [width, height] in pixels")


def config_to_spec(
    config: VQGAN_CLIP_Config,
    *,
    text_prompts: str = "",
    image_prompts: str = "",
    noise_prompts: str = "",
    iterations: int = 100,
    save_every: int | None = None,
) -> JobSpec:
    """The job spec a still image with this config and these prompts renders from."""
    check_config(config)
    return JobSpec(
        kind=JobKind.IMAGE,
        text_prompts=text_prompts,
        image_prompts=image_prompts,
        noise_prompts=noise_prompts,
        width=int(config.output_image_size[0]),
        height=int(config.output_image_size[1]),
        iterations=iterations,
        seed=config.seed,
        vqgan_model=config.vqgan_model_name,
        vqgan_yaml_url=config.vqgan_model_yaml_url,
        vqgan_ckpt_url=config.vqgan_model_ckpt_url,
        clip_model=config.clip_model,
        num_cuts=config.num_cuts,
        cut_power=config.cut_power,
        cut_method=canonical_choice(config.cut_method, CUT_METHODS, "cut_method"),
        optimizer=canonical_choice(config.optimizer, OPTIMIZERS, "optimizer"),
        learning_rate=config.learning_rate,
        adaptive_lr=config.adaptiveLR,
        init_image=None if config.init_image is None else str(config.init_image),
        init_noise=config.init_noise,
        init_weight=config.init_weight,
        init_image_method=config.init_image_method,
        save_every=save_every,
    )
