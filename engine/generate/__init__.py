"""The seed package's `generate` API: `image`, `video_frames`, `style_transfer`, `restyle_video_frames`.

`from engine import generate` works as the seed's `from vqgan_clip import generate` did; each
function validates its arguments the seed's way, then renders on a process-wide renderer whose
models stay loaded (docs/engine.md, "The seed API").
"""

from __future__ import annotations

from engine.generate.renderers import renderer_for
from engine.generate.still import image
from engine.generate.video import restyle_video_frames, style_transfer, video_frames

__all__ = ["image", "renderer_for", "restyle_video_frames", "style_transfer", "video_frames"]
