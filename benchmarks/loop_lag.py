"""Event-loop lag: how late a periodic wake-up runs. The number that says whether the loop is blocked."""

from __future__ import annotations

import asyncio
import contextlib
import statistics


class LoopLag:
    """Samples the loop's lag every `interval_s` while active (`async with LoopLag() as lag: ...`)."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.samples.append(max(0.0, loop.time() - due))

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100) of the lag in seconds; 0 with no samples."""
        return percentile(self.samples, q)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated; 0 for an empty list."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(98, max(0, round(q) - 1))]
