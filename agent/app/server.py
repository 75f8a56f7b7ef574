"""The daemon's HTTP endpoint (aiohttp): ``/healthz``, ``/metrics``, ``/api/v1/checks``.

* ``GET /healthz`` — 200 ``ok`` while the scheduler ticks and results get written; 503 with
  the reason otherwise (a liveness probe for the agent itself).
* ``GET /metrics`` — Prometheus text format (see :mod:`agent.app.metrics`).
* ``GET /api/v1/checks`` — JSON: every check's state, since when, and last result.
* ``GET /api/v1/checks/{name}`` — one check, plus its recent results from the store.

Binds to ``server.listen`` (default ``127.0.0.1:9321``: loopback, because the API shows
probe details). Everything it returns has passed the config's redactor.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from agent.app.metrics import CONTENT_TYPE
from agent.kernel.errors import ConfigError

if TYPE_CHECKING:
    from agent.config.model import Config
    from agent.store.sqlite import Store


class _Rendering(Protocol):
    async def render_async(self) -> bytes: ...


class DaemonView(Protocol):
    """The narrow view of the daemon the endpoint serves: read-only, nothing it could change."""

    @property
    def config(self) -> Config: ...

    @property
    def store(self) -> Store | None: ...

    @property
    def metrics(self) -> _Rendering: ...

    def healthy(self) -> tuple[bool, str]:
        """Whether the agent itself works, and why not."""

    def snapshot(self) -> list[dict[str, Any]]:
        """Every check's state and last result, as JSON-ready dicts."""


class StatusServer:
    """Serves a running daemon through :class:`DaemonView`."""

    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon
        self.app = web.Application()
        self.app.add_routes([
            web.get("/healthz", self.healthz),
            web.get("/metrics", self.metrics),
            web.get("/api/v1/checks", self.checks),
            web.get("/api/v1/checks/{name}", self.check),
        ])
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, listen: str) -> None:
        """Bind and serve; the actual port (for ``:0``) ends up in :attr:`port`."""
        host, _, port = listen.rpartition(":")
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]") or "127.0.0.1", int(port))
        try:
            await site.start()
        except OSError as exc:  # busy port, address not on this host: a config problem, exit 2
            await self._runner.cleanup()
            reason = exc.strerror or type(exc).__name__
            raise ConfigError([f"server.listen: cannot listen on {listen}: {reason}"], "server") from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else int(port)

    async def stop(self) -> None:
        """Stop serving (in-flight requests are given a moment)."""
        if self._runner is not None:
            await self._runner.cleanup()

    def _json(self, doc: Any, status: int = 200) -> web.Response:
        body = json.dumps(self.daemon.config.redactor.data(doc), default=str, indent=2)
        return web.Response(text=body, status=status, content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        ok, reason = self.daemon.healthy()
        return web.Response(text=reason + "\n", status=200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        # A thousand checks' series take ~0.2 s to render: a slice at a time, so that a
        # scrape delays probes by a few milliseconds instead of stopping them all at once.
        body = await self.daemon.metrics.render_async()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def checks(self, request: web.Request) -> web.Response:
        return self._json({"checks": self.daemon.snapshot()})

    async def check(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        item = next((c for c in self.daemon.snapshot() if c["name"] == name), None)
        if item is None:
            return self._json({"error": f"no check named {name!r}"}, status=404)
        store = self.daemon.store
        if store is not None:
            item["recent_results"] = await asyncio.to_thread(store.recent_results, name, 20)
        return self._json(item)
