"""The node's HTTP surface: health, readiness, metrics, status, and test-only admin.

* ``GET /healthz`` -- 200 while the process serves (liveness).
* ``GET /readyz`` -- 200 once the node is started and has a ring (readiness);
  503 before and while stopping.
* ``GET /metrics`` -- Prometheus text format.
* ``GET /status`` -- the same map as ``peer-ring status``, as JSON.
* ``GET /`` -- the web console (:mod:`peer_ring.server.console`): members,
  the ring, transfers, hints, anti-entropy, load and apps, live; its
  actions (decommission) only with the admin token.
* ``/admin/faults`` -- only when the node runs with the explicit testing flag:
  ``GET`` shows, ``POST {"drop": {addr: p}, "delay": {addr: s}}`` sets and
  ``DELETE`` heals the transport fault rules. Without the flag it answers
  403, so a production node can never be partitioned over HTTP.

With an admin token configured (``PeerAuthConfig.admin_token``), ``/status``
and ``/admin/*`` need ``Authorization: Bearer <token>`` (401 without it);
with a ``metrics_token``, ``/metrics`` needs that one (or the admin token).
The probes ``/healthz`` and ``/readyz`` stay open: kubelets do not
authenticate. Tokens are compared in constant time.

Limits: at most ``max_clients`` connections, idle keep-alive connections
closed after ``idle_timeout``, a request that does not arrive (headers) or
finish (body and handler) within ``request_timeout`` cut off, bodies of at
most 1 MiB (see ``peer_ring.server._http_limits``).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from peer_ring.errors import ConfigError
from peer_ring.membership.base import parse_address
from peer_ring.metrics import make_registry, render
from peer_ring.server._http_limits import (
    MAX_BODY,
    ConnectionGuard,
    bearer_ok,
    deadline_middleware,
)
from peer_ring.server.console import Console

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

if TYPE_CHECKING:
    from peer_ring.node import Node


class HttpServer:
    """Serves the endpoints above for one node."""

    def __init__(
        self,
        node: Node,
        address: str,
        *,
        admin_token: str | None = None,
        metrics_token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_clients: int = 1024,
        idle_timeout: float = 15.0,
        request_timeout: float = 10.0,
        decommission: Callable[[], Awaitable[Any]] | None = None,
        console_interval: float = 1.0,
    ) -> None:
        self.node = node
        self.host, self.port = parse_address(address)
        self.admin_token = admin_token
        self.metrics_token = metrics_token
        self.ssl_context = ssl_context
        self.idle_timeout = idle_timeout
        #: most connections, slow-request cut-off (see _http_limits)
        self.guard = ConnectionGuard(max_clients, request_timeout)
        self._listener: asyncio.AbstractServer | None = None
        self.registry, self.collector = make_registry(node)
        self.stopping = False
        self._runner: web.AppRunner | None = None
        app = web.Application(
            client_max_size=MAX_BODY, middlewares=[deadline_middleware(self.guard)]
        )
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/metrics", self._guard(self._metrics, metrics=True)),
                web.get("/status", self._guard(self._status)),
                web.route("*", "/admin/faults", self._guard(self._faults)),
            ]
        )
        #: the web console at / (``decommission``: what decommissioning this
        #: node runs; see :class:`~peer_ring.server.console.Console`)
        self.console = Console(
            node, admin_token=admin_token, guard=self._guard,
            decommission=decommission, interval=console_interval,
        )  # fmt: skip
        app.add_routes(self.console.routes)
        self.app = app

    async def start(self) -> None:
        # keepalive_timeout: aiohttp closes a connection idle between requests
        runner = web.AppRunner(self.app, access_log=None, keepalive_timeout=self.idle_timeout)
        await runner.setup()
        assert runner.server is not None
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_server(
                self.guard.factory(runner.server), self.host, self.port,
                ssl=self.ssl_context, reuse_address=True,
            )  # fmt: skip
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"cannot serve HTTP on {self.host}:{self.port}: {exc}") from exc
        if self.port == 0:
            sockets = cast(Any, self._listener).sockets
            self.port = int(sockets[0].getsockname()[1])
        self._runner = runner

    async def close(self) -> None:
        await self.console.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _guard(self, handler: Handler, metrics: bool = False) -> Handler:
        """``handler`` behind the admin token (metrics: behind the metrics token
        when one is set, else open)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            if metrics:
                tokens = [t for t in (self.metrics_token, self.admin_token) if t]
                if self.metrics_token is None:
                    tokens = []
            else:
                tokens = [self.admin_token] if self.admin_token else []
            if tokens and not bearer_ok(request, tokens):
                return web.json_response(
                    {"error": "this endpoint needs Authorization: Bearer <admin token>"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="peer-ring"'},
                )
            return await handler(request)

        return guarded

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        node = self.node
        if self.stopping or not node.ready or not node.ring.node_ids:
            return web.Response(status=503, text="not ready\n")
        return web.Response(text="ready\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=render(self.registry), content_type="text/plain", charset="utf-8")

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.node.status())

    async def _faults(self, request: web.Request) -> web.Response:
        faults = self.node.faults
        if faults is None:
            return web.json_response(
                {"error": "fault injection is disabled; start the node with --testing"},
                status=403,
            )
        if request.method == "GET":
            return web.json_response(faults.snapshot())
        if request.method == "DELETE":
            faults.clear()
            return web.json_response(faults.snapshot())
        if request.method != "POST":
            return web.json_response({"error": "use GET, POST or DELETE"}, status=405)
        try:
            drop, delay = parse_fault_spec(await request.json())
        except (json.JSONDecodeError, ValueError) as exc:
            return web.json_response({"error": f"bad fault spec: {exc}"}, status=400)
        faults.drop.update(drop)
        faults.delay.update(delay)
        return web.json_response(faults.snapshot())


def parse_fault_spec(body: Any) -> tuple[dict[str, float], dict[str, float]]:
    """``{"drop": {addr: p}, "delay": {addr: s}}`` from a JSON body -> (drop, delay);
    ValueError for anything else (a fuzz target: tests/fuzz)."""
    if not isinstance(body, dict) or set(body) - {"drop", "delay"}:
        raise ValueError('expected {"drop": {address: p}, "delay": {address: seconds}}')
    out: list[dict[str, float]] = []
    for name, hi in (("drop", 1.0), ("delay", 60.0)):
        rules = body.get(name, {})
        if not isinstance(rules, dict):
            raise ValueError(f"{name} must map addresses to numbers")
        parsed: dict[str, float] = {}
        for addr, value in rules.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name}[{addr!r}] must be a number")
            if not 0.0 <= float(value) <= hi:
                raise ValueError(f"{name}[{addr!r}] must be in [0, {hi}]")
            parsed[str(addr)] = float(value)
        out.append(parsed)
    return out[0], out[1]
