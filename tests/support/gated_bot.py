"""`python -m bot` exactly, except that each device's engine renderer waits between iterations as the
test's gate folder ($VQBOT_TEST_GATE, a tests.support.gate.FileGate) says."""

from __future__ import annotations

import os
from pathlib import Path

from bot.__main__ import engine_renderer, main
from bot.queue.api import Renderer
from bot.settings import Settings
from tests.support.gate import FileGate, GatedRenderer


def gated_renderer(device: str, settings: Settings) -> Renderer:
    return GatedRenderer(engine_renderer(device, settings), FileGate(Path(os.environ["VQBOT_TEST_GATE"])))


if __name__ == "__main__":
    main(gated_renderer)
