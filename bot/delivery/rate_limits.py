"""Discord rate limits as the delivery meets them: what counts as one, how long to wait, and a counter.

discord.py sleeps through short rate limits itself; one longer than the client's `max_ratelimit_timeout`
raises `discord.RateLimited`, which is not an `HTTPException`. A 429 that reaches us as an
`HTTPException` (discord.py's retries used up, or Cloudflare's answer without a `Via` header) is the same
thing. Every Discord call path waits `retry_after` (at most the operator's cap) and tries again; none
drops the work because of a rate limit.
"""

from __future__ import annotations

import collections
import dataclasses
import logging

import discord

from bot.delivery.discord_codes import TOO_MANY_OLD_EDITS
from bot.metrics import record_rate_limit

log = logging.getLogger(__name__)

MAX_RATELIMIT_TIMEOUT_S = 30.0  # discord.py's floor: a longer wait raises RateLimited instead of blocking a call


@dataclasses.dataclass(slots=True)
class RateLimitCounter:
    """Rate limits met and calls retried after one, by call path ("result", "status", "ack", ...).

    Process-wide (`RATE_LIMITS`), so the metrics can expose "Discord 429s and retries". Limits that
    discord.py slept through itself are not seen here.
    """

    hits: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    retries: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def hit(self, path: str) -> None:
        self.hits[path] += 1

    def retried(self, path: str) -> None:
        self.retries[path] += 1
        record_rate_limit(path)  # vqbot_discord_rate_limit_retries_total{route=path} when metrics are on

    @property
    def total_hits(self) -> int:
        return sum(self.hits.values())

    @property
    def total_retries(self) -> int:
        return sum(self.retries.values())


RATE_LIMITS = RateLimitCounter()


def retry_after(error: BaseException) -> float | None:
    """How long Discord asked us to wait when `error` is a rate limit; None when it is not one.

    A 429 with code 30046 (edits to an old message used up) is no rate limit: waiting does not help.
    """
    if isinstance(error, discord.RateLimited):
        return max(0.0, error.retry_after)
    if isinstance(error, discord.HTTPException) and error.status == 429 and error.code != TOO_MANY_OLD_EDITS:
        header = error.response.headers.get("Retry-After") if error.response is not None else None
        try:
            return max(0.0, float(header)) if header else 0.0
        except ValueError:
            return 0.0
    return None


def wait_for(asked_s: float, *, floor_s: float, cap_s: float) -> float:
    """The wait before trying again: what Discord asked, at most `cap_s`, and never less than `floor_s`.

    The cap keeps a job from being parked for an hour by one huge `retry_after`: trying again early
    costs one more refused request (or none: discord.py refuses it before sending while its bucket is
    known to be empty). The floor is the call path's own pacing, which a rate limit never shortens.
    """
    return max(0.0, floor_s, min(asked_s, cap_s))
