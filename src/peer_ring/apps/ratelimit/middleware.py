"""HTTP middleware: rate-limit every request of an ASGI or aiohttp app.

::

    limiter = node.register(RateLimiter())
    app = Starlette(routes=...)
    app.add_middleware(RateLimitMiddleware, limiter=limiter, limit=100, period=60)

    aio = web.Application(middlewares=[aiohttp_middleware(limiter, limit=100, period=60)])

Each request is counted against ``key(request)`` (default: the client's IP
address; return None to let a request through uncounted, e.g. health
checks). A refused request gets **429** with ``Retry-After`` (whole seconds,
rounded up) and a JSON body; every counted response carries the IETF
``RateLimit-Policy`` and ``RateLimit`` fields of
draft-ietf-httpapi-ratelimit-headers (the structured-field form:
``RateLimit-Policy: "default";q=100;w=60`` and ``RateLimit:
"default";r=42;t=17``, ``r`` the remaining quota, ``t`` seconds until it is
back to full). When the limiter cannot decide (owner unreachable, node
stopping) the request gets **503** -- never a silent allow -- unless
``fail_open=True``.

:class:`RateLimitMiddleware` is plain ASGI (Starlette, FastAPI, any ASGI
server); :func:`aiohttp_middleware` needs aiohttp.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from peer_ring.app import ConfigError, PeerRingError
from peer_ring.apps.ratelimit._types import NS_PER_S, check_limit
from peer_ring.apps.ratelimit.limiter import Decision, RateLimiter, algorithm_of

__all__ = ["RateLimitMiddleware", "aiohttp_middleware", "ratelimit_headers"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _sf_string(text: str) -> str:
    """``text`` as a structured-field String (quotes and backslashes escaped)."""
    clean = "".join(ch for ch in text if 0x20 <= ord(ch) < 0x7F)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ratelimit_headers(
    decision: Decision, *, policy: str, period: float, now: float
) -> list[tuple[str, str]]:
    """The ``RateLimit-Policy``/``RateLimit`` (and ``Retry-After`` when refused) fields."""
    name = _sf_string(policy)
    reset = max(0, math.ceil(decision.reset_at - now))
    out = [
        ("RateLimit-Policy", f"{name};q={decision.limit};w={max(1, math.ceil(period))}"),
        ("RateLimit", f"{name};r={decision.remaining};t={reset}"),
    ]
    if not decision.allowed:
        wait = decision.retry_after if math.isfinite(decision.retry_after) else period
        out.append(("Retry-After", str(max(1, math.ceil(wait)))))
    return out


def _check(limit: int, period: float, algorithm: str) -> None:
    """Refuse a bad configuration when the app is built, not per request."""
    if type(period) not in (int, float) or not 0 < period < 1e9:
        raise ConfigError(f"period must be a positive number of seconds, got {period!r}")
    try:
        alg = algorithm_of(algorithm)
    except PeerRingError as exc:
        raise ConfigError(str(exc)) from None
    check_limit(alg, limit, round(period * NS_PER_S), error=ConfigError)


def _client_ip(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


class RateLimitMiddleware:
    """ASGI middleware (see the module docstring). Non-HTTP scopes pass through."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        limit: int,
        period: float,
        key: Callable[[Scope], str | None] = _client_ip,
        algorithm: str = "sliding_window",
        name: str = "http",
        policy: str = "default",
        mode: str | None = None,
        fail_open: bool = False,
    ) -> None:
        _check(limit, period, algorithm)
        self.app = app
        self.limiter = limiter
        self.limit = limit
        self.period = period
        self.key = key
        self.algorithm = algorithm
        self.name = name
        self.policy = policy
        self.mode = mode
        self.fail_open = fail_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = self.key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        try:
            d = await self.limiter.hit(
                key,
                limit=self.limit,
                period=self.period,
                algorithm=self.algorithm,
                name=self.name,
                mode=self.mode,
            )
        except PeerRingError as exc:
            if self.fail_open:
                await self.app(scope, receive, send)
                return
            await _send_json(send, 503, {"error": f"rate limiter unavailable: {exc}"}, [])
            return
        fields = ratelimit_headers(
            d, policy=self.policy, period=self.period, now=self.limiter.app.clock.time()
        )
        if not d.allowed:
            body = {"error": "rate limited", "retry_after": _retry(d, self.period)}
            await _send_json(send, 429, body, fields)
            return
        encoded = [(k.lower().encode(), v.encode()) for k, v in fields]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *encoded]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _retry(d: Decision, period: float) -> float:
    return d.retry_after if math.isfinite(d.retry_after) else period


async def _send_json(
    send: Send, status: int, body: dict[str, Any], fields: list[tuple[str, str]]
) -> None:
    raw = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in fields),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


def aiohttp_middleware(
    limiter: RateLimiter,
    *,
    limit: int,
    period: float,
    key: Callable[[Any], str | None] | None = None,
    algorithm: str = "sliding_window",
    name: str = "http",
    policy: str = "default",
    mode: str | None = None,
    fail_open: bool = False,
) -> Any:
    """An aiohttp ``@web.middleware`` doing what :class:`RateLimitMiddleware` does.

    ``key(request)`` defaults to ``request.remote``. A bad ``limit``,
    ``period`` or ``algorithm`` raises :class:`~peer_ring.errors.ConfigError` here.
    """
    from aiohttp import web

    _check(limit, period, algorithm)
    keyf = key or (lambda request: request.remote)

    @web.middleware
    async def ratelimit(request: web.Request, handler: Any) -> web.StreamResponse:
        k = keyf(request)
        if k is None:
            return await handler(request)  # type: ignore[no-any-return]
        try:
            d = await limiter.hit(
                k, limit=limit, period=period, algorithm=algorithm, name=name, mode=mode
            )
        except PeerRingError as exc:
            if fail_open:
                return await handler(request)  # type: ignore[no-any-return]
            return web.json_response({"error": f"rate limiter unavailable: {exc}"}, status=503)
        fields = ratelimit_headers(d, policy=policy, period=period, now=limiter.app.clock.time())
        if not d.allowed:
            body = {"error": "rate limited", "retry_after": _retry(d, period)}
            return web.json_response(body, status=429, headers=dict(fields))
        response: web.StreamResponse = await handler(request)
        for k_, v in fields:
            response.headers[k_] = v
        return response

    return ratelimit
