"""Loaded at start by Python processes the tests start while VQBOT_TEST_RENDER_SPEED is set (tests.support.speed)."""

from tests.support import speed

speed.install()
