"""gubernator's HTTP JSON API on the node's ``--http`` server: ``POST /v1/GetRateLimits``.

The body and the answer follow gubernator's grpc-gateway mapping of
``GetRateLimitsReq``/``GetRateLimitsResp`` (protojson): ``{"requests":
[{"name", "unique_key", "hits", "limit", "duration", "algorithm",
"behavior", "burst", "metadata"}]}``; ``duration`` in milliseconds; 64-bit
integers as JSON numbers or decimal strings; ``algorithm`` and ``behavior``
as numbers or names (``"TOKEN_BUCKET"``; ``behavior`` also as
``"GLOBAL,RESET_REMAINING"``). The answer's 64-bit integers are strings and
its enums names, as protojson writes them; ``reset_time`` is epoch
milliseconds. ``metadata.lease`` names the holder for ``CONCURRENCY``.

Bad input answers **400** with ``{"error": ..., "index": i}`` (the first bad
request of the batch; nothing of the batch is counted) -- stricter than
gubernator, which answers a bad item inside a 200 with ``error`` set and
status ``UNDER_LIMIT``. A request whose owner cannot be reached gets
``status: OVER_LIMIT`` and ``error`` set in a 200 (never a silent allow).

It is an application API, like RESP: open unless ``token`` is given
(``--ratelimit-token-file``), then ``POST /v1/GetRateLimits`` needs
``Authorization: Bearer <token>`` (401 without it; ``/v1/HealthCheck``
stays open, like ``/healthz``). The node's admin and metrics tokens do not
apply to it. The HTTP server's limits do: most clients, request timeout,
and bodies of at most :data:`MAX_BODY` (1 MiB, the server's own
``client_max_size``; 413 above it).
"""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from peer_ring.apps.ratelimit import (
    Algorithm,
    Behavior,
    RateLimiter,
    RateLimitRequest,
    RateLimitResponse,
    check_request,
)
from peer_ring.errors import InvalidRequest
from peer_ring.server._http_limits import MAX_BODY, bearer_ok

__all__ = [
    "MAX_BODY",
    "BadBody",
    "ratelimit_routes",
    "request_from_json",
    "requests_from_body",
    "response_to_json",
]

_NS_PER_MS: Final = 1_000_000
_INT64: Final = (1 << 63) - 1


def _decimal(raw: str) -> int | None:
    """An ASCII decimal string as protojson writes int64 (``"-12"``), else
    None: ``str.isdigit`` also accepts ``"²"`` and other scripts' digits,
    which ``int`` refuses or reads, and very long strings ``int`` refuses."""
    if 0 < len(raw) <= 20 and raw.isascii():
        digits = raw[1:] if raw[0] == "-" else raw
        if digits.isdigit():
            return int(raw)
    return None


def _int(d: dict[str, Any], name: str, default: int = 0) -> int:
    raw = d.get(name, default)
    if type(raw) is str:
        number = _decimal(raw)
        if number is not None:
            raw = number
    if type(raw) is not int:
        raise InvalidRequest(f"{name} must be an integer (or a decimal string), got {raw!r:.40}")
    if not -_INT64 - 1 <= raw <= _INT64:
        raise InvalidRequest(f"{name} must fit int64, got {raw}")
    return raw


def _enum_value(raw: Any, enum: type[Algorithm] | type[Behavior], name: str) -> int:
    if type(raw) is int:
        return raw
    if type(raw) is str:
        number = _decimal(raw)
        if number is not None:
            return number
        total = 0
        for part in raw.split(","):
            member = enum.__members__.get(part.strip().upper())
            if member is None:
                known = ", ".join(enum.__members__)
                raise InvalidRequest(f"unknown {name} {part.strip()!r:.40} (known: {known})")
            total |= int(member)
            if enum is Algorithm and "," in raw:
                raise InvalidRequest(f"one algorithm, got {raw!r:.40}")
        return total
    raise InvalidRequest(f"{name} must be a number or a name, got {raw!r:.40}")


def request_from_json(d: Any) -> RateLimitRequest:
    """One gubernator ``RateLimitReq`` in protojson, validated."""
    if type(d) is not dict:
        raise InvalidRequest("each request must be a JSON object")
    unknown = set(d) - {"name", "unique_key", "hits", "limit", "duration", "algorithm",
                        "behavior", "burst", "metadata", "created_at"}  # fmt: skip
    if unknown:
        raise InvalidRequest(f"unknown fields {sorted(unknown)}")
    duration_ms = _int(d, "duration")
    if duration_ms <= 0 or duration_ms > _INT64 // _NS_PER_MS:
        raise InvalidRequest(
            f"duration must be a positive number of milliseconds, got {duration_ms}"
        )
    meta = d.get("metadata") or {}
    if type(meta) is not dict or not all(type(v) is str for v in meta.values()):
        raise InvalidRequest("metadata must be an object of strings")
    return check_request(
        RateLimitRequest(
            name=d.get("name", ""),
            unique_key=d.get("unique_key", ""),
            limit=_int(d, "limit"),
            duration_ns=duration_ms * _NS_PER_MS,
            hits=_int(d, "hits", 0),
            algorithm=_enum_value(d.get("algorithm", 0), Algorithm, "algorithm"),  # type: ignore[arg-type]
            behavior=_enum_value(d.get("behavior", 0), Behavior, "behavior"),  # type: ignore[arg-type]
            burst=_int(d, "burst"),
            lease=meta.get("lease", ""),
        )
    )


def response_to_json(r: RateLimitResponse) -> dict[str, Any]:
    """One gubernator ``RateLimitResp`` in protojson (int64 as strings, enum names)."""
    out: dict[str, Any] = {
        "status": r.status.name,
        "limit": str(r.limit),
        "remaining": str(r.remaining),
        "reset_time": str(r.reset_time_ns // _NS_PER_MS),
        "error": r.error,
        "metadata": {},
    }
    return out


class BadBody(InvalidRequest):
    """A ``GetRateLimits`` body that is not valid; ``index``: the first bad
    request of the batch (None: the body itself is wrong)."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


def requests_from_body(raw: bytes, max_batch: int) -> list[RateLimitRequest]:
    """The validated requests of a ``GetRateLimits`` JSON body; BadBody for
    anything else (a fuzz target: tests/fuzz)."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadBody(f"body is not JSON: {exc}") from None
    if type(body) is not dict or type(body.get("requests")) is not list:
        raise BadBody('expected {"requests": [...]}')
    items = body["requests"]
    if len(items) > max_batch:
        raise BadBody(f"a batch holds at most {max_batch} requests, got {len(items)}")
    reqs = []
    for i, item in enumerate(items):
        try:
            reqs.append(request_from_json(item))
        except InvalidRequest as exc:
            raise BadBody(f"requests[{i}]: {exc}", i) from None
    return reqs


def _bad(message: str, index: int | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message, "code": 3, "message": message}
    if index is not None:
        body["index"] = index
    return web.json_response(body, status=400)


def _too_large() -> web.Response:
    message = f"body larger than {MAX_BODY} bytes"
    return web.json_response({"error": message, "code": 3, "message": message}, status=413)


def ratelimit_routes(limiter: RateLimiter, token: str | None = None) -> list[web.RouteDef]:
    """Routes to add to the node's HTTP app before it starts; ``token``: the
    bearer token ``GetRateLimits`` needs (None: open, see the module)."""
    tokens = [token] if token else []

    async def get_rate_limits(request: web.Request) -> web.Response:
        if tokens and not bearer_ok(request, tokens):  # before reading any body
            return web.json_response(
                {"error": "GetRateLimits needs Authorization: Bearer <token>",
                 "code": 16, "message": "unauthenticated"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="peer-ring"'},
            )  # fmt: skip
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _too_large()
        try:  # the whole body (content.read(n) may return the first segment only),
            raw = await request.read()  # at most the server's client_max_size (MAX_BODY)
        except web.HTTPRequestEntityTooLarge:
            return _too_large()
        try:
            reqs = requests_from_body(raw, limiter.config.max_batch)
        except BadBody as exc:
            return _bad(str(exc), exc.index)
        answers = await limiter.hit_many(reqs)
        return web.json_response({"responses": [response_to_json(a) for a in answers]})

    async def health_check(request: web.Request) -> web.Response:
        members = limiter.app.owners(0, limiter.app.replicas)
        return web.json_response(
            {"status": "healthy", "message": "", "peer_count": len(set(members))}
        )

    return [
        web.post("/v1/GetRateLimits", get_rate_limits),
        web.get("/v1/HealthCheck", health_check),
    ]
