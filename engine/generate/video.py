"""The seed package's video API: `video_frames`, `style_transfer` and the deprecated `restyle_video_frames`.

Re-exported by `engine.generate`. Arguments keep the seed's names; frames are written as JPG files
into `generated_video_frames_path` (only earlier `frame_%012d.jpg` files of ours are removed there,
nothing else), and each call returns the seed's `config_info` string. The renderer behind them keeps
its models loaded between calls.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import VQGAN_CLIP_Config, config_to_spec
from engine.generate.renderers import renderer_for, set_cudnn_determinism
from engine.jobs import JobKind, JobSpec
from engine.prompts import normalise_prompt_argument
from engine.terminal import TerminalProgress

if TYPE_CHECKING:
    from engine.pipelines.frame_loop import FramesResult

log = logging.getLogger(__name__)


# Long only by the seed's signature, parameter for parameter, and its documentation.
def video_frames(
    num_video_frames: int,
    iterations_per_frame: int = 30,
    iterations_for_first_frame: int = 100,
    eng_config: VQGAN_CLIP_Config | None = None,
    text_prompts: str | list[str] | None = [],  # noqa: B006 - the seed's signature; never mutated
    image_prompts: str | list[str] | None = [],  # noqa: B006
    noise_prompts: str | list[str] | None = [],  # noqa: B006
    change_prompts_on_frame: Sequence[int] | None = None,
    init_image: str | Path | None = None,
    generated_video_frames_path: str | Path = "./video_frames",
    zoom_scale: float | Callable[[int], float] = 1.0,
    shift_x: int | Callable[[int], int] = 0,
    shift_y: int | Callable[[int], int] = 0,
    z_smoother: bool = False,
    z_smoother_buffer_len: int = 5,
    z_smoother_alpha: float = 0.5,
    verbose: bool = False,
    leave_progress_bar: bool = True,
) -> str:
    """Render a zoom/pan animation as frame_%012d.jpg files; returns the `config_info` string.

    Without an init image, frame 1 first runs `iterations_for_first_frame` warm-up steps, then
    `iterations_per_frame` like every other frame (the seed's counts). Each later frame starts from
    the previous one zoomed by `zoom_scale` and shifted by `shift_x`/`shift_y` pixels (wrapping round).
    Series phrases (`^`) move on after each frame listed in `change_prompts_on_frame` (1-based).
    `zoom_scale`, `shift_x` and `shift_y` may also be functions of the frame number k (2..n) giving
    the move into frame k (the seed's custom zoom example); all are checked before rendering.

    The smoother is a causal EWMA of the latents over the last `z_smoother_buffer_len` frames, with
    weights ∝ (1−α)^age: α = 1 is no smoothing, a lower α smooths more. The default α is 0.5, not
    the seed's 0.9: the seed's animation used a plain 5-frame mean (strong smoothing) and ignored α,
    and a true EWMA at 0.9 would barely smooth at all; 0.5 over 5 frames (weights 0.52, 0.26, 0.13,
    0.06, 0.03) smooths flicker without lagging a zoom by more than about one frame.
    """
    text, images, noise = _prompt_arguments(text_prompts, image_prompts, noise_prompts)
    if init_image is not None and not Path(init_image).is_file():
        raise ValueError("init_image does not exist.")
    if not isinstance(num_video_frames, int) or isinstance(num_video_frames, bool):
        raise ValueError("num_video_frames must be an int.")
    if not (text or images or noise):
        raise ValueError("No valid prompts were provided")
    config = (eng_config if eng_config is not None else VQGAN_CLIP_Config()).copy()
    if init_image is not None:
        config.init_image = str(init_image)
    moves, (zoom, dx, dy) = _frame_moves(num_video_frames, zoom_scale, shift_x, shift_y)
    if iterations_per_frame < 10 and any(move != (1.0, 0, 0) for move in moves or [(zoom, dx, dy)]):
        warnings.warn("with fewer than 10 iterations per frame, zoom and shift barely show", stacklevel=2)
    warm_up = 0 if config.init_image else iterations_for_first_frame
    spec = dataclasses.replace(
        config_to_spec(config, text_prompts=text, image_prompts=images, noise_prompts=noise),
        kind=JobKind.ANIMATION,
        frames=num_video_frames,
        iterations=iterations_per_frame,
        iterations_first_frame=warm_up + iterations_per_frame,
        change_prompts_on_frame=_frame_list(change_prompts_on_frame),
        zoom=zoom,
        shift_x=dx,
        shift_y=dy,
        smoother=z_smoother,
        smoother_buffer_len=z_smoother_buffer_len,
        smoother_alpha=z_smoother_alpha,
    )
    result = _render(spec, config, Path(generated_video_frames_path), (), None, verbose, leave_progress_bar, moves)
    per_frame = moves is not None
    return (
        f"num_video_frames: {num_video_frames}, iterations_per_frame: {iterations_per_frame}, "
        f"iterations_for_first_frame: {warm_up}, {_common_info(spec, result)}, "
        f"zoom_scale {'per frame' if per_frame else zoom}, shift_x {'per frame' if per_frame else dx}, "
        f"shift_y {'per frame' if per_frame else dy}, {_smoother_info(spec)}"
    )


# Long only by the seed's signature, parameter for parameter, and its documentation.
def style_transfer(
    video_frames: list[str] | list[Path],
    eng_config: VQGAN_CLIP_Config | None = None,
    text_prompts: str | list[str] | None = "Covered in spiders | Surreal:0.5",
    image_prompts: str | list[str] | None = [],  # noqa: B006 - the seed's signature; never mutated
    noise_prompts: str | list[str] | None = [],  # noqa: B006
    iterations_per_frame: int = 15,
    iterations_for_first_frame: int = 15,
    current_source_frame_image_weight: float = 2.0,
    change_prompts_on_frame: Sequence[int] | None = None,
    generated_video_frames_path: str | Path = "./video_frames",
    current_source_frame_prompt_weight: float = 0.0,
    z_smoother: bool = False,
    z_smoother_buffer_len: int = 3,
    z_smoother_alpha: float = 0.7,
    verbose: bool = False,
    leave_progress_bar: bool = True,
) -> str:
    """Restyle the source frames `video_frames` (paths, in order): one `<source name>.jpg` each.

    Frame 1 starts from the first source frame and runs `iterations_for_first_frame` steps (0 or
    None: `iterations_per_frame`), then `iterations_per_frame` more like every frame; each later
    frame starts from the previous output and is pulled toward its source frame with weight
    `current_source_frame_image_weight` (and, when non-zero, toward it as an image prompt with
    `current_source_frame_prompt_weight`). Phrases move on before each listed frame. The smoother
    (a causal EWMA, α = 1 none, lower smooths more) keeps the seed's 3 frames and α 0.7 (weights
    0.72, 0.22, 0.07): light deflicker that still follows the source's motion.
    """
    if not isinstance(video_frames, list | tuple) or not video_frames:
        raise ValueError("video_frames must be a list of paths to files.")
    if not all(isinstance(p, str | Path) and Path(p).is_file() for p in video_frames):
        raise ValueError("video_frames must be a list of paths to files.")
    text, images, noise = _prompt_arguments(text_prompts, image_prompts, noise_prompts)
    if not (text or images or noise):
        raise ValueError("No valid prompts were provided")
    out_dir = Path(generated_video_frames_path)
    names = [Path(p).stem + ".jpg" for p in video_frames]
    sources = {Path(p).resolve() for p in video_frames}
    if any((out_dir / name).resolve() in sources for name in names):
        raise ValueError("generated_video_frames_path would overwrite the source frames; choose another folder")
    config = (eng_config if eng_config is not None else VQGAN_CLIP_Config()).copy()
    config.init_image = None  # the source frames are the init images
    first = iterations_for_first_frame or iterations_per_frame
    spec = dataclasses.replace(
        config_to_spec(config, text_prompts=text, image_prompts=images, noise_prompts=noise),
        kind=JobKind.STYLE_TRANSFER,
        iterations=iterations_per_frame,
        iterations_first_frame=first + iterations_per_frame,
        source_image_weight=current_source_frame_image_weight,
        source_prompt_weight=current_source_frame_prompt_weight,
        change_prompts_on_frame=_frame_list(change_prompts_on_frame),
        smoother=z_smoother,
        smoother_buffer_len=z_smoother_buffer_len,
        smoother_alpha=z_smoother_alpha,
    )
    result = _render(spec, config, out_dir, [str(p) for p in video_frames], names, verbose, leave_progress_bar)
    return (
        f"iterations_per_frame: {iterations_per_frame}, iterations_for_first_frame: {first}, "
        f"{_common_info(spec, result)}, current_source_frame_image_weight {current_source_frame_image_weight:2.2f}, "
        f"current_source_frame_prompt_weight {current_source_frame_prompt_weight:2.2f}, {_smoother_info(spec)}"
    )


def restyle_video_frames(
    video_frames: list[str] | list[Path],
    eng_config: VQGAN_CLIP_Config | None = None,
    text_prompts: str | list[str] | None = "Covered in spiders | Surreal:0.5",
    image_prompts: str | list[str] | None = [],  # noqa: B006
    noise_prompts: str | list[str] | None = [],  # noqa: B006
    iterations: int = 15,
    save_every: int | None = None,
    generated_video_frames_path: str | Path = "./video_frames",
    current_source_frame_prompt_weight: float = 0.0,
    previous_generated_frame_prompt_weight: float = 0.0,
    generated_frame_init_blend: float = 0.2,
    z_smoother: bool = False,
    z_smoother_buffer_len: int = 3,
    z_smoother_alpha: float = 0.6,
    verbose: bool = False,
    leave_progress_bar: bool = True,
) -> str:
    """Deprecated: runs `style_transfer` (the blend and previous-frame prompt of the seed's restyle are gone)."""
    warnings.warn(
        "restyle_video_frames is deprecated; use style_transfer() instead (this call runs style_transfer)",
        DeprecationWarning,
        stacklevel=2,
    )
    return style_transfer(
        video_frames, eng_config, text_prompts, image_prompts, noise_prompts, iterations_per_frame=iterations,
        iterations_for_first_frame=iterations, generated_video_frames_path=generated_video_frames_path,
        current_source_frame_prompt_weight=current_source_frame_prompt_weight, z_smoother=z_smoother,
        z_smoother_buffer_len=z_smoother_buffer_len, z_smoother_alpha=z_smoother_alpha, verbose=verbose,
        leave_progress_bar=leave_progress_bar,
    )  # fmt: skip


def _prompt_arguments(text: Any, image: Any, noise: Any) -> tuple[str, str, str]:
    return (
        normalise_prompt_argument(text, "text_prompts"),
        normalise_prompt_argument(image, "image_prompts"),
        normalise_prompt_argument(noise, "noise_prompts"),
    )


def _frame_list(frames: object) -> tuple[int, ...]:
    if frames is None:
        return ()
    if isinstance(frames, int) and not isinstance(frames, bool):
        return (frames,)
    if not isinstance(frames, list | tuple) or not all(isinstance(f, int) and not isinstance(f, bool) for f in frames):
        raise ValueError("change_prompts_on_frame must be a list of frame numbers.")
    return tuple(frames)


def _frame_moves(
    frames: int, zoom: Any, shift_x: Any, shift_y: Any
) -> tuple[list[tuple[float, int, int]] | None, tuple[Any, Any, Any]]:
    """(per-frame moves, constant move): the moves into frames 2..n when any of the three is a function of the
    frame number (the constant move is then none), else None and the constant move as given (checked later)."""
    if not any(callable(v) for v in (zoom, shift_x, shift_y)):
        return None, (zoom, shift_x, shift_y)

    def at(value: Any, frame: int) -> Any:
        return value(frame) if callable(value) else value

    return [(at(zoom, k), at(shift_x, k), at(shift_y, k)) for k in range(2, frames + 1)], (1.0, 0, 0)


def _render(
    spec: JobSpec,
    config: VQGAN_CLIP_Config,
    frames_dir: Path,
    sources: Sequence[str],
    names: Sequence[str] | None,
    verbose: bool,
    leave_progress_bar: bool,
    moves: Sequence[tuple[float, int, int]] | None = None,
) -> FramesResult:
    renderer = renderer_for(config.cuda_device, config.model_dir, config.precision)
    if config.cudnn_determinism:
        set_cudnn_determinism()
    desc = "video frames" if spec.kind is JobKind.ANIMATION else "style transfer"
    with TerminalProgress(desc=desc, leave=leave_progress_bar, verbose=verbose) as bar:
        result = renderer.render_frames(
            spec, frames_dir, sources=sources, names=names, moves=moves, on_progress=bar, cancel=bar.cancel
        )
    if result.partial:
        log.warning("stopped after %d frames; they are in %s", result.frames_done, frames_dir)
    return result


def _common_info(spec: JobSpec, result: FramesResult) -> str:
    return (
        f"image_prompts: {spec.image_prompts}, noise_prompts: {spec.noise_prompts}, "
        f"init_weight_method: {spec.init_image_method}, init_weight {spec.init_weight:1.2f}, "
        f"init_image {spec.init_image}, cut_method {spec.cut_method}, seed {result.seed}, "
        f"size {result.width}x{result.height}, change_prompts_on_frame {list(spec.change_prompts_on_frame)}"
    )


def _smoother_info(spec: JobSpec) -> str:
    return (
        f"z_smoother {spec.smoother}, z_smoother_buffer_len {spec.smoother_buffer_len}, "
        f"z_smoother_alpha {spec.smoother_alpha}"
    )
