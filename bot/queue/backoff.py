"""`Backoff`: how a loop that talks to the database waits and logs while its calls fail.

Every loop that reads or writes the shared database (the runner's claims and heartbeats, the progress
relay, the results poll, the worker's heartbeat, housekeeping) catches its failures and goes on: a
database that went away (`StoreUnavailable`: a restart, a dropped connection; the pool connects again at
the next call) is logged in one line, anything else with its traceback; the wait grows while the failures
last (doubling up to `longest_s`) and is back to normal, with a line saying so, at the first success.
"""

from __future__ import annotations

import logging

from storage.store import StoreUnavailable


class Backoff:
    """The waits of one loop that normally runs every `every_s`."""

    def __init__(self, what: str, log: logging.Logger, *, every_s: float, longest_s: float = 30.0) -> None:
        self.what, self.log = what, log
        self.every_s, self.longest_s = every_s, max(longest_s, every_s)
        self.failures = 0

    @property
    def wait_s(self) -> float:
        """How long to wait before the next round: `every_s`, doubled for each failure in a row up to `longest_s`."""
        grown: float = self.every_s * 2.0 ** min(self.failures, 16)
        return min(grown, self.longest_s)

    def failed(self, error: BaseException) -> float:
        """Log the failure and answer the wait before the next try."""
        self.failures += 1
        wait = self.wait_s
        if isinstance(error, StoreUnavailable):
            self.log.warning("%s failed (%s); trying again in %.1f s", self.what, error, wait)
        else:
            self.log.error("%s failed; trying again in %.1f s", self.what, wait, exc_info=error)
        return wait

    def succeeded(self) -> float:
        """The first success after failures is logged; answers the normal wait."""
        if self.failures:
            self.log.info("%s works again after %d failure(s)", self.what, self.failures)
            self.failures = 0
        return self.every_s
