"""Zoom/pan animations (JobKind.ANIMATION): each frame starts from the previous one, moved.

Frame 1 runs `iterations_first_frame` steps (None: `iterations`) from the init image, init noise or
random tokens; every later frame runs `iterations` steps. Between frames the picture is zoomed
(crop the centred W/zoom × H/zoom box, LANCZOS back to W × H: above 1 zooms in, below 1 zooms out
with black borders) and shifted by whole pixels with wrap-around, then re-encoded as z and z_orig
with a fresh optimizer. Series phrases move on AFTER each listed frame (docs/engine.md, "Animations").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageChops

from engine.errors import InvalidJob
from engine.pipelines import checks, images
from engine.pipelines.frame_loop import FrameLoop

Move = tuple[float, int, int]  # zoom, shift_x, shift_y from one frame to the next


def zoom_and_shift(img: Image.Image, zoom: float, shift_x: int, shift_y: int) -> Image.Image:
    """The seed's frame-to-frame move: a centred zoom by `zoom`, then a wrap-around shift in pixels."""
    width, height = img.size
    moved = img
    if zoom != 1.0:
        box_w, box_h = width / zoom, height / zoom
        left, top = (width - box_w) / 2, (height - box_h) / 2
        box = (round(left), round(top), round(left + box_w), round(top + box_h))
        moved = img.crop(box).resize((width, height), Image.Resampling.LANCZOS)  # outside the picture: black
    if shift_x or shift_y:
        moved = ImageChops.offset(moved, shift_x, shift_y)
    return moved


class AnimationLoop(FrameLoop):
    """A zoom/pan animation of `spec.frames` frames; `moves[k-2]` (optional) is the move into frame k."""

    def __init__(self, *args: Any, moves: Sequence[Move] | None = None, **kwargs: Any) -> None:
        self.moves = list(moves) if moves is not None else None
        super().__init__(*args, **kwargs)

    def move_into(self, frame: int) -> Move:
        """The zoom and shift that make frame `frame` (≥ 2) from the one before."""
        if self.moves is not None:
            return self.moves[frame - 2]
        return self.spec.zoom, self.spec.shift_x, self.spec.shift_y

    def canvas(self) -> tuple[int, int]:
        if not self.spec.init_image:
            return self.spec.width, self.spec.height
        init = images.load_rgb(self.spec.init_image, "init image")
        return images.aspect_size(self.spec.width, self.spec.height, init.width / init.height)

    def check_canvas(self) -> None:
        if self.moves is not None and len(self.moves) != self.frames - 1:
            raise InvalidJob(f"{self.frames} frames need {self.frames - 1} moves, got {len(self.moves)}")
        for frame in range(2, self.frames + 1):
            zoom, shift_x, shift_y = self.move_into(frame)
            checks.check_zoom(zoom)
            checks.check_shift("shift_x", shift_x, self.width)
            checks.check_shift("shift_y", shift_y, self.height)

    def frame_text(self, frame: int) -> dict[str, Any]:
        zoom, shift_x, shift_y = self.move_into(frame) if frame > 1 else (1.0, 0, 0)
        return {"zoom_scale": zoom, "shift_x": shift_x, "shift_y": shift_y}

    def setup_frame(self, frame: int) -> None:
        state, spec = self.state, self.spec
        if frame == 1:
            if spec.init_image:
                state.set_z_from_image(images.load_rgb(spec.init_image, "init image"))
            elif spec.init_noise:
                state.set_z_from_noise(spec.init_noise)
            else:
                state.set_z_random()
        self.use_phrase(frame)
        if frame > 1:
            zoom, shift_x, shift_y = self.move_into(frame)
            if zoom != 1.0 or shift_x or shift_y:  # else z and the optimizer simply carry on
                state.set_z_from_image(zoom_and_shift(self.current_image(), zoom, shift_x, shift_y))
