"""Connection limits of the HTTP surface: most clients, slow requests.

aiohttp bounds header sizes and closes idle keep-alive connections itself;
it has no limit on connections and none on how long a request may take to
arrive. :class:`GuardedProtocol` wraps each aiohttp connection handler
(delegating every protocol callback to it) and adds both:

* past ``max_clients`` open connections a new one is closed at once;
* a request whose first byte arrived ``request_timeout`` seconds ago and
  whose headers are still incomplete is cut off (a slowloris client trickling
  header bytes cannot hold a connection); :func:`deadline_middleware` bounds
  the rest of the request -- body and handler -- by the same timeout.

Invariant: a wrapped connection behaves exactly like aiohttp's own until a
limit is hit.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = [
    "DEADLINE",
    "MAX_BODY",
    "ConnectionGuard",
    "GuardedProtocol",
    "bearer_ok",
    "deadline_middleware",
]

#: The request's deadline (an ``asyncio.Timeout``): a long-lived response (the
#: console's server-sent events) lifts it with ``request[DEADLINE].reschedule(None)``
#: once the request is authorised and its headers are sent.
DEADLINE = web.RequestKey("deadline", asyncio.Timeout)

#: Largest request body of the HTTP surface (bytes), every route: aiohttp's
#: ``client_max_size`` for ``request.json()``, and the cap of handlers that
#: read ``request.content`` themselves (the rate limiter's API).
MAX_BODY = 1024 * 1024


def bearer_ok(request: web.Request, tokens: list[str]) -> bool:
    """``Authorization: Bearer <one of tokens>`` (compared in constant time)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and any(
        hmac.compare_digest(value.encode(), t.encode()) for t in tokens
    )


class ConnectionGuard:
    """Limits and counters shared by the connections of one HTTP server."""

    def __init__(self, max_clients: int, request_timeout: float) -> None:
        self.max_clients = max_clients
        self.request_timeout = request_timeout
        self.open: set[GuardedProtocol] = set()
        #: transport -> its wrapper, to tell a wrapper that a request began
        self.by_transport: dict[Any, GuardedProtocol] = {}
        self.rejected = 0
        self.timed_out = 0

    def factory(self, make_handler: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        return lambda: GuardedProtocol(self, make_handler())


class GuardedProtocol(asyncio.Protocol):
    """One connection: aiohttp's handler inside, the guard's limits around it."""

    def __init__(self, guard: ConnectionGuard, handler: Any) -> None:
        self.guard = guard
        self.handler = handler
        self.transport: asyncio.BaseTransport | None = None
        self.pending_since: float | None = None  # first byte of an unstarted request
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        guard = self.guard
        if len(guard.open) >= guard.max_clients:
            guard.rejected += 1
            transport.close()
            return
        guard.open.add(self)
        guard.by_transport[transport] = self
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.pending_since is None:
            self.pending_since = self.loop.time()
            self._arm()
        self.handler.data_received(data)

    def request_started(self) -> None:
        self.pending_since = None

    def _arm(self) -> None:
        if self.timer is None:
            self.timer = self.loop.call_later(self.guard.request_timeout, self._check)

    def _check(self) -> None:
        self.timer = None
        since = self.pending_since
        if since is None or self.transport is None:
            return
        left = since + self.guard.request_timeout - self.loop.time()
        if left > 0:
            self.timer = self.loop.call_later(left, self._check)
            return
        self.guard.timed_out += 1
        self.transport.close()

    def eof_received(self) -> bool | None:
        result: bool | None = self.handler.eof_received()
        return result

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        guard = self.guard
        if self in guard.open:
            guard.open.discard(self)
            guard.by_transport.pop(self.transport, None)
            self.handler.connection_lost(exc)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def deadline_middleware(guard: ConnectionGuard) -> Any:
    """Tell the connection its request began; bound the rest by the timeout."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        wrapper = guard.by_transport.get(request.transport)
        if wrapper is not None:
            wrapper.request_started()
        try:
            async with asyncio.timeout(guard.request_timeout) as deadline:
                request[DEADLINE] = deadline
                return await handler(request)
        except TimeoutError:
            guard.timed_out += 1
            return web.json_response({"error": "request timed out"}, status=408)

    return middleware
