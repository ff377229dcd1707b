"""Suite-wide settings: one torch thread (steadier timings on 2-core machines), no network for models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
