"""The rate limiter's gRPC APIs on ``peer-ring node --grpc HOST:PORT``.

* gubernator's ``pb.gubernator.V1``: ``GetRateLimits`` and ``HealthCheck``
  (``protos/gubernator.proto``: gubernator's package, messages and field
  numbers, so an existing gubernator client works unchanged).
* Envoy's ``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit``
  (``protos/envoy/service/ratelimit/v3/rls.proto``), answered from the
  node's named limits (``--ratelimit-limits``, Envoy-style descriptors).

Served with ``grpc.aio`` and generic method handlers over the generated
message classes (``protos/*_pb2.py``, committed; ``make protos``
regenerates them). Bad input is answered ``INVALID_ARGUMENT`` with a message
naming the field -- a whole batch is refused when one of its requests is bad,
so nothing is counted for it. A request whose owner could not be reached
gets ``status = OVER_LIMIT`` with ``error`` set inside a successful
``GetRateLimits`` (as gubernator answers per request), and
``UNAVAILABLE`` from ``ShouldRateLimit``: never a silent allow.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
import grpc.aio

from peer_ring.apps.ratelimit import (
    DescriptorLimit,
    RateLimiter,
    RateLimitRequest,
    RateLimitResponse,
    check_request,
)
from peer_ring.apps.ratelimit.descriptors import UNITS
from peer_ring.errors import ConfigError, InvalidRequest, PeerRingError
from peer_ring.server.grpc_api.protos import gubernator_pb2 as gpb
from peer_ring.server.grpc_api.protos.envoy.service.ratelimit.v3 import rls_pb2 as rls

__all__ = ["GUBERNATOR_SERVICE", "RLS_SERVICE", "RateLimitGrpcServer"]

log = logging.getLogger(__name__)

GUBERNATOR_SERVICE: Final = "pb.gubernator.V1"
RLS_SERVICE: Final = "envoy.service.ratelimit.v3.RateLimitService"
_NS_PER_MS: Final = 1_000_000
_INT64_MAX: Final = (1 << 63) - 1
_UNIT_NAMES: Final = {number: name for name, (number, _) in UNITS.items()}


def request_from_proto(m: Any) -> RateLimitRequest:
    """One ``pb.gubernator.RateLimitReq``, validated (:class:`InvalidRequest`)."""
    if m.duration <= 0 or m.duration > _INT64_MAX // _NS_PER_MS:
        raise InvalidRequest(
            f"duration must be a positive number of milliseconds, got {m.duration}"
        )
    return check_request(
        RateLimitRequest(
            name=m.name,
            unique_key=m.unique_key,
            limit=m.limit,
            duration_ns=m.duration * _NS_PER_MS,
            hits=m.hits,
            algorithm=int(m.algorithm),  # type: ignore[arg-type]  # checked as an Algorithm
            behavior=int(m.behavior),  # type: ignore[arg-type]  # checked as Behavior flags
            burst=m.burst,
            lease=m.metadata.get("lease", ""),
        )
    )


def response_to_proto(r: RateLimitResponse) -> Any:
    return gpb.RateLimitResp(
        status=r.status.name,
        limit=r.limit,
        remaining=r.remaining,
        reset_time=r.reset_time_ns // _NS_PER_MS,
        error=r.error,
    )


class RateLimitGrpcServer:
    """gubernator's and Envoy's rate-limit APIs for one node's :class:`RateLimiter`."""

    def __init__(self, limiter: RateLimiter, host: str, port: int) -> None:
        self.limiter = limiter
        self.host = host
        self.port = port
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    GUBERNATOR_SERVICE,
                    {
                        "GetRateLimits": _unary(
                            self._get_rate_limits, gpb.GetRateLimitsReq, gpb.GetRateLimitsResp
                        ),
                        "HealthCheck": _unary(
                            self._health_check, gpb.HealthCheckReq, gpb.HealthCheckResp
                        ),
                    },
                ),
                grpc.method_handlers_generic_handler(
                    RLS_SERVICE,
                    {
                        "ShouldRateLimit": _unary(
                            self._should_rate_limit, rls.RateLimitRequest, rls.RateLimitResponse
                        )
                    },
                ),
            )
        )
        port = server.add_insecure_port(f"{self.host}:{self.port}")
        if port == 0:
            raise ConfigError(f"cannot serve gRPC on {self.host}:{self.port}")
        self.port = port
        await server.start()
        self._server = server

    async def close(self, grace: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    # -- gubernator -------------------------------------------------------------------
    async def _get_rate_limits(self, req: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
        items = req.requests
        limit = self.limiter.config.max_batch
        if len(items) > limit:
            await ctx.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Requests.RateLimits list too large; max size is '{limit}', got {len(items)}",
            )
        reqs = []
        for i, item in enumerate(items):
            try:
                reqs.append(request_from_proto(item))
            except InvalidRequest as exc:
                await ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, f"requests[{i}]: {exc}")
        answers = await self.limiter.hit_many(reqs)
        return gpb.GetRateLimitsResp(responses=[response_to_proto(a) for a in answers])

    async def _health_check(self, req: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
        app = self.limiter.app
        return gpb.HealthCheckResp(
            status="healthy",
            peer_count=len(set(app.owners(0, app.partitions))),
            advertise_address=f"{self.host}:{self.port}",
        )

    # -- Envoy --------------------------------------------------------------------------
    async def _should_rate_limit(self, req: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
        descriptors = []
        overrides: list[DescriptorLimit | None] = []
        for i, d in enumerate(req.descriptors):
            if not d.entries:
                await ctx.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"descriptors[{i}] has no entries"
                )
            descriptors.append([(e.key, e.value) for e in d.entries])
            over = None
            if d.HasField("limit"):
                unit = _UNIT_NAMES.get(int(d.limit.unit))
                if unit is None or d.limit.requests_per_unit == 0:
                    await ctx.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"descriptors[{i}].limit needs a known unit and requests_per_unit > 0",
                    )
                    raise AssertionError("unreachable")  # abort raises
                over = DescriptorLimit("override", unit, d.limit.requests_per_unit)
            overrides.append(over)
        try:
            ok, statuses = await self.limiter.should_rate_limit(
                req.domain, descriptors, req.hits_addend or 1, overrides
            )
        except InvalidRequest as exc:
            await ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from exc
        except PeerRingError as exc:
            await ctx.abort(grpc.StatusCode.UNAVAILABLE, f"{type(exc).__name__}: {exc}")
            raise AssertionError("unreachable") from exc
        out = rls.RateLimitResponse(
            overall_code=rls.RateLimitResponse.OK if ok else rls.RateLimitResponse.OVER_LIMIT
        )
        for st in statuses:
            status = out.statuses.add()
            status.code = rls.RateLimitResponse.OK if st.ok else rls.RateLimitResponse.OVER_LIMIT
            if st.limit is not None and not st.limit.unlimited:
                status.current_limit.name = st.limit.name
                status.current_limit.requests_per_unit = st.limit.requests_per_unit
                status.current_limit.unit = st.limit.unit_number
                status.limit_remaining = min(st.remaining, 0xFFFFFFFF)
                status.duration_until_reset.FromNanoseconds(round(st.reset_after * 1e9))
        return out


def _unary(
    fn: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]],
    request_type: Any,
    response_type: Any,
) -> grpc.RpcMethodHandler:
    async def handler(req: Any, ctx: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await fn(req, ctx)
        except InvalidRequest as exc:
            await ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except PeerRingError as exc:
            await ctx.abort(grpc.StatusCode.UNAVAILABLE, f"{type(exc).__name__}: {exc}")

    return grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=request_type.FromString,
        response_serializer=response_type.SerializeToString,
    )
