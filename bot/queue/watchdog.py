"""`watch_render`: the stall watchdog, waiting on a render thread's future from the event loop.

The lease is renewed by the event loop, so a render thread stuck in a driver call or a deadlock keeps
its job forever unless something looks at the iterations themselves. The time between two
iterations is what is bounded (so a slow CPU is as safe as a fast GPU); before the first one the
limit is three times longer, since a model download or frame extraction comes first.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Stalled(Exception):
    """The render made no iteration for too long; `stopped`: its thread ended after the cancel."""

    def __init__(self, quiet_s: float, *, stopped: bool) -> None:
        super().__init__(f"no iteration for {quiet_s:.1f} s")
        self.quiet_s = quiet_s
        self.stopped = stopped


async def watch_render(
    future: asyncio.Future[T],
    *,
    last_sign_of_life: Callable[[], tuple[float, bool]],
    cancel: threading.Event,
    stall_s: float,
    grace_s: float,
    on_stall: Callable[[float], None],
) -> T:
    """`future`'s result, or raise `Stalled` once `last_sign_of_life()` ((monotonic time, iterated yet)) is
    older than the limit: then `on_stall(quiet_s)` is told, `cancel` is set and the thread gets `grace_s` to end.

    A render already cancelled (by its member, by a drain) gets `grace_s` more before it counts as stalled.
    """
    check_s = min(5.0, stall_s / 4)
    while True:
        done, _ = await asyncio.wait({future}, timeout=check_s)
        if done:
            return future.result()
        alive_at, iterated = last_sign_of_life()
        limit = stall_s if iterated else 3 * stall_s
        quiet = time.monotonic() - alive_at
        if quiet >= limit + (grace_s if cancel.is_set() else 0.0):
            break
    on_stall(quiet)
    cancel.set()
    done, _ = await asyncio.wait({future}, timeout=grace_s)
    if done and not future.cancelled():
        future.exception()  # what the abandoned render ended with no longer matters (and is not logged twice)
    raise Stalled(quiet, stopped=bool(done))
