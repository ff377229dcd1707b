"""The seed package's `generate.image`: a still image from a config and prompts, with a progress bar.

The seed's argument forms, validation order and messages, then one job on the process's renderer
for the config's device (`engine.generate.renderers`), whose models stay loaded between calls.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from engine.config import VQGAN_CLIP_Config, config_to_spec
from engine.generate.renderers import renderer_for, set_cudnn_determinism
from engine.jobs import Artifact, JobSpec
from engine.pipelines.checks import check_still_spec
from engine.pipelines.images import check_output_path
from engine.prompts import normalise_prompt_argument
from engine.terminal import TerminalProgress

log = logging.getLogger(__name__)


def image(
    output_filename: str | Path = "output.png",
    eng_config: VQGAN_CLIP_Config | None = None,
    text_prompts: str | list[str] | None = [],  # noqa: B006 - the seed's signature; never mutated
    image_prompts: str | list[str] | None = [],  # noqa: B006
    noise_prompts: str | list[str] | None = [],  # noqa: B006
    init_image: str | Path | list[str] | None = None,
    init_weight: float = 0.0,
    iterations: int = 100,
    save_every: int | None = None,
    verbose: bool = False,
    leave_progress_bar: bool = True,
) -> str:
    """Render a still image to `output_filename`; returns the seed's `config_info` summary string."""
    spec, config = prepare_image(
        output_filename, eng_config, text_prompts, image_prompts, noise_prompts, init_image, init_weight,
        iterations, save_every,
    )  # fmt: skip
    artifact = render_image(spec, output_filename, config, verbose=verbose, leave_progress_bar=leave_progress_bar)
    return config_info(spec, artifact)


def prepare_image(
    output_filename: str | Path,
    eng_config: VQGAN_CLIP_Config | None,
    text_prompts: Any,
    image_prompts: Any,
    noise_prompts: Any,
    init_image: Any,
    init_weight: float,
    iterations: int,
    save_every: Any,
) -> tuple[JobSpec, VQGAN_CLIP_Config]:
    """Validate `image()`'s arguments in the seed's order and messages; the spec and a private config copy."""
    text = normalise_prompt_argument(text_prompts, "text_prompts")
    images = normalise_prompt_argument(image_prompts, "image_prompts")
    noise = normalise_prompt_argument(noise_prompts, "noise_prompts")
    config = (eng_config if eng_config is not None else VQGAN_CLIP_Config()).copy()
    if isinstance(init_image, list | tuple) and not init_image:
        init_image = None
    if init_image is not None and not Path(init_image).is_file():
        raise ValueError("init_image does not exist.")
    if save_every is not None and (not isinstance(save_every, int) or isinstance(save_every, bool)):
        raise ValueError("save_every must be an int.")
    if not (text or images or noise):
        raise ValueError("No valid prompts were provided")
    if init_image is not None:
        config.init_image = str(init_image)
        config.init_weight = init_weight
    elif init_weight:
        warnings.warn("init_weight is used only together with an init_image; it is ignored", stacklevel=3)
    if config.init_image is not None and not Path(config.init_image).is_file():
        raise ValueError("init_image does not exist.")
    spec = config_to_spec(
        config, text_prompts=text, image_prompts=images, noise_prompts=noise, iterations=iterations,
        save_every=save_every,
    )  # fmt: skip
    check_still_spec(spec)  # prompt syntax, lengths, files, numbers: all before a model loads
    check_output_path(output_filename)
    return spec, config


def render_image(
    spec: JobSpec,
    output_filename: str | Path,
    config: VQGAN_CLIP_Config,
    *,
    verbose: bool = False,
    leave_progress_bar: bool = True,
    show_progress: bool = True,
) -> Artifact:
    """Render a validated spec with a tqdm bar on stderr; Ctrl-C stops the job and keeps what it has."""
    renderer = renderer_for(config.cuda_device, config.model_dir, config.precision)
    if config.cudnn_determinism:
        set_cudnn_determinism()
    with TerminalProgress(desc="single image", leave=leave_progress_bar, show=show_progress, verbose=verbose) as bar:
        artifact = renderer.render(spec, Path(output_filename), on_progress=bar, cancel=bar.cancel)
    if artifact.partial:
        log.warning(
            "stopped after %d of %d iterations; saved %s", artifact.steps_done, spec.iterations, output_filename
        )
    return artifact


def config_info(spec: JobSpec, artifact: Artifact) -> str:
    """The seed's "key value, …" summary, with the resolved seed and size."""
    return (
        f"iterations: {spec.iterations}, image_prompts: {spec.image_prompts}, noise_prompts: {spec.noise_prompts}, "
        f"init_weight_method: {spec.init_image_method}, init_weight {spec.init_weight:1.2f}, "
        f"init_image {spec.init_image}, cut_method {spec.cut_method}, seed {artifact.seed}, "
        f"size {artifact.width}x{artifact.height}"
    )
