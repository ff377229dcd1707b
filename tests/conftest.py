"""Suite-wide settings: no network for models; the render-speed switch (tests.support.speed) when it is set."""

from __future__ import annotations

import os

from tests.support import speed

os.environ.setdefault("HF_HUB_OFFLINE", "1")
speed.install()
