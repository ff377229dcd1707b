"""The `guild_settings` table: one row per server and setting its admins changed; a missing row means the host's default.

Plain functions over an asyncpg connection; `PostgresJobStore` calls them inside its transactions.
"""

from __future__ import annotations

import asyncpg

from storage.postgres.db import changed


async def read_all(conn: asyncpg.Connection) -> dict[int, dict[str, str]]:
    """Every server's changed settings: guild id -> {name: value as the admin gave it (normalised)}."""
    found: dict[int, dict[str, str]] = {}
    for guild_id, name, value in await conn.fetch(
        "SELECT guild_id, name, value FROM guild_settings ORDER BY guild_id, name"
    ):
        found.setdefault(int(guild_id), {})[str(name)] = str(value)
    return found


async def write(
    conn: asyncpg.Connection, guild_id: int, name: str, value: str, *, now: float, by_user: int | None
) -> None:
    """Insert or replace one server's setting."""
    await conn.execute(
        "INSERT INTO guild_settings (guild_id, name, value, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (guild_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, "
        "updated_by = excluded.updated_by",
        guild_id,
        name,
        value,
        now,
        by_user,
    )


async def delete(conn: asyncpg.Connection, guild_id: int, name: str) -> bool:
    """Forget one server's setting (back to the host's default); False when it was not set."""
    status = await conn.execute("DELETE FROM guild_settings WHERE guild_id = $1 AND name = $2", guild_id, name)
    return changed(status) > 0
