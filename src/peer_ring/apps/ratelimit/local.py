"""A single-process rate limiter: the reference the distributed one calls.

:class:`LocalLimiter` keeps one replicated state (``_merge.Replica``) per key
in a ``dict`` and answers :class:`RateLimitRequest` s from it: the decision a
key's owner makes. No asyncio, no I/O; the time comes from the ``now``
callable given to it (wall-clock seconds, e.g. ``time.time`` or a test
clock's ``time``).

Invariants:

* Every request is validated first (:class:`~peer_ring.errors.InvalidRequest`);
  a bad one changes nothing.
* A peek (``hits == 0``) never writes; every other request writes one slot
  under this limiter's ``actor`` id, unless it changed nothing (a refusal
  that took nothing: a full window, an empty bucket, no drain), which writes
  nothing -- the stored replica object stays the same, so a caller can tell
  by identity whether there is anything to copy.
* :meth:`export` / :meth:`absorb` move a key's replicated state in and out
  (handoff, copies to the other owners); :meth:`absorb` joins with what is
  there (``_merge.merge``), so it never forgets a hit, in any order, any
  number of times.
* Methods never suspend and are not thread-safe: call them from one thread
  (the event loop's), where each call is atomic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from peer_ring.app import InvalidRequest
from peer_ring.apps.ratelimit._algorithms import (
    State,
    available,
    capacity_of,
    cl_throttle,
    convert,
    decide,
    force,
    fresh,
)
from peer_ring.apps.ratelimit._merge import Replica, decode_replica, effective, merge, record
from peer_ring.apps.ratelimit._types import (
    NS_PER_S,
    RateLimitRequest,
    RateLimitResponse,
    Status,
    check_request,
)

__all__ = ["MAX_BATCH", "LocalLimiter"]

#: Most requests one :meth:`LocalLimiter.hit_many` call takes.
MAX_BATCH = 1000


class LocalLimiter:
    """Dict-backed limiter. ``now`` returns wall-clock seconds (float).

    ``actor`` names this limiter in replicated states; give each node
    incarnation its own (node id plus a boot counter), never reuse one
    across a restart that lost the state.
    """

    def __init__(self, now: Callable[[], float] = time.time, *, actor: str = "local") -> None:
        if not actor or type(actor) is not str:
            raise InvalidRequest("actor must be a non-empty string")
        self._now = now
        self._actor = actor
        self._keys: dict[str, Replica] = {}

    @property
    def actor(self) -> str:
        return self._actor

    def now_ns(self) -> int:
        """The clock's reading in integer nanoseconds."""
        return round(self._now() * NS_PER_S)

    def hit(self, req: RateLimitRequest, *, now_ns: int | None = None) -> RateLimitResponse:
        """Decide ``req`` (validated first) at the clock's time or ``now_ns``."""
        return self.hit_checked(check_request(req), now_ns=now_ns)

    def hit_checked(self, req: RateLimitRequest, *, now_ns: int | None = None) -> RateLimitResponse:
        """:meth:`hit` for a request that passed ``check_request`` (normalized)."""
        now = self.now_ns() if now_ns is None else now_ns
        key = req.key
        replica = self._keys.get(key, ())
        state = effective(replica, now)
        new, resp = decide(state, req, now)
        if new is not state and new is not None:
            admitted = req.hits if req.hits > 0 and resp.status is Status.UNDER_LIMIT else 0
            if admitted or len(replica) != 1 or new != state:
                self._keys[key] = record(replica, self._actor, new, admitted)
            # else: a decision that changed nothing (a refusal within the same
            # window, say) writes nothing: no slot, nothing for the copies
        return resp

    def count(self, req: RateLimitRequest, hits: int, *, now_ns: int | None = None) -> None:
        """Count ``hits`` (>= 0) that were admitted elsewhere (a node deciding
        from a cached copy, ``global`` mode) whatever the limit says."""
        req = check_request(req)
        if hits < 0:
            raise InvalidRequest(f"counted hits cannot be negative: {hits}")
        if hits == 0:
            return
        now = self.now_ns() if now_ns is None else now_ns
        key = req.key
        replica = self._keys.get(key, ())
        state = effective(replica, now)
        current = fresh(req, now) if state is None else convert(state, req, now)
        self._keys[key] = record(replica, self._actor, force(current, hits, now), hits)

    def state(self, key: str, *, now_ns: int | None = None) -> State | None:
        """The state ``key`` is decided from now (None: nothing counted)."""
        now = self.now_ns() if now_ns is None else now_ns
        return effective(self._keys.get(key, ()), now)

    def throttle(
        self,
        key: str,
        max_burst: int,
        count: int,
        period_s: int,
        quantity: int = 1,
        *,
        now_ns: int | None = None,
    ) -> tuple[int, int, int, int, int]:
        """redis-cell's ``CL.THROTTLE key max_burst count period [quantity]``.

        The counter is stored as ``cl_<key>``: a gubernator-shaped GCRA
        request with name ``cl`` and the same limit shares it. Returns
        redis-cell's reply (see ``_algorithms.cl_throttle``); bad arguments
        raise :class:`InvalidRequest` and change nothing.
        """
        now = self.now_ns() if now_ns is None else now_ns
        name = f"cl_{key}"
        replica = self._keys.get(name, ())
        state = effective(replica, now)
        new, reply = cl_throttle(state, max_burst, count, period_s, quantity, now)
        if new is not state and new is not None:
            admitted = quantity if quantity > 0 and reply[0] == 0 else 0
            self._keys[name] = record(replica, self._actor, new, admitted)
        return reply

    def hit_many(self, reqs: Iterable[RateLimitRequest]) -> list[RateLimitResponse]:
        """Decide each request in order at one clock reading.

        A request that fails validation gets a response whose ``error`` says
        why (the others are still decided), as gubernator answers a batch.
        More than :data:`MAX_BATCH` requests raise :class:`InvalidRequest`.
        """
        batch = list(reqs)
        if len(batch) > MAX_BATCH:
            raise InvalidRequest(f"a batch holds at most {MAX_BATCH} requests, got {len(batch)}")
        now = self.now_ns()
        out: list[RateLimitResponse] = []
        for req in batch:
            try:
                out.append(self.hit(req, now_ns=now))
            except InvalidRequest as exc:
                out.append(RateLimitResponse(Status.OVER_LIMIT, 0, 0, 0, 0, error=str(exc)))
        return out

    # --- state in and out (handoff, replication) ----------------------------

    def export(self, key: str) -> Replica | None:
        """The replicated state of ``key`` (msgpack-encodable), or None."""
        return self._keys.get(key)

    def absorb(self, key: str, replica: object) -> None:
        """Join a copy of ``key``'s state (checked first) into this limiter's."""
        incoming = decode_replica(replica)
        if not incoming:
            return
        self._keys[key] = merge(self._keys.get(key, ()), incoming)

    def keys(self) -> Iterator[str]:
        return iter(tuple(self._keys))

    def __len__(self) -> int:
        return len(self._keys)

    def sweep(self, *, now_ns: int | None = None) -> int:
        """Forget keys that are back to full (their state then equals none).

        For a limiter that is the only copy of its keys: a key dropped here
        is rebuilt from scratch, so a replicated owner must not sweep a key
        whose copies elsewhere could come back. Returns how many were dropped.
        """
        now = self.now_ns() if now_ns is None else now_ns
        gone = []
        for key, replica in self._keys.items():
            state = effective(replica, now)
            if state is not None and available(state, now) >= capacity_of(state):
                gone.append(key)
        for key in gone:
            del self._keys[key]
        return len(gone)
