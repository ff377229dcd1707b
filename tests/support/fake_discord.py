"""A fake Discord on 127.0.0.1 for end-to-end tests: REST API, gateway websocket and CDN in one aiohttp app.

The real discord.py client connects to it (DISCORD_API_BASE / DISCORD_GATEWAY_URL). Every REST request
is recorded so tests can assert on what the bot sent; faults (429, 413, 5xx) can be injected per route.
Payload shapes are the ones discord.py 2.7 sends and reads (docs/discord.md, "Testing without Discord").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import itertools
import json
import re
import secrets
import time
from typing import Any

import discord.utils
from aiohttp import WSMsgType, web

from tests.support import fake_payloads as payloads
from tests.support.waiting import eventually

BOT_TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.GfakeB.bot-token-that-must-never-be-logged-0123456789"  # the test bots' token
ALL_PERMISSIONS = (1 << 50) - 1
OPTION_TYPES = {"string": 3, "integer": 4, "boolean": 5, "number": 10, "attachment": 11}


@dataclasses.dataclass(slots=True)
class Request:
    """One REST request the bot made, and what the fake answered."""

    method: str
    path: str
    query: dict[str, str]
    payload: dict[str, Any] | list[Any] | None
    files: list[tuple[str, bytes]]
    at: float
    status: int = 200

    @property
    def uses_interaction_token(self) -> bool:
        return self.path.startswith(("/api/v10/interactions/", "/api/v10/webhooks/"))


@dataclasses.dataclass(slots=True)
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    times: int


@dataclasses.dataclass(slots=True)
class RateLimitWindow:
    """Requests matching `method` and the path regex are answered 429 until `until` (monotonic time)."""

    method: str
    pattern: re.Pattern[str]
    retry_after: float
    until: float
    answered: int = 0  # 429s sent

    @property
    def over(self) -> bool:
        return time.monotonic() >= self.until


@dataclasses.dataclass(slots=True)
class SentInteraction:
    """An interaction the fake injected through the gateway (`payload` is what it sent, to send it again)."""

    id: int
    token: str
    user_id: int
    sent_at: float
    payload: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class FakeGuild:
    """A server the bot is in: its text channels (the first is where commands come from by default)."""

    id: int
    name: str
    channels: tuple[tuple[int, str], ...]
    moderator_role_id: int

    @property
    def channel_id(self) -> int:
        return self.channels[0][0]


# what a member may do: the everyday member's rights, and those of the server's admins
MANAGE_MESSAGES, ADMINISTRATOR, MANAGE_GUILD = 1 << 13, 1 << 3, 1 << 5


class FakeDiscord:
    """Two guilds (the bot in both), text channels, a few members; what a render bot needs of Discord.

    The first guild's ids are `guild_id`, `channel_id`, `other_channel_id`, `thread_id`; the second's
    `second_guild_id` and `second_channel_id`. A member is in whichever guild an interaction says.
    """

    def __init__(self) -> None:
        self.app_id = 900000000000000001
        self.bot_id = 900000000000000002
        self.guild_id = 900000000000000010
        self.channel_id = 900000000000000020
        self.other_channel_id = 900000000000000021
        self.thread_id = 900000000000000022  # a thread in the first channel
        self.archived: set[int] = set()  # channels (threads) that refuse new messages with 50083
        self.moderator_role_id = 900000000000000030
        self.owner_id = 900000000000000040
        self.second_guild_id = 900000000000000110
        self.second_channel_id = 900000000000000120
        self.guilds = (
            FakeGuild(
                self.guild_id,
                "Render Club",
                ((self.channel_id, "renders"), (self.other_channel_id, "general")),
                self.moderator_role_id,
            ),
            FakeGuild(self.second_guild_id, "Other Club", ((self.second_channel_id, "art"),), 900000000000000130),
        )
        self.requests: list[Request] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.deleted: set[int] = set()
        self.files: dict[str, bytes] = {}
        self.downloads: list[str] = []  # the CDN keys the bot fetched, in order
        self.commands: dict[str, dict[str, Any]] = {}
        self.interactions: list[SentInteraction] = []
        self.max_upload_bytes: int | None = None
        self.identified = asyncio.Event()
        self._faults: list[Fault] = []
        self._windows: list[RateLimitWindow] = []
        self.refuse_gateway = False  # set by `drop_gateway`: new gateway connections are answered 503
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_route("GET", "/gateway", self._gateway)
        app.router.add_route("GET", "/cdn/{key}/{name}", self._cdn)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def guild_of(self, channel_id: int) -> FakeGuild:
        """The guild a channel (or the first guild's thread) belongs to; the first guild for unknown ones."""
        for guild in self.guilds:
            if any(cid == channel_id for cid, _ in guild.channels):
                return guild
        return self.guilds[0]

    def guild(self, guild_id: int | None) -> FakeGuild:
        return next((g for g in self.guilds if g.id == guild_id), self.guilds[0])

    def snowflake(self) -> int:
        return discord.utils.time_snowflake(datetime.datetime.now(datetime.UTC)) + next(self._ids)

    # ---- faults ------------------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        pattern: str,
        status: int,
        body: dict[str, Any],
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` requests matching `method` and the path regex with this error."""
        self._faults.append(Fault(method, re.compile(pattern), status, body, headers or {}, times))

    def rate_limit(
        self, method: str, pattern: str, *, retry_after: float = 0.3, via: bool = True, times: int = 1
    ) -> None:
        """A 429; with `via` discord.py sleeps and retries, without it discord.py raises at once."""
        headers = self._rate_limit_headers(pattern, retry_after)
        if not via:
            del headers["Via"]
        self.fail(method, pattern, 429, self._rate_limit_body(retry_after), headers=headers, times=times)

    def rate_limit_for(self, method: str, pattern: str, seconds: float, *, retry_after: float) -> RateLimitWindow:
        """Answer every matching request with a 429 asking for `retry_after` s, for the next `seconds` s.

        Discord's route limit as discord.py reads it: the X-RateLimit-* headers, Retry-After, a `Via`
        header (without it a 429 is taken for Cloudflare's) and the JSON body. A `retry_after` over the
        client's `max_ratelimit_timeout` makes discord.py raise `RateLimited`.
        """
        window = RateLimitWindow(method, re.compile(pattern), retry_after, time.monotonic() + seconds)
        self._windows.append(window)
        return window

    @staticmethod
    def _rate_limit_headers(pattern: str, retry_after: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Bucket": f"fake-{abs(hash(pattern)):x}",
            "X-RateLimit-Scope": "user",
            "Retry-After": f"{retry_after:g}",
            "Via": "1.1 google",
        }

    @staticmethod
    def _rate_limit_body(retry_after: float) -> dict[str, Any]:
        return {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}

    def _window_for(self, method: str, path: str) -> RateLimitWindow | None:
        for window in self._windows:
            if window.method == method and window.pattern.search(path) and not window.over:
                window.answered += 1
                return window
        return None

    def clear_faults(self) -> None:
        """Answer normally from now on."""
        self._faults.clear()
        self._windows.clear()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.method == method and fault.pattern.search(path) and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    # ---- queries for tests -------------------------------------------------------------------------

    def everything_received(self) -> list[tuple[str, bytes]]:
        """Every payload and file the bot sent (what, bytes): for searching all of it at once."""
        found: list[tuple[str, bytes]] = []
        for r in self.requests:
            if r.payload is not None:
                found.append((f"{r.method} {r.path}", json.dumps(r.payload, ensure_ascii=False).encode()))
            found += [(f"{r.method} {r.path} file {name}", data) for name, data in r.files]
        return found

    def channel_messages(self, channel_id: int | None = None) -> list[dict[str, Any]]:
        cid = str(channel_id or self.channel_id)
        return [m for mid, m in sorted(self.messages.items()) if m["channel_id"] == cid and mid not in self.deleted]

    def results(self, job_id: int | None = None, channel_id: int | None = None) -> list[dict[str, Any]]:
        """Messages in the channel (the first guild's first by default) that carry a result file (job-N.*)."""
        found = []
        for m in self.channel_messages(channel_id):
            for a in m["attachments"]:
                if re.fullmatch(r"job-\d+\.\w+", a["filename"]) and (
                    job_id is None or a["filename"].startswith(f"job-{job_id}.")
                ):
                    found.append(m)
                    break
        return found

    def attachment_bytes(self, attachment: dict[str, Any]) -> bytes:
        return self.files[attachment["url"].rsplit("/cdn/", 1)[1]]

    def token_requests(self, token: str) -> list[Request]:
        return [r for r in self.requests if token in r.path]

    def add_file(self, filename: str, data: bytes, content_type: str) -> dict[str, Any]:
        """Put bytes on the CDN; returns the attachment object to put in an interaction."""
        aid = self.snowflake()
        key = f"{aid}/{filename}"
        self.files[key] = data
        url = f"http://127.0.0.1:{self.port}/cdn/{key}"
        return {
            "id": str(aid),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    @staticmethod
    def with_button(message: dict[str, Any], custom_id: str) -> dict[str, Any]:
        """`message` as a modified client could present it: carrying one button with any custom id."""
        button = {"type": 2, "style": 2, "label": "forged", "custom_id": custom_id}
        return {**message, "components": [{"type": 1, "components": [button]}]}

    def delete_message(self, message_id: int) -> None:
        """What a moderator deleting the message looks like to the bot: later edits get 10008."""
        self.deleted.add(message_id)

    # ---- interactions ------------------------------------------------------------------------------

    def _interaction(
        self,
        kind: int,
        user_id: int,
        data: dict[str, Any],
        *,
        moderator: bool,
        channel_id: int | None,
        app_permissions: int,
        size_limit: int,
        message: dict[str, Any] | None = None,
        guild_id: int | None = None,
        permissions: int = 0,
    ) -> tuple[dict[str, Any], SentInteraction]:
        iid = self.snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        guild = self.guild(guild_id) if guild_id is not None or channel_id is None else self.guild_of(channel_id)
        roles = [guild.moderator_role_id] if moderator else []
        payload = payloads.interaction(
            interaction_id=iid,
            token=token,
            kind=kind,
            app_id=self.app_id,
            guild_id=guild.id,
            channel_id=channel_id or guild.channel_id,
            member_data=payloads.member(user_id, role_ids=roles, permissions=permissions),
            data=data,
            app_permissions=app_permissions,
            size_limit=size_limit,
            message=message,
        )
        sent = SentInteraction(iid, token, user_id, time.monotonic(), payload)
        self.interactions.append(sent)
        return payload, sent

    async def replay(self, sent: SentInteraction) -> None:
        """Send an interaction again, as a gateway that resumes may: the same id, the same token."""
        await self.dispatch("INTERACTION_CREATE", sent.payload)

    async def slash(
        self,
        name: str,
        *,
        user_id: int,
        moderator: bool = False,
        channel_id: int | None = None,
        guild_id: int | None = None,
        permissions: int = 0,
        app_permissions: int = ALL_PERMISSIONS,
        size_limit: int = 10 * 1024 * 1024,
        raw_options: list[dict[str, Any]] | None = None,
        subcommand: str | None = None,
        **options: Any,
    ) -> SentInteraction:
        """Send a slash command (in `guild_id`'s first channel, or in `channel_id`); option types come from the
        commands the bot synced. `permissions` are the member's own (Manage Messages, Administrator, …)."""
        command = self.commands[name]
        declared = command.get("options", [])
        if subcommand is not None:
            declared = next(o for o in declared if o["name"] == subcommand).get("options", [])
        kinds = {o["name"]: o["type"] for o in declared}
        opts, resolved = [], {}
        for key, value in options.items():
            if value is None:
                continue
            kind = kinds[key]
            if kind == 11:
                resolved[value["id"]] = value
                opts.append({"name": key, "type": 11, "value": value["id"]})
            else:
                opts.append({"name": key, "type": kind, "value": value})
        given = (raw_options or []) + opts
        if subcommand is not None:
            given = [{"name": subcommand, "type": 1, "options": given}]
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1, "options": given}
        if resolved:
            data["resolved"] = {"attachments": resolved}
        payload, sent = self._interaction(
            2,
            user_id,
            data,
            moderator=moderator,
            channel_id=channel_id,
            guild_id=guild_id,
            permissions=permissions,
            app_permissions=app_permissions,
            size_limit=size_limit,
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return sent

    async def click(
        self,
        message: dict[str, Any],
        custom_id: str,
        *,
        user_id: int,
        moderator: bool = False,
        permissions: int = 0,
    ) -> SentInteraction:
        """Press a button on a message the bot posted (any custom id: a client can send a forged one)."""
        data = {"custom_id": custom_id, "component_type": 2}
        payload, sent = self._interaction(
            3,
            user_id,
            data,
            moderator=moderator,
            permissions=permissions,
            channel_id=int(message["channel_id"]),
            app_permissions=ALL_PERMISSIONS,
            size_limit=10 * 1024 * 1024,
            message=message,
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return sent

    def replies(self, sent: SentInteraction) -> list[str]:
        """The text the bot answered an interaction with (callback, then edits of the original)."""
        texts = []
        for r in self.token_requests(sent.token):
            if isinstance(r.payload, dict):
                body = r.payload.get("data", r.payload) if "/callback" in r.path else r.payload
                if isinstance(body, dict) and body.get("content"):
                    texts.append(body["content"])
        return texts

    def first_response_at(self, sent: SentInteraction) -> float | None:
        for r in self.requests:
            if r.path.startswith(f"/api/v10/interactions/{sent.id}/"):
                return r.at
        return None

    # ---- gateway -----------------------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        await eventually(lambda: self._sockets, 30.0, "the bot's gateway connection")
        frame = json.dumps({"op": 0, "t": event, "s": next(self._seq), "d": data})
        for ws in list(self._sockets):
            with contextlib.suppress(ConnectionError):
                await ws.send_str(frame)

    async def drop_gateway(self) -> None:
        """Close the bot's gateway connections and refuse new ones until `refuse_gateway` is set False again."""
        self.refuse_gateway = True
        for ws in list(self._sockets):
            await ws.close()

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_gateway:
            return web.Response(status=503, text="gateway unavailable")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                if frame["op"] == 1:
                    await ws.send_str(json.dumps({"op": 11}))
                elif frame["op"] in (2, 6):
                    self._sockets.append(ws)
                    await self._ready(ws)
                    self.identified.set()
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
        return ws

    async def _ready(self, ws: web.WebSocketResponse) -> None:
        ready = payloads.ready(
            bot_id=self.bot_id,
            app_id=self.app_id,
            guild_ids=[g.id for g in self.guilds],
            session_id=secrets.token_hex(16),
            gateway_url=self.gateway_url,
        )
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": next(self._seq), "d": ready}))
        for fake_guild in self.guilds:
            guild = payloads.guild(
                guild_id=fake_guild.id,
                name=fake_guild.name,
                owner_id=self.owner_id,
                moderator_role_id=fake_guild.moderator_role_id,
                channels=list(fake_guild.channels),
            )
            await ws.send_str(json.dumps({"op": 0, "t": "GUILD_CREATE", "s": next(self._seq), "d": guild}))

    # ---- CDN ---------------------------------------------------------------------------------------

    async def _cdn(self, request: web.Request) -> web.Response:
        key = f"{request.match_info['key']}/{request.match_info['name']}"
        self.downloads.append(key)
        if key not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[key], content_type="application/octet-stream")

    # ---- REST --------------------------------------------------------------------------------------

    @staticmethod
    def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> web.Response:
        # exactly application/json: with "; charset=utf-8" discord.py reads text and crashes
        if data is None:
            return web.Response(status=status, headers=headers)
        body = json.dumps(data).encode()
        return web.Response(status=status, body=body, headers={"Content-Type": "application/json", **(headers or {})})

    async def _read(self, request: web.Request) -> tuple[Any, list[tuple[str, bytes]]]:
        if request.content_type.startswith("multipart/"):
            payload: Any = None
            files = []
            reader = await request.multipart()
            async for part in reader:
                data = await part.read()  # type: ignore[union-attr]
                if part.name == "payload_json":  # type: ignore[union-attr]
                    payload = json.loads(data)
                else:
                    files.append((part.filename or "file", bytes(data)))  # type: ignore[union-attr]
            return payload, files
        if request.can_read_body:
            return await request.json(), []
        return None, []

    async def _rest(self, request: web.Request) -> web.Response:
        payload, files = await self._read(request)
        path = request.path
        record = Request(request.method, path, dict(request.query), payload, files, time.monotonic())
        self.requests.append(record)
        if (window := self._window_for(request.method, path)) is not None:
            record.status = 429
            headers = self._rate_limit_headers(window.pattern.pattern, window.retry_after)
            return self._json(429, self._rate_limit_body(window.retry_after), headers)
        fault = self._fault_for(request.method, path)
        if fault is not None:
            record.status = fault.status
            return self._json(fault.status, fault.body, fault.headers)
        if self.max_upload_bytes is not None and sum(len(b) for _, b in files) > self.max_upload_bytes:
            record.status = 413
            return self._json(413, {"code": 40005, "message": "Request entity too large"})
        status, data = self._route(request.method, path, payload, files)
        record.status = status
        return self._json(status, data)

    def _route(self, method: str, path: str, payload: Any, files: list[tuple[str, bytes]]) -> tuple[int, Any]:
        p = path.removeprefix("/api/v10")
        if method == "GET" and p == "/users/@me":
            return 200, payloads.user(self.bot_id, bot=True)
        if method == "GET" and p == "/oauth2/applications/@me":
            owner = payloads.user(self.owner_id)
            return 200, {
                "id": str(self.app_id),
                "name": "vqbot",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": owner,
                "verify_key": "0" * 64,
                "flags": 0,
            }
        if method == "GET" and p in ("/gateway", "/gateway/bot"):
            return 200, {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1},
            }
        if method == "PUT" and (m := re.fullmatch(r"/applications/\d+(?:/guilds/(\d+))?/commands", p)):
            out = []
            for command in payload:
                stored = {**command, "id": str(self.snowflake()), "application_id": str(self.app_id), "version": "1"}
                if m.group(1):
                    stored["guild_id"] = m.group(1)
                self.commands[command["name"]] = stored
                out.append(stored)
            return 200, out
        if method == "POST" and (m := re.fullmatch(r"/interactions/(\d+)/[^/]+/callback", p)):
            return self._callback(int(m.group(1)), payload, files)
        if m := re.fullmatch(r"/webhooks/\d+/([^/]+)(?:/messages/(@original|\d+))?", p):
            return self._webhook(method, m.group(1), m.group(2), payload, files)
        if method == "GET" and (m := re.fullmatch(r"/channels/(\d+)", p)):
            return self._get_channel(int(m.group(1)))
        if m := re.fullmatch(r"/channels/(\d+)/messages(?:/(\d+))?", p):
            return self._channel(method, int(m.group(1)), int(m.group(2)) if m.group(2) else None, payload, files)
        return 404, {"code": 0, "message": f"404: Not Found ({method} {p})"}

    def _message(
        self, channel_id: int, payload: dict[str, Any], files: list[tuple[str, bytes]], *, flags: int = 0
    ) -> dict[str, Any]:
        mid = self.snowflake()
        author = payloads.user(self.bot_id, bot=True)
        message = payloads.message(
            message_id=mid, channel_id=channel_id, guild_id=self.guild_of(channel_id).id, author=author, flags=flags
        )
        self._apply(message, payload or {}, files)
        message["edits"] = 0
        self.messages[mid] = message
        return message

    def _apply(self, message: dict[str, Any], payload: dict[str, Any], files: list[tuple[str, bytes]]) -> None:
        for key in ("content", "components", "embeds", "allowed_mentions", "nonce"):
            if key in payload:
                message[key] = (
                    payload[key] if payload[key] is not None else ([] if key in ("components", "embeds") else None)
                )
        if "attachments" in payload or files:
            kept = [
                a
                for a in message["attachments"]
                if any(str(x.get("id")) == a["id"] for x in payload.get("attachments") or [])
            ]
            new = []
            for filename, data in files:
                aid = self.snowflake()
                key = f"{aid}/{filename}"
                self.files[key] = data
                url = f"http://127.0.0.1:{self.port}/cdn/{key}"
                new.append({"id": str(aid), "filename": filename, "size": len(data), "url": url, "proxy_url": url})
            message["attachments"] = kept + new
        message["edits"] = message.get("edits", 0) + 1
        message["edited_timestamp"] = payloads.now_iso()

    def _get_channel(self, channel_id: int) -> tuple[int, Any]:
        if channel_id == self.thread_id:
            thread = payloads.thread(
                self.thread_id, self.guild_id, self.channel_id, self.bot_id, archived=channel_id in self.archived
            )
            return 200, thread
        for guild in self.guilds:
            names = dict(guild.channels)
            if channel_id in names:
                return 200, payloads.text_channel(channel_id, guild.id, names[channel_id])
        return 404, {"code": 10003, "message": "Unknown Channel"}

    def _public(self, message: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in message.items() if k not in ("edits", "allowed_mentions")}

    def _callback(
        self, interaction_id: int, payload: dict[str, Any], files: list[tuple[str, bytes]]
    ) -> tuple[int, Any]:
        sent = next((i for i in self.interactions if i.id == interaction_id), None)
        if sent is None:
            return 404, {"code": 10062, "message": "Unknown interaction"}
        if any(
            r.path.startswith(f"/api/v10/interactions/{interaction_id}/") and r.status == 200
            for r in self.requests[:-1]
        ):
            return 400, {"code": 40060, "message": "Interaction has already been acknowledged."}
        if time.monotonic() - sent.sent_at > 3.0:
            return 404, {"code": 10062, "message": "Unknown interaction"}
        kind = payload["type"]
        data = payload.get("data") or {}
        where = int(sent.payload.get("channel_id", self.channel_id))  # the answer shows where the command was used
        message = self._message(where, data if kind == 4 else {}, files, flags=int(data.get("flags", 0)))
        message["interaction_token"] = sent.token
        info = {
            "id": str(interaction_id),
            "type": 2,
            "response_message_id": message["id"],
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(int(data.get("flags", 0)) & 64),
        }
        return 200, {"interaction": info, "resource": {"type": kind, "message": self._public(message)}}

    def _webhook(
        self, method: str, token: str, which: str | None, payload: Any, files: list[tuple[str, bytes]]
    ) -> tuple[int, Any]:
        if which is None and method == "POST":
            return 200, self._public(self._message(self.channel_id, payload or {}, files))
        if which == "@original":
            original = next((m for m in self.messages.values() if m.get("interaction_token") == token), None)
            if original is None:
                return 404, {"code": 10008, "message": "Unknown Message"}
            if method == "PATCH":
                self._apply(original, payload or {}, files)
            return 200, self._public(original)
        return 404, {"code": 10008, "message": "Unknown Message"}

    def _channel(
        self, method: str, channel_id: int, message_id: int | None, payload: Any, files: list[tuple[str, bytes]]
    ) -> tuple[int, Any]:
        known = {cid for guild in self.guilds for cid, _ in guild.channels} | {self.thread_id}
        if channel_id not in known:
            return 404, {"code": 10003, "message": "Unknown Channel"}
        if channel_id in self.archived and method in ("POST", "PATCH"):
            return 400, {"code": 50083, "message": "Thread is archived"}
        if message_id is None and method == "POST":
            nonce = (payload or {}).get("nonce")
            if nonce and (payload or {}).get("enforce_nonce"):
                for m in self.messages.values():
                    if (
                        m.get("nonce") == nonce
                        and m["channel_id"] == str(channel_id)
                        and int(m["id"]) not in self.deleted
                    ):
                        return 200, self._public(m)
            return 200, self._public(self._message(channel_id, payload or {}, files))
        if message_id is None or message_id not in self.messages or message_id in self.deleted:
            return 404, {"code": 10008, "message": "Unknown Message"}
        message = self.messages[message_id]
        if method == "PATCH":
            self._apply(message, payload or {}, files)
        elif method == "DELETE":
            self.deleted.add(message_id)
            return 204, None
        return 200, self._public(message)
