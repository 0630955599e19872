"""``lease`` and ``global`` modes: deciding without a network hop per request.

Both sit on top of ``exact`` mode's machinery (the owner's replicated state,
its copies and takeover); they change only where a request is answered.

**lease** (hot keys). A node asks the key's owner for a *slice* of the
remaining quota (``grant``): the owner counts the slice as consumed, exactly
as if the hits had passed, and the node then admits up to the slice locally,
with no network hop. When the slice runs out the node asks again, handing
back in the same message what it did not use; a slice also ends after
``lease_ttl`` and, for the window algorithms, with the window it was taken
in (a hit counted in one window must not be admitted in the next), and its
unused hits go back then (``release``). Because every admitted hit was
counted at the owner first, lease mode never over-admits without a failure;
a node that dies holding a slice only *under*-admits (its unused hits stay
counted until the window or the bucket refills). The owner's crash loses the
grants since its last copy: at most ``max_unreplicated`` grants, so at most
``max_unreplicated x lease_max_slice`` hits. A refused request blocks the
key on that node until its ``retry_after`` (answered locally meanwhile).

Fairness: a slice is at most ``limit / lease_fraction`` hits, so one node
cannot take the whole limit in one grant; a node that took a slice it does
not use keeps those hits from the others until it hands them back (at most
``lease_ttl``).

**global** (gubernator's ``GLOBAL`` behaviour). A node that is not the key's
owner answers from its cached copy of the owner's state, counting the hits
it admits; every ``global_sync_interval`` it sends them to the owner
(``gdecide``: counted there whatever the limit says, because they were
admitted already) and gets the owner's state back. The owner itself decides
exactly. Error bound: between two syncs each of the ``n - 1`` other nodes
may admit what its copy shows as remaining, so a window can over-admit by up
to ``(n - 1) x L`` in the worst case (every node with a fresh copy, bursts
arriving everywhere within one sync interval); with traffic spread evenly
and copies refreshed every interval the error is about ``(n - 1) x`` the
hits one node admits per interval. This is gubernator's trade-off, kept for
compatibility; use ``lease`` for a bounded one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from peer_ring.app import AppContext, ClosedError, InvalidRequest, PeerRingError
from peer_ring.apps.ratelimit._algorithms import State, decide, decode_state, force
from peer_ring.apps.ratelimit._config import RateLimiterConfig
from peer_ring.apps.ratelimit._types import (
    INT64_MAX,
    NS_PER_S,
    Algorithm,
    Behavior,
    RateLimitRequest,
    RateLimitResponse,
    Status,
)
from peer_ring.apps.ratelimit.local import LocalLimiter

__all__ = ["GlobalClient", "LeaseClient", "op_gdecide", "op_grant", "op_release", "sig"]

log = logging.getLogger(__name__)

_WINDOWS: Final = (Algorithm.FIXED_WINDOW, Algorithm.SLIDING_WINDOW)


class RateLimiter(Protocol):
    """What the mode clients use of :class:`~peer_ring.apps.ratelimit.RateLimiter`."""

    @property
    def app(self) -> AppContext: ...

    config: RateLimiterConfig

    async def decide_exact(self, req: RateLimitRequest) -> RateLimitResponse: ...

    async def route_key(self, key: bytes, command: str, payload: Any) -> Any: ...

    def wire(self, req: RateLimitRequest) -> list[Any]: ...

    def primary_of(self, key: bytes) -> str | None: ...


def _wire(r: RateLimitResponse) -> list[int]:
    return [int(r.status), r.limit, r.remaining, r.reset_time_ns, r.retry_after_ns]


def _unwire(raw: Any) -> RateLimitResponse:
    if type(raw) is not list or len(raw) != 5 or not all(type(x) is int for x in raw):
        raise InvalidRequest(f"bad rate-limit answer from the owner: {raw!r:.80}")
    return RateLimitResponse(Status(raw[0]), raw[1], raw[2], raw[3], raw[4])


def _window_end(req: RateLimitRequest, now: int) -> int:
    return now - now % req.duration_ns + req.duration_ns


# -- owner side (run through RateLimiter._run: pulls, copies, the crash bound) --------


def op_grant(
    req: RateLimitRequest,
    need: int,
    want: int,
    refund: int,
    refund_until: int,
    lease_ttl_ns: int,
    part: LocalLimiter,
    name: str,
) -> tuple[Any, bool, bool]:
    """Hand back ``refund`` (if still in time), then grant ``need`` to ``want``
    hits as one consumed slice: ``[granted, response, use_until, refund_until]``."""
    now = part.now_ns()
    wrote = False
    if refund > 0 and now < refund_until:
        part.hit(replace(req, hits=-refund), now_ns=now)
        wrote = True
    room = part.hit(replace(req, hits=0), now_ns=now).remaining
    take = need if room < need else max(need, min(want, room))
    resp = part.hit(replace(req, hits=take), now_ns=now)
    granted = take if resp.allowed else 0
    wrote = wrote or granted > 0 or bool(req.behavior & Behavior.DRAIN_OVER_LIMIT)
    if req.algorithm in _WINDOWS:
        end = _window_end(req, now)
        use_until, back_until = min(end, now + lease_ttl_ns), end
    else:
        use_until, back_until = now + lease_ttl_ns, INT64_MAX
    return [granted, _wire(resp), use_until, back_until], wrote, not resp.allowed


def op_release(
    req: RateLimitRequest, refund_until: int, part: LocalLimiter, name: str
) -> tuple[Any, bool, bool]:
    """Take back a slice's unused hits (``req.hits`` < 0) while still in time."""
    now = part.now_ns()
    if req.hits >= 0 or now >= refund_until:
        return False, False, False
    part.hit(req, now_ns=now)
    return True, True, False


def op_gdecide(
    req: RateLimitRequest, counted: int, part: LocalLimiter, name: str
) -> tuple[Any, bool, bool]:
    """Count ``counted`` hits another node admitted, decide ``req``, answer
    ``[response, state]`` (the state for the node's cache)."""
    now = part.now_ns()
    part.count(req, counted, now_ns=now)
    resp = part.hit(req, now_ns=now)
    state = part.state(name, now_ns=now)
    wrote = counted > 0 or req.hits != 0
    return [_wire(resp), state], wrote, not resp.allowed


# -- client side --------------------------------------------------------------------------


@dataclass(slots=True)
class _Slice:
    sig: tuple[int, int, int, int, int]
    left: int
    use_until: int
    refund_until: int
    owner_remaining: int
    limit: int
    reset_ns: int
    blocked_until: int = 0
    blocked_resp: RateLimitResponse | None = None


#: Flags that choose the route, not the count: requests differing only in
#: them share a slice or a cached copy.
_ROUTING: Final = int(Behavior.GLOBAL | Behavior.NO_BATCHING | Behavior.MULTI_REGION)


#: Flags a lease cannot apply locally: such requests are decided at the owner.
_AT_OWNER: Final = int(Behavior.RESET_REMAINING | Behavior.DRAIN_OVER_LIMIT)


def sig(
    limit: int, duration_ns: int, algorithm: int, burst: int, behavior: int
) -> tuple[int, int, int, int, int]:
    """What a slice is for: requests with the same signature share it."""
    return (limit, duration_ns, int(algorithm), burst, int(behavior) & ~_ROUTING)


def _sig(req: RateLimitRequest) -> tuple[int, int, int, int, int]:
    return sig(req.limit, req.duration_ns, req.algorithm, req.burst, req.behavior)


class LeaseClient:
    """A node's quota slices (see the module docstring)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._lim = limiter
        self._slices: dict[str, _Slice] = {}
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._time: Callable[[], float] | None = None
        self.stats = {"local": 0, "grants": 0, "granted_hits": 0, "returned_hits": 0}
        #: set when a slice is taken: :meth:`run` ticks only while slices are held
        self._held = asyncio.Event()
        #: ticks of :meth:`run` so far (none while no slice is held)
        self.ticks = 0

    def _now(self) -> int:
        clock = self._time
        if clock is None:
            clock = self._time = self._lim.app.clock.time
        return round(clock() * NS_PER_S)

    def try_local(self, req: RateLimitRequest) -> RateLimitResponse | None:
        """The answer from this node's slice, or None when the owner must be asked."""
        return self.local(req.key, _sig(req), req.hits)

    def local(
        self, key: str, sig: tuple[int, int, int, int, int], hits: int
    ) -> RateLimitResponse | None:
        """:meth:`try_local` for a request given by its key, :func:`sig` and
        hits (> 0): the embedded client's hot path, no request object built."""
        s = self._slices.get(key)
        if s is None or s.sig != sig:
            return None
        now = self._now()
        if now < s.blocked_until:
            b = s.blocked_resp
            if b is not None:
                return RateLimitResponse(
                    b.status, b.limit, b.remaining, b.reset_time_ns, s.blocked_until - now, b.error
                )
        if now < s.use_until and s.left >= hits:
            s.left -= hits
            self.stats["local"] += 1
            return RateLimitResponse(
                Status.UNDER_LIMIT, s.limit, s.owner_remaining + s.left, s.reset_ns
            )
        return None

    async def hit(self, req: RateLimitRequest) -> RateLimitResponse:
        if req.hits <= 0 or req.algorithm is Algorithm.CONCURRENCY or int(req.behavior) & _AT_OWNER:
            return await self._lim.decide_exact(req)  # peeks, refunds and flags: at the owner
        for _ in range(3):
            got = self.try_local(req)
            if got is not None:
                return got
            waiting = self._inflight.get(req.key)
            if waiting is None:
                return await self._grant(req)
            await waiting
        return await self._grant(req)

    async def _grant(self, req: RateLimitRequest) -> RateLimitResponse:
        lim = self._lim
        fut: asyncio.Future[None] = lim.app.create_future()
        self._inflight[req.key] = fut
        try:
            old = self._slices.pop(req.key, None)
            refund, refund_until = 0, 0
            if old is not None and old.sig == _sig(req) and old.left > 0:
                refund, refund_until = old.left, old.refund_until
            cfg = lim.config
            want = max(req.hits, min(cfg.lease_max_slice, req.limit // cfg.lease_fraction))
            ttl_ns = round(cfg.lease_ttl * NS_PER_S)
            raw = await lim.route_key(
                req.key.encode(),
                "grant",
                [lim.wire(req), req.hits, want, refund, refund_until, ttl_ns],
            )
            if type(raw) is not list or len(raw) != 4:
                raise InvalidRequest(f"bad grant from the owner: {raw!r:.80}")
            granted, resp_raw, use_until, back_until = raw
            resp = _unwire(resp_raw)
            self.stats["grants"] += 1
            self.stats["returned_hits"] += refund
            now = self._now()
            if not granted:
                blocked = now + resp.retry_after_ns if resp.retry_after_ns > 0 else 0
                self._slices[req.key] = _Slice(
                    _sig(req), 0, 0, 0, 0, resp.limit, resp.reset_time_ns, blocked, resp
                )
                self._held.set()
                return resp
            self.stats["granted_hits"] += granted
            left = granted - req.hits
            local_end = now + ttl_ns  # our own clock bounds the slice too
            self._slices[req.key] = _Slice(
                _sig(req), left, min(use_until, local_end), back_until, resp.remaining,
                resp.limit, resp.reset_time_ns,
            )  # fmt: skip
            self._held.set()
            return RateLimitResponse(
                Status.UNDER_LIMIT, resp.limit, resp.remaining + left, resp.reset_time_ns
            )
        finally:
            del self._inflight[req.key]
            fut.set_result(None)

    async def run(self) -> None:
        """Background task: hand back what ended slices did not use, every
        ``lease_ttl / 2`` (the node's clock) while slices are held; with none
        it waits for the next grant (an idle node does no work here)."""
        lim = self._lim
        clock = lim.app.clock
        while True:
            if not self._slices:
                self._held.clear()
                await self._held.wait()
            await clock.sleep(lim.config.lease_ttl / 2)
            self.ticks += 1
            now = self._now()
            for key, s in list(self._slices.items()):
                if now < s.use_until or key in self._inflight:
                    continue
                if now >= max(s.use_until, s.blocked_until):
                    del self._slices[key]
                if s.left > 0 and now < s.refund_until:
                    await self._release(key, s)

    async def _release(self, key: str, s: _Slice) -> None:
        lim = self._lim
        limit, dur, alg, burst, beh = s.sig
        name, _, unique = key.partition("_")
        req = RateLimitRequest(name, unique, limit, dur, -s.left, Algorithm(alg),
                               Behavior(beh), burst)  # fmt: skip
        try:
            await lim.route_key(key.encode(), "release", [lim.wire(req), s.refund_until])
            self.stats["returned_hits"] += s.left
        except ClosedError:
            raise
        except PeerRingError as exc:
            log.debug("ratelimit: returning %d hits of %r failed: %s", s.left, key, exc)

    def close_all(self) -> None:
        self._slices.clear()


@dataclass(slots=True)
class _Cached:
    req: RateLimitRequest
    state: State | None
    pending: int
    used: bool


class GlobalClient:
    """A node's cached copies of keys it does not own (see the module docstring)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._lim = limiter
        self._cache: dict[str, _Cached] = {}
        self.stats = {"local": 0, "syncs": 0, "sync_failures": 0}
        #: set when a key is cached: :meth:`run` ticks only while copies are held
        self._held = asyncio.Event()
        #: ticks of :meth:`run` so far (none while nothing is cached)
        self.ticks = 0

    def _now(self) -> int:
        return round(self._lim.app.clock.time() * NS_PER_S)

    async def hit(self, req: RateLimitRequest) -> RateLimitResponse:
        lim = self._lim
        if lim.primary_of(req.key.encode()) == lim.app.node_id or req.hits < 0:
            return await lim.decide_exact(req)
        entry = self._cache.get(req.key)
        if entry is None or _sig(entry.req) != _sig(req) or entry.state is None:
            raw = await lim.route_key(req.key.encode(), "gdecide", [lim.wire(req), 0])
            resp, state = self._unpack(raw)
            self._cache[req.key] = _Cached(req, state, 0, True)
            self._held.set()
            return resp
        now = self._now()
        new, resp = decide(entry.state, req, now)
        entry.used = True
        if new is not None and new is not entry.state:
            entry.state = new
            if resp.allowed and req.hits > 0:
                entry.pending += req.hits
        self.stats["local"] += 1
        return resp

    @staticmethod
    def _unpack(raw: Any) -> tuple[RateLimitResponse, State | None]:
        if type(raw) is not list or len(raw) != 2:
            raise InvalidRequest(f"bad global answer from the owner: {raw!r:.80}")
        return _unwire(raw[0]), None if raw[1] is None else decode_state(raw[1])

    async def run(self) -> None:
        """Background task: send admitted hits to the owners and refresh the
        copies, every ``global_sync_interval`` (the node's clock) while copies
        are cached; with none it waits for the next (an idle node does no work
        here: this ran 20 times a second on every node before)."""
        lim = self._lim
        clock = lim.app.clock
        while True:
            if not self._cache:
                self._held.clear()
                await self._held.wait()
            await clock.sleep(lim.config.global_sync_interval)
            self.ticks += 1
            for key, entry in list(self._cache.items()):
                if not entry.used and not entry.pending:
                    del self._cache[key]  # idle for a whole interval: forget it
                    continue
                entry.used = False
                sent = entry.pending
                peek = replace(entry.req, hits=0, behavior=Behavior.BATCHING)
                try:
                    raw = await lim.route_key(key.encode(), "gdecide", [lim.wire(peek), sent])
                    _, state = self._unpack(raw)
                except ClosedError:
                    return
                except PeerRingError as exc:
                    self.stats["sync_failures"] += 1
                    log.debug("ratelimit: global sync of %r failed: %s", key, exc)
                    continue
                self.stats["syncs"] += 1
                entry.pending -= sent
                if state is not None and entry.pending:
                    with contextlib.suppress(ValueError):
                        state = force(state, entry.pending, self._now())
                entry.state = state
