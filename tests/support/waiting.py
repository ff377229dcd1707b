"""`eventually()`: the one way a test waits for something another task, thread or process does."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

POLL_S = 0.02


async def eventually(predicate: Callable[[], Any], within: float = 30.0, what: str = "condition") -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy, and return that; fail after `within` s.

    The limit is a safety net against a hang, never a measurement: pass a generous one.
    """
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(POLL_S)


def eventually_sync(predicate: Callable[[], Any], within: float = 30.0, what: str = "condition") -> Any:
    """`eventually` for tests without an event loop (subprocess tests)."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        time.sleep(POLL_S)
