"""What fair share reads, as functions over one connection: GPU time per member and per server, the queue state.

The claim calls `queue_state` inside its transaction (after its advisory lock), so the choice sees every
process's jobs as they are at that moment.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from storage.records import Candidate, QueueState


async def member_usage(conn: asyncpg.Connection, since: float, now: float) -> dict[int, float]:
    return {int(who): seconds for who, seconds in await _usage(conn, "user_id", since, now)}


async def guild_usage(conn: asyncpg.Connection, since: float, now: float) -> dict[int | None, float]:
    return {
        (int(who) if who is not None else None): seconds for who, seconds in await _usage(conn, "guild_id", since, now)
    }


async def _usage(conn: asyncpg.Connection, column: str, since: float, now: float) -> list[tuple[Any, float]]:
    # `column` is one of two names written here, never input
    rows = await conn.fetch(
        f"SELECT {column}, SUM(gpu_seconds + CASE WHEN state = 'running' AND run_started_at IS NOT NULL "
        "THEN GREATEST(0, $1::float8 - run_started_at) ELSE 0 END) FROM jobs "
        "WHERE finished_at >= $2 OR state = 'running' OR (state = 'queued' AND gpu_seconds > 0) "
        f"GROUP BY {column}",
        now,
        since,
    )
    return [(r[0], float(r[1])) for r in rows]


async def queue_state(conn: asyncpg.Connection, now: float, usage_window_s: float) -> QueueState:
    """The queued jobs in arrival order, live leases per member and server, and usage in the window."""
    rows = await conn.fetch(
        "SELECT id, user_id, guild_id, priority, created_at FROM jobs WHERE id IN "
        "(SELECT MIN(id) FROM jobs WHERE state = 'queued' GROUP BY guild_id, user_id) ORDER BY id"
    )
    queued = tuple(Candidate(id=r[0], user_id=r[1], guild_id=r[2], priority=bool(r[3]), created_at=r[4]) for r in rows)
    per_member: dict[int, int] = {}
    per_guild: dict[int | None, int] = {}
    for user_id, guild_id in await conn.fetch(
        "SELECT user_id, guild_id FROM jobs WHERE state = 'running' AND lease_until >= $1", now
    ):
        per_member[int(user_id)] = per_member.get(int(user_id), 0) + 1
        per_guild[guild_id] = per_guild.get(guild_id, 0) + 1
    since = now - usage_window_s
    return QueueState(
        queued=queued,
        running_per_member=per_member,
        usage=await member_usage(conn, since, now),
        guild_usage=await guild_usage(conn, since, now),
        running_per_guild=per_guild,
    )
