"""`/metrics` and `/healthz` over HTTP, on the bot's own event loop (an aiohttp server: discord.py's HTTP library).

Why not prometheus-client's `start_http_server`: it serves from a thread of its own and knows nothing of
`/healthz`, and the values that come from the store are read with the store's async API, which lives on
this loop. A scrape reads the store once (`BotMetrics.refresh`); a slow or failing read serves the last
values rather than none. Bound to 127.0.0.1 unless `BOT_METRICS_HOST` says otherwise: the numbers name
servers and routes, which a public port would show anyone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.metrics import BotMetrics

log = logging.getLogger(__name__)

REFRESH_LIMIT_S = 5.0  # a scrape waits at most this long for the store before serving the last values


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    """Where to listen. `port` 0 takes any free port (the tests; the log names the one taken)."""

    port: int
    host: str = "127.0.0.1"


class MetricsServer:
    """Serves one `BotMetrics`; `start()` binds, `stop()` closes. `port` is the bound port once started."""

    def __init__(self, metrics: BotMetrics, config: MetricsConfig) -> None:
        self.metrics, self.config = metrics, config
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = next(iter(runner.addresses))[1] if runner.addresses else self.config.port
        self.metrics.install()
        log.info("metrics on http://%s:%s/metrics (and /healthz)", self.config.host, self.port)

    async def stop(self) -> None:
        self.metrics.uninstall()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(self.metrics.refresh(), REFRESH_LIMIT_S)
        except Exception:  # the database is busy or failing: the last values are still worth serving
            log.warning("metrics: reading the store failed; serving the last values", exc_info=True)
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        check = self.metrics.health
        if check is None:
            return web.json_response({"ok": True})
        health = check()
        body = {"ok": health.ok, "gateway": health.gateway, "devices": dict(health.devices)}
        return web.Response(status=200 if health.ok else 503, text=json.dumps(body), content_type="application/json")
