"""The cheap checks before costly work: a member's and a server's caps, counted before any attachment is fetched.

Jobs whose attachments are still downloading or being checked are not in the queue yet, so they are
counted here too (`Intake.hold`): a burst of uploads beyond a cap is refused at once instead of
each being downloaded and decoded first. The queue checks the caps again when it stores the job.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator

from bot.errors import UserError
from storage.records import Owner, QueuedCounts


class Intake:
    """Commands whose files are being fetched or checked, per member and per server (this process's)."""

    def __init__(self) -> None:
        self._members: collections.Counter[int] = collections.Counter()
        self._guilds: collections.Counter[int | None] = collections.Counter()

    @contextlib.contextmanager
    def hold(
        self, owner: Owner, queued: QueuedCounts, *, member_cap: int, member_cap_name: str, guild_cap: int
    ) -> Iterator[None]:
        """Count one more command for `owner` while the block runs; UserError when a cap is already full."""
        member = queued.member + self._members[owner.user_id]
        if member >= member_cap:
            raise UserError(
                f"you already have {member} jobs waiting or being checked ({member_cap_name} is {member_cap}); "
                "wait for one to start or cancel one"
            )
        guild = queued.guild + self._guilds[owner.guild_id]
        if guild >= guild_cap:
            raise UserError(
                f"this server already has {guild} jobs waiting or being checked (the limit is {guild_cap}); "
                "try again when the queue is shorter"
            )
        self._members[owner.user_id] += 1
        self._guilds[owner.guild_id] += 1
        try:
            yield
        finally:
            self._members[owner.user_id] -= 1
            self._guilds[owner.guild_id] -= 1
            self._members += collections.Counter()  # drop the zeros
            self._guilds += collections.Counter()
