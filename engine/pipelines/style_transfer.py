"""Video style transfer (JobKind.STYLE_TRANSFER): each output frame follows its source frame.

Frame 1 starts from the first source frame (method `original`, anchored to it with weight
`source_image_weight`) and runs `iterations_first_frame` steps. Every later frame starts from the
previous OUTPUT z, with the optimizer's state kept across frames as in the seed, and is pulled
toward its own source frame: `alternate_img_target` (or the spec's `alternate_*` method) with
z_target = encode(source frame). With `source_prompt_weight` ≠ 0 the source frame is also an image
prompt. Series phrases move on BEFORE each listed frame. One output frame per source frame
(docs/engine.md, "Style transfer").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from engine.jobs import JobSpec
from engine.optim.pixels import to_tensor
from engine.optim.state import StepSettings
from engine.pipelines import images
from engine.pipelines.context import RenderContext
from engine.pipelines.frame_loop import FrameLoop
from engine.prompts import ParsedPrompts, WeightedPrompt


def frame_method(spec: JobSpec, frame: int) -> str:
    """The init-weight method of `frame`: `original` for the first, an `alternate_*` one after (the seed's rule)."""
    if frame == 1:
        return "original"
    return spec.init_image_method if spec.init_image_method.startswith("alternate") else "alternate_img_target"


class StyleTransferLoop(FrameLoop):
    """Restyles `sources` (frame image paths, in order) into as many output frames."""

    def __init__(
        self,
        ctx: RenderContext,
        spec: JobSpec,
        parsed: ParsedPrompts,
        frames_dir: Path,
        sources: Sequence[str | Path],
        **kwargs: Any,
    ) -> None:
        self.sources = [Path(p) for p in sources]
        super().__init__(ctx, spec, parsed, frames_dir, len(self.sources), **kwargs)

    def adjust_settings(self, settings: StepSettings) -> StepSettings:
        return dataclasses.replace(settings, init_weight=self.spec.source_image_weight)

    def canvas(self) -> tuple[int, int]:
        first = images.load_rgb(self.sources[0], "source frame")
        return images.aspect_size(self.spec.width, self.spec.height, first.width / first.height)

    def _source(self, frame: int) -> Image.Image:
        picture = images.load_rgb(self.sources[frame - 1], "source frame")
        return picture.resize((self.width, self.height), Image.Resampling.LANCZOS)

    def restore_settings(self, frame: int) -> None:
        self.state.settings = dataclasses.replace(self.settings, init_image_method=frame_method(self.spec, frame))

    def setup_frame(self, frame: int) -> None:
        state, spec = self.state, self.spec
        self.restore_settings(frame)
        source = self._source(frame)
        if frame == 1:
            state.set_z_from_image(source)  # z and the `original` anchor z_orig: the first source frame
        else:
            state.z_target = state.encode_pixels(to_tensor(source, self.models.device))
        self.use_phrase(frame)
        pictures = []
        if spec.source_prompt_weight:
            part = WeightedPrompt(text=self.sources[frame - 1].name, weight=spec.source_prompt_weight)
            pictures.append((part, source))
        self.extra_targets(pictures)
