"""The distributed rate limiter: ``exact`` mode, decided at each key's owner.

Built on the public app API only (``peer_ring.app``). Register one per node::

    limiter = node.register(RateLimiter())
    d = await limiter.hit("user:42", limit=100, period=60)
    if not d.allowed: ...  # d.retry_after seconds

**Where a key is decided.** Every node routes a key to the first *live*
owner of its partition in preference order (the same node everywhere while
views agree), which decides from its replicated state of the key
(``_merge.Replica``) with the pure algorithms (``_algorithms``), stamped
with the owner's wall clock in integer nanoseconds. Forwarded decisions
carry the sender's ring epoch: a node whose ring disagrees and that does
not own the partition answers ``RingMismatch`` and the sender tries the
next owner, so an old and a new owner do not both decide from partial
state because of a stale view. A node that is still syncing a partition
after a (re)start refuses decisions for it (``fresh_refused_commands``),
and the sender moves on to the next owner.

**Copies and the crash bound.** After deciding, the owner marks the key and
copies its state to the key's other owners once ``copy_every`` decisions
wait or ``copy_interval`` passed; decisions wait while
``max_unreplicated`` of them are unacknowledged (``RateLimiterConfig``
states the bound: a kill -9 of an owner forgets at most that many
decisions' hits). A copy is *joined* into the receiver's state
(``_merge.merge``), never overwritten.

**Taking a key over.** An owner that has no state for a key asks the key's
other live owners for theirs before its first decision (one round trip per
key, then local) and joins them, so a new owner after a crash, a join or a
decommission starts from the last copy, never from full. When no other
owner answers and this node is not the key's primary owner, the key is
*rebuilt* from nothing: counted in ``counters_rebuilt`` (a metric and a log
line), the only way the limiter can forget hits without a crash bound.

**Moving with partitions.** ``export_partition``/``import_records`` move
keys as replicated states, joined on arrival (never reset to full); the
digest lets anti-entropy repair copies that missed an update.

Failure answers: a decision whose outcome is unknown (the owner timed out)
raises :class:`~peer_ring.errors.RequestTimeout` -- the surfaces turn it
into an error, never an allow. A request that never reached an owner
tries the next one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import msgpack

from peer_ring.app import (
    AppContext,
    ClosedError,
    InvalidRequest,
    Metric,
    NotOwner,
    PeerRingError,
    PeerUnavailable,
    Record,
    Request,
    RingMismatch,
    Service,
    UnknownCommand,
)
from peer_ring.apps.ratelimit import _modes
from peer_ring.apps.ratelimit._algorithms import cl_throttle
from peer_ring.apps.ratelimit._config import RateLimiterConfig
from peer_ring.apps.ratelimit._types import (
    INT64_MAX,
    MAX_NAME_LEN,
    NS_PER_S,
    Algorithm,
    Behavior,
    RateLimitRequest,
    RateLimitResponse,
    Status,
    check_limit,
    check_request,
)
from peer_ring.apps.ratelimit.descriptors import DescriptorLimit, Limits, Match
from peer_ring.apps.ratelimit.local import LocalLimiter

__all__ = [
    "Decision",
    "DescriptorStatus",
    "RateLimited",
    "RateLimiter",
    "RateLimiterConfig",
    "request_from_wire",
    "request_to_wire",
]

log = logging.getLogger(__name__)

_ALG_NAMES: Final = {a.name.lower(): a for a in Algorithm}
_GLOBAL: Final = int(Behavior.GLOBAL)
_CONCURRENCY: Final = int(Algorithm.CONCURRENCY)
_RESET: Final = int(Behavior.RESET_REMAINING)
#: Copy rounds in flight at once (see RateLimiter._copier).
_MAX_ROUNDS: Final = 4
#: Errors after which a forwarded decision certainly did not run: try the next owner.
_RETRY: Final = (PeerUnavailable, RingMismatch, NotOwner)


class RateLimited(PeerRingError):
    """Raised by :meth:`RateLimiter.concurrency` when no slot is free.

    ``decision`` says when to retry. Not raised by :meth:`RateLimiter.hit`,
    which answers a refusal as a :class:`Decision` with ``allowed`` False.
    """

    code = "RATE_LIMITED"

    def __init__(self, decision: Decision) -> None:
        super().__init__(
            f"rate limited: {decision.remaining} of {decision.limit} left,"
            f" retry after {decision.retry_after:.3f} s"
        )
        self.decision = decision


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to :meth:`RateLimiter.hit`.

    ``reset_at`` is the wall-clock instant (seconds since the epoch) at
    which the key is back to full if nothing more is hit; ``retry_after``
    seconds until the same request would pass (0 when allowed, ``inf`` when
    it never can: more hits than the limit holds). ``response`` is the raw
    gubernator-shaped answer (integer nanoseconds).
    """

    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    retry_after: float
    response: RateLimitResponse

    @classmethod
    def of(cls, resp: RateLimitResponse) -> Decision:
        retry = resp.retry_after_ns
        return cls(
            resp.allowed,
            resp.limit,
            resp.remaining,
            resp.reset_time_ns / NS_PER_S,
            math.inf if retry < 0 else retry / NS_PER_S,
            resp,
        )


@dataclass(frozen=True, slots=True)
class DescriptorStatus:
    """One descriptor's answer in :meth:`RateLimiter.should_rate_limit` (Envoy's shape).

    ``limit`` is None when no configured limit applies (always OK).
    """

    ok: bool
    limit: Any  # DescriptorLimit | None
    remaining: int
    reset_after: float
    shadowed: bool = False


def request_to_wire(req: RateLimitRequest) -> list[Any]:
    """``req`` as a msgpack-encodable list (the forwarded decision's payload)."""
    return [
        req.name,
        req.unique_key,
        req.limit,
        req.duration_ns,
        req.hits,
        int(req.algorithm),
        int(req.behavior),
        req.burst,
        req.lease,
    ]


#: Limits seen in requests off the wire, validated: (name, limit, duration,
#: algorithm, behavior, burst), all exact ints and a str -> the enums. Bounded.
_WIRE_SPECS: dict[tuple[str, int, int, int, int, int], tuple[Algorithm, Behavior]] = {}


def request_from_wire(raw: object) -> RateLimitRequest:
    """A request from the network, validated (:class:`InvalidRequest` if bad).

    The hot path: a limit validated before (same name and limit fields, no
    lease) only has its key and hits checked again."""
    if type(raw) not in (list, tuple) or len(raw) != 9:  # type: ignore[arg-type]
        raise InvalidRequest("a rate-limit request is a list of 9 fields")
    f: Sequence[Any] = raw  # type: ignore[assignment]
    name, unique, limit, dur, hits, alg, beh, burst, lease = f
    exact = (
        type(name) is str
        and type(limit) is int
        and type(dur) is int
        and type(alg) is int
        and type(beh) is int
        and type(burst) is int
        and lease == ""
    )
    if exact:
        spec = _WIRE_SPECS.get((name, limit, dur, alg, beh, burst))
        if (
            spec is not None
            and type(unique) is str
            and 0 < len(unique) <= MAX_NAME_LEN
            and type(hits) is int
            and -INT64_MAX <= hits <= INT64_MAX
        ):
            return RateLimitRequest(name, unique, limit, dur, hits, spec[0], spec[1], burst)
    req = check_request(
        RateLimitRequest(
            name=name,
            unique_key=unique,
            limit=limit,
            duration_ns=dur,
            hits=hits,
            algorithm=alg,
            behavior=beh,
            burst=burst,
            lease=lease,
        )
    )
    if exact and req.algorithm is not Algorithm.CONCURRENCY:
        if len(_WIRE_SPECS) >= 4096:
            _WIRE_SPECS.clear()
        _WIRE_SPECS[(name, limit, dur, alg, beh, burst)] = (req.algorithm, req.behavior)
    return req


def _resp_to_wire(r: RateLimitResponse) -> list[int]:
    return [int(r.status), r.limit, r.remaining, r.reset_time_ns, r.retry_after_ns]


_STATUSES: Final = (Status.UNDER_LIMIT, Status.OVER_LIMIT)


def _resp_from_wire(raw: Any) -> RateLimitResponse:
    if type(raw) is list and len(raw) == 5:
        st, limit, remaining, reset, retry = raw
        if (
            type(st) is int
            and type(limit) is int
            and type(remaining) is int
            and type(reset) is int
            and type(retry) is int
            and 0 <= st <= 1
        ):
            return RateLimitResponse(_STATUSES[st], limit, remaining, reset, retry)
    raise InvalidRequest(f"bad rate-limit answer from the owner: {raw!r:.80}")


def _decision_from_wire(raw: Any) -> Decision:
    """``Decision.of(_resp_from_wire(raw))`` in one step (exact mode's hot path)."""
    resp = _resp_from_wire(raw)
    retry = resp.retry_after_ns
    return Decision(
        resp.status is Status.UNDER_LIMIT,
        resp.limit,
        resp.remaining,
        resp.reset_time_ns / NS_PER_S,
        math.inf if retry < 0 else retry / NS_PER_S,
        resp,
    )


def algorithm_of(value: Algorithm | str | int) -> Algorithm:
    """An :class:`Algorithm` from itself, its number or its name (any case)."""
    if isinstance(value, str):
        return _algorithm(value)
    return check_limit(value, 1, 1)


def _algorithm(value: Algorithm | str | int) -> Algorithm:
    if isinstance(value, str):
        try:
            return _ALG_NAMES[value.lower()]
        except KeyError:
            raise InvalidRequest(
                f"unknown algorithm {value!r} (known: {', '.join(_ALG_NAMES)})"
            ) from None
    return value  # type: ignore[return-value]  # an int is checked by check_request


def _behavior(value: int) -> Behavior:
    if type(value) is not int and not isinstance(value, Behavior):
        raise InvalidRequest(f"behavior must be an integer set of flags, got {value!r:.40}")
    try:
        return Behavior(value)
    except ValueError:
        raise InvalidRequest(f"behavior {value!r} has unknown flag bits") from None


def _duration_ns(period: float) -> int:
    if type(period) not in (int, float) or not math.isfinite(period) or period <= 0:
        raise InvalidRequest(f"period must be a positive number of seconds, got {period!r:.40}")
    ns = round(period * NS_PER_S)
    if not 1 <= ns <= INT64_MAX:
        raise InvalidRequest(f"period {period!r} s is out of range (1 ns to ~292 years)")
    return ns


#: A limit as :meth:`RateLimiter.hit` validated it: duration (ns), algorithm,
#: behaviour, its lease-slice signature, whether it selects global mode, and
#: the algorithm and behaviour as the ints of the wire.
_Spec = tuple[int, Algorithm, Behavior, tuple[int, int, int, int, int], bool, int, int]

#: A decision run at the owner: ``op(limiter, key_name) -> (wire answer, wrote, over_limit)``.
_Op = Callable[[LocalLimiter, str], tuple[Any, bool, bool]]


def _op_decide(req: RateLimitRequest, part: LocalLimiter, name: str) -> tuple[Any, bool, bool]:
    before = part.export(name)
    resp = part.hit_checked(req)
    # written: the key's replica changed (a new object). A decision that
    # changed nothing (most refusals) has nothing to copy, so it neither
    # counts towards a copy round nor towards the crash bound: a crash
    # cannot forget what was never written.
    wrote = part.export(name) is not before
    return _resp_to_wire(resp), wrote, resp.status is Status.OVER_LIMIT


def _op_throttle(args: list[Any], part: LocalLimiter, name: str) -> tuple[Any, bool, bool]:
    reply = part.throttle(name[3:], args[0], args[1], args[2], args[3])
    return list(reply), args[3] != 0, reply[0] == 1


class RateLimiter(Service):
    """The rate-limit service: replica side (decisions, copies, data hooks)
    and client side (:meth:`hit`, :meth:`hit_many`, :meth:`concurrency`,
    :meth:`should_rate_limit`) in one class."""

    namespace = "ratelimit"
    read_commands = frozenset({"read"})

    def __init__(
        self, config: RateLimiterConfig | None = None, *, limits: Limits | None = None
    ) -> None:
        self.config = config or RateLimiterConfig()
        self.limits = limits
        self._app: AppContext | None = None
        self._actor = ""
        self._parts: dict[int, LocalLimiter] = {}
        # keys decided here and not yet copied: partition -> set of key bytes
        self._dirty: dict[int, set[bytes]] = {}
        self._pending = 0  # decisions not yet sent to the other owners
        self._inflight = 0  # decisions sent, not yet acknowledged
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        # decisions waiting for copies to be acknowledged (the crash bound),
        # first come first served; a woken one holds a reserved slot
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._reserved = 0
        self._rounds: set[asyncio.Future[None]] = set()  # copy rounds in flight
        self._pulling: dict[bytes, asyncio.Future[None]] = {}
        self._leases = itertools.count(1)
        self._specs: dict[tuple[Any, ...], _Spec] = {}
        self._lease = _modes.LeaseClient(self)
        self._global = _modes.GlobalClient(self)
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "decisions",
                "over_limit",
                "forwarded",
                "copies_sent",
                "copy_failures",
                "counters_moved",
                "counters_recovered",
                "counters_rebuilt",
                "decisions_waited",
                "swept",
            ),
            0,
        )

    # -- attachment ---------------------------------------------------------------
    def attach(self, app: AppContext) -> None:
        self._app = app
        # an actor id per incarnation: a node id plus this process's start instant
        self._actor = f"{app.node_id}@{int(app.clock.time() * 1000):x}"
        app.spawn(self._copier, "ratelimit-copier")
        app.spawn(self._sweeper, "ratelimit-sweeper")
        app.spawn(self._lease.run, "ratelimit-lease-returns")
        app.spawn(self._global.run, "ratelimit-global-sync")
        app.add_metrics(self._metrics)

    @property
    def app(self) -> AppContext:
        if self._app is None:
            raise ClosedError("RateLimiter is not registered on a node")
        return self._app

    @property
    def fresh_refused_commands(self) -> frozenset[str]:
        return frozenset({"read", "decide"})

    def _timeout(self) -> float:
        return self.config.timeout or self.app.request_timeout

    def _part(self, partition: int) -> LocalLimiter:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = LocalLimiter(self.app.clock.time, actor=self._actor)
        return part

    # -- replica side -----------------------------------------------------------------
    def handle(self, request: Request) -> Any:
        cmd = request.command
        if cmd == "decide":
            req = self._routed(request)
            return self._run(request.partition, request.key, partial(_op_decide, req))
        if cmd == "throttle":  # payload: [max_burst, count, period_s, quantity]
            raw = request.payload
            if type(raw) is not list or len(raw) != 4 or not request.key.startswith(b"cl_"):
                raise InvalidRequest("throttle: expected [max_burst, count, period, quantity]")
            # validated now, so that a bad request never waits for a pull or a copy
            cl_throttle(None, raw[0], raw[1], raw[2], raw[3], 0)
            return self._run(request.partition, request.key, partial(_op_throttle, raw))
        if cmd == "grant":  # lease mode: [req, need, want, refund, refund_until, ttl_ns]
            raw = request.payload
            if type(raw) is not list or len(raw) != 6 or not all(type(x) is int for x in raw[1:]):
                raise InvalidRequest("grant: expected [request, need, want, refund, until, ttl]")
            req = self._routed(request)
            need, want, refund, until, ttl = raw[1:]
            if not 0 < need <= want or refund < 0 or ttl <= 0:
                raise InvalidRequest("grant: need 0 < need <= want, refund >= 0, ttl > 0")
            op = partial(_modes.op_grant, req, need, want, refund, until, ttl)
            return self._run(request.partition, request.key, op)
        if cmd == "release":  # lease mode: [req with hits < 0, refund_until]
            raw = request.payload
            if type(raw) is not list or len(raw) != 2 or type(raw[1]) is not int:
                raise InvalidRequest("release: expected [request, refund_until]")
            req = self._routed(request)
            op = partial(_modes.op_release, req, raw[1])
            return self._run(request.partition, request.key, op)
        if cmd == "gdecide":  # global mode: [req, hits admitted elsewhere]
            raw = request.payload
            if type(raw) is not list or len(raw) != 2 or type(raw[1]) is not int or raw[1] < 0:
                raise InvalidRequest("gdecide: expected [request, counted hits >= 0]")
            req = self._routed(request)
            return self._run(
                request.partition, request.key, partial(_modes.op_gdecide, req, raw[1])
            )
        if cmd == "read":
            part = self._parts.get(request.partition)
            return None if part is None else part.export(request.key.decode())
        if cmd == "absorb":  # payload: [[key, replica], ...] of one partition
            raw = request.payload
            if type(raw) is not list or len(raw) > 100_000:
                raise InvalidRequest("absorb: expected a list of [key, replica]")
            return self.import_records(request.partition, raw)
        raise UnknownCommand(f"ratelimit has no command {cmd!r}")

    @staticmethod
    def _routed(request: Request) -> RateLimitRequest:
        """The request in a command's payload (first element for the modes' commands)."""
        raw = request.payload
        if request.command != "decide":
            raw = raw[0]
        req = request_from_wire(raw)
        if req.key.encode() != request.key:
            raise InvalidRequest("the request's name_key differs from the routed key")
        return req

    def _run(self, partition: int, key: bytes, op: _Op) -> Any:
        """Run a decision ``op`` on ``key`` here: at once (the fast path), or
        after joining the co-owners' copies (a key this node has no state
        for), or once copies caught up (the crash bound reached)."""
        part = self._part(partition)
        try:
            name = key.decode()
        except UnicodeDecodeError:
            raise InvalidRequest("a rate-limit key is UTF-8") from None
        if part.export(name) is None and key not in self._pulling:
            fut: asyncio.Future[None] = self.app.create_future()
            self._pulling[key] = fut  # now: later requests for the key wait for it
            return self._pull_then_run(partition, key, op, fut)
        if (
            key in self._pulling
            or self._inflight + self._pending + self._reserved >= self.config.unreplicated_limit
        ):
            return self._run_later(partition, key, op)
        return self._run_now(part, partition, key, op, name)

    def _run_now(
        self, part: LocalLimiter, partition: int, key: bytes, op: _Op, name: str = ""
    ) -> Any:
        answer, wrote, over = op(part, name or key.decode())
        self.stats["decisions"] += 1
        if over:
            self.stats["over_limit"] += 1
        if wrote:
            dirty = self._dirty.setdefault(partition, set())
            dirty.add(key)
            self._pending += 1
            self._wake.set()
            if self._pending >= self.config.copy_every:
                if len(self._rounds) < _MAX_ROUNDS:
                    # now, not a loop pass later in the copier: while decisions
                    # wait for acknowledgements the copy's latency is the rate
                    with contextlib.suppress(ClosedError):  # stopping: nothing to copy to
                        self._launch_copy()
                else:
                    self._full.set()
        return answer

    async def _run_later(self, partition: int, key: bytes, op: _Op) -> Any:
        pulling = self._pulling.get(key)
        if pulling is not None:
            await pulling
        if self._inflight + self._pending + self._reserved >= self.config.unreplicated_limit:
            self.stats["decisions_waited"] += 1
            self._wake.set()
            self._full.set()
            fut = self.app.create_future()
            self._waiters.append(fut)
            try:
                await fut  # resolved by _release_waiters with a slot reserved for us
            except BaseException:
                if fut.done() and not fut.cancelled():  # woken, then cancelled: pass it on
                    self._reserved -= 1
                    self._release_waiters()
                raise
            self._reserved -= 1
        try:
            return self._run_now(self._part(partition), partition, key, op)
        finally:
            if self._waiters:
                # a decision that wrote nothing (or failed) leaves its slot
                # free, and no copy will come to wake the next: wake it here
                self._release_waiters()

    def _release_waiters(self) -> None:
        """Copies were acknowledged: wake as many waiting decisions as there
        are free slots under the crash bound, oldest first (one wake-up each,
        not every waiter re-checking on every acknowledgement)."""
        free = self.config.unreplicated_limit - self._inflight - self._pending - self._reserved
        waiters = self._waiters
        while free > 0 and waiters:
            w = waiters.popleft()
            if not w.done():  # a cancelled waiter is skipped
                w.set_result(None)
                self._reserved += 1
                free -= 1

    async def _pull_then_run(
        self, partition: int, key: bytes, op: _Op, fut: asyncio.Future[None]
    ) -> Any:
        try:
            await self._pull(partition, key)
        finally:
            del self._pulling[key]
            fut.set_result(None)
        return await self._run_later(partition, key, op)

    async def _pull(self, partition: int, key: bytes) -> None:
        """Join the other live owners' copies of ``key`` before deciding it first."""
        app = self.app
        owners = app.owners(partition)
        others = [o for o in owners if o != app.node_id and app.is_up(o)]
        futs = [
            app.call_replica(o, "read", key, None, partition=partition, timeout=self._timeout())
            for o in others
        ]
        answers = await asyncio.gather(*futs, return_exceptions=True)
        part = self._part(partition)
        name = key.decode()
        got = False
        for answer in answers:
            if isinstance(answer, BaseException) or answer is None:
                continue
            try:
                part.absorb(name, answer)
                got = True
            except InvalidRequest:
                log.warning("ratelimit: bad copy of %r from a co-owner ignored", name)
        if got:
            self.stats["counters_recovered"] += 1
        if not got and owners and owners[0] != app.node_id:
            # the primary is unreachable (that is why this node decides) and no
            # co-owner had a copy: the key starts from nothing -- a new key, or
            # one whose hits since the last copy are forgotten
            failed = sum(1 for a in answers if isinstance(a, BaseException))
            self.stats["counters_rebuilt"] += 1
            log.warning(
                "ratelimit: key %r rebuilt from nothing at %s (primary %s unreachable,"
                " no copy found; %d co-owner(s) failed)",
                name,
                app.node_id,
                owners[0],
                failed,
            )

    # -- copies to the other owners ---------------------------------------------------------
    async def _copier(self) -> None:
        """Start a copy round once ``copy_every`` decisions wait or ``copy_interval``
        passed; rounds overlap (up to :data:`_MAX_ROUNDS` in flight), so the
        decision rate is not one round trip per ``copy_every`` decisions."""
        cfg = self.config
        rounds = self._rounds
        try:
            while True:
                if not self._dirty and not self._pending:
                    self._wake.clear()
                    await self._wake.wait()
                if self._pending < cfg.copy_every:
                    self._full.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(cfg.copy_interval):
                            await self._full.wait()
                if len(rounds) >= _MAX_ROUNDS:
                    await asyncio.wait(rounds, return_when=asyncio.FIRST_COMPLETED)
                try:
                    self._launch_copy()
                except ClosedError:
                    return
        finally:
            for unfinished in rounds:
                unfinished.cancel()

    def _launch_copy(self) -> None:
        """Start a copy round of what waits (its acknowledgements are awaited
        by a task): from the copier, or from a decision that filled a round."""
        started = self._start_copy()
        if started is not None:
            task = asyncio.ensure_future(self._finish_copy(*started))
            self._rounds.add(task)
            task.add_done_callback(self._rounds.discard)

    async def copy_now(self) -> None:
        """Copy every key decided here since the last copy to its other owners, now."""
        started = self._start_copy()
        if started is not None:
            await self._finish_copy(*started)

    def _start_copy(self) -> tuple[int, list[asyncio.Future[Any]]] | None:
        """Send the decided keys' states to their co-owners (no await): the
        decisions counted and the acknowledgements to wait for."""
        if not self._dirty:
            # nothing to copy (a dropped partition took its keys): nothing waits
            self._pending = 0
            self._release_waiters()
            return None
        app = self.app
        dirty, self._dirty = self._dirty, {}
        count, self._pending = self._pending, 0
        self._inflight += count
        futs: list[asyncio.Future[Any]] = []
        try:
            for partition, keys in dirty.items():
                part = self._parts.get(partition)
                if part is None:
                    continue
                records: list[list[Any]] = []
                for k in keys:
                    replica = part.export(k.decode())
                    if replica is not None:
                        records.append([k, replica])
                if not records:
                    continue
                for owner in app.owners(partition):
                    if owner == app.node_id or not app.is_up(owner):
                        continue
                    futs.append(
                        app.call_replica(
                            owner,
                            "absorb",
                            records[0][0],
                            records,
                            partition=partition,
                            timeout=self._timeout(),
                        )
                    )
        except BaseException:
            self._inflight -= count
            self._release_waiters()
            raise
        return count, futs

    async def _finish_copy(self, count: int, futs: list[asyncio.Future[Any]]) -> None:
        try:
            for r in await asyncio.gather(*futs, return_exceptions=True):
                if isinstance(r, BaseException):
                    self.stats["copy_failures"] += 1
                else:
                    self.stats["copies_sent"] += 1
        finally:
            self._inflight -= count
            self._release_waiters()

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            self.sweep()

    def sweep(self) -> int:
        """Forget keys that are back to full on this node (never a key still
        waiting for its copy); returns how many."""
        gone = 0
        for partition, part in list(self._parts.items()):
            if partition in self._dirty:
                continue
            gone += part.sweep()
        self.stats["swept"] += gone
        return gone

    # -- data movement hooks ------------------------------------------------------------
    def export_partition(self, partition: int) -> Iterator[Record]:
        part = self._parts.get(partition)
        if part is None:
            return iter(())
        out = []
        for k in part.keys():  # noqa: SIM118 - a LocalLimiter, not a dict
            replica = part.export(k)
            if replica is not None:
                out.append((k.encode(), replica))
        return iter(out)

    def import_records(self, partition: int, records: Sequence[Record]) -> int:
        part = self._part(partition)
        changed = 0
        items: Sequence[Any] = records  # lists off the wire: no tuple check (compiled)
        for item in items:
            if type(item) not in (list, tuple) or len(item) != 2 or type(item[0]) is not bytes:
                raise InvalidRequest("a rate-limit record is [key bytes, replica]")
            key, incoming = item
            try:
                name = key.decode()
            except UnicodeDecodeError:
                raise InvalidRequest("a rate-limit key is UTF-8") from None
            before = part.export(name)
            part.absorb(name, incoming)
            if part.export(name) != before:
                changed += 1
        self.stats["counters_moved"] += changed
        return changed

    def digest(self, partition: int) -> dict[bytes, bytes]:
        part = self._parts.get(partition)
        if part is None:
            return {}
        return {
            k.encode(): hashlib.blake2b(msgpack.packb(part.export(k)), digest_size=8).digest()
            for k in part.keys()  # noqa: SIM118 - a LocalLimiter, not a dict
        }

    def read_records(self, partition: int, keys: Iterable[bytes]) -> list[Record]:
        part = self._parts.get(partition)
        if part is None:
            return []
        out: list[Record] = []
        for k in keys:
            replica = part.export(k.decode())
            if replica is not None:
                out.append((k, replica))
        return out

    def drop_partition(self, partition: int) -> int:
        part = self._parts.pop(partition, None)
        self._dirty.pop(partition, None)
        return 0 if part is None else len(part)

    def partition_size(self, partition: int) -> int:
        part = self._parts.get(partition)
        return 0 if part is None else len(part)

    # -- metrics --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Decisions made here (as a key's owner) and how many refused, keys held,
        decisions not yet copied to co-owners (``peer-ring status``, the web console)."""
        f = self.figures()
        return {name: int(f[name]) for name in ("decisions", "over_limit", "keys", "unreplicated")}

    def figures(self) -> dict[str, float]:
        """This node's limiter figures by name (what ``/metrics`` exports)."""
        return {m.name: m.value for m in self._metrics()}

    def _metrics(self) -> Iterable[Metric]:
        helps = {
            "decisions": "Rate-limit decisions made at this node (as a key's owner)",
            "over_limit": "Decisions that refused (OVER_LIMIT)",
            "forwarded": "Decisions this node asked another owner for",
            "copies_sent": "Copies of decided keys acknowledged by co-owners",
            "copy_failures": "Copies to a co-owner that failed",
            "counters_moved": "Keys whose state changed by a transfer, copy or repair",
            "counters_recovered": "Keys taken over from a co-owner's copy",
            "counters_rebuilt": "Keys started from nothing at a non-primary owner"
            " (hits may have been forgotten)",
            "decisions_waited": "Decisions that waited for copies (crash bound reached)",
            "swept": "Keys forgotten because they were back to full",
        }
        for name, text in helps.items():
            yield Metric(name, "counter", text, float(self.stats[name]))
        for prefix, st in (("lease", self._lease.stats), ("global", self._global.stats)):
            for name, value in st.items():
                text = _MODE_HELP.get(f"{prefix}_{name}", f"{prefix} mode: {name}")
                yield Metric(f"{prefix}_{name}", "counter", text, float(value))
        yield Metric("keys", "gauge", "Keys held here", float(sum(map(len, self._parts.values()))))
        yield Metric(
            "unreplicated",
            "gauge",
            "Decisions not yet acknowledged by co-owners",
            float(self._pending + self._inflight),
        )

    # -- client side ----------------------------------------------------------------------
    def wire(self, req: RateLimitRequest) -> list[Any]:
        return request_to_wire(req)

    def primary_of(self, key: bytes) -> str | None:
        """The node that decides ``key`` now: its first live owner."""
        app = self.app
        for owner in app.owners(app.partition_for(key)):
            if app.is_up(owner):
                return owner
        return None

    async def route_key(self, key: bytes, command: str, payload: Any) -> Any:
        """Run ``command`` at the first live owner of ``key`` that takes it
        (live owners in preference order, then the others)."""
        app = self.app
        partition = app.partition_for(key)
        owners = app.owners(partition)
        if not owners:
            raise PeerUnavailable("the ring is empty")
        timeout = self.config.timeout or app.request_timeout
        first = ""
        for owner in owners:  # the hot path: the first live owner, asked once
            if app.is_up(owner):
                first = owner
                break
        last: BaseException | None = None
        if first:
            if first != app.node_id:
                self.stats["forwarded"] += 1
            try:
                return await app.call_replica(
                    first, command, key, payload, partition=partition, timeout=timeout
                )
            except _RETRY as exc:
                last = exc
        # the first live owner refused or could not be reached: the other
        # live owners in order, then those not known to be up
        rest = [o for o in owners if o != first and app.is_up(o)]
        rest += [o for o in owners if o != first and not app.is_up(o)]
        for owner in rest:
            if owner != app.node_id:
                self.stats["forwarded"] += 1
            try:
                return await app.call_replica(
                    owner, command, key, payload, partition=partition, timeout=timeout
                )
            except _RETRY as exc:
                last = exc
        assert last is not None
        raise last

    async def decide(self, req: RateLimitRequest, mode: str | None = None) -> RateLimitResponse:
        """Decide one request (validated first; raises on bad input) in ``mode``
        (default: ``global`` for requests with gubernator's GLOBAL flag, else
        ``config.mode``)."""
        return await self._decide_checked(check_request(req), mode)

    async def _decide_checked(self, req: RateLimitRequest, mode: str | None) -> RateLimitResponse:
        mode = mode or ("global" if int(req.behavior) & _GLOBAL else self.config.mode)
        if mode == "lease":
            return await self._lease.hit(req)
        if mode == "global":
            return await self._global.hit(req)
        if mode != "exact":
            raise InvalidRequest(f"mode must be exact, lease or global, got {mode!r:.40}")
        return await self.decide_exact(req)

    async def decide_exact(self, req: RateLimitRequest) -> RateLimitResponse:
        """Decide ``req`` (validated) at its key's owner, whatever the mode."""
        raw = await self.route_key(req.key.encode(), "decide", request_to_wire(req))
        return _resp_from_wire(raw)

    async def throttle(
        self, key: Any, max_burst: Any, count: Any, period: Any, quantity: Any = 1
    ) -> tuple[int, int, int, int, int]:
        """redis-cell's ``CL.THROTTLE``, decided at the key's owner: ``(limited,
        limit, remaining, retry_after, reset_after)`` (see ``docs/ratelimit.md``).

        ``period`` is whole seconds. Bad arguments raise
        :class:`~peer_ring.errors.InvalidRequest`.
        """
        if type(key) is not str or not key or len(key) > 1024:
            raise InvalidRequest("a CL.THROTTLE key is a non-empty string of at most 1024 chars")
        cl_throttle(None, max_burst, count, period, quantity, 0)  # validate before sending
        raw = await self.route_key(
            f"cl_{key}".encode(), "throttle", [max_burst, count, period, quantity]
        )
        if type(raw) is not list or len(raw) != 5 or not all(type(x) is int for x in raw):
            raise InvalidRequest(f"bad CL.THROTTLE answer from the owner: {raw!r:.80}")
        return (raw[0], raw[1], raw[2], raw[3], raw[4])

    async def hit(
        self,
        key: Any,  # str
        *,
        limit: Any,  # int
        period: Any,  # float (seconds)
        hits: Any = 1,  # int
        algorithm: Any = Algorithm.TOKEN_BUCKET,  # Algorithm | str
        burst: Any = 0,  # int
        name: Any = "default",  # str
        behavior: Any = 0,  # int
        mode: str | None = None,
    ) -> Decision:
        """Count ``hits`` against ``limit`` per ``period`` seconds for ``key``.

        (The arguments are typed ``Any`` because this module is compiled:
        a compiled function checks its annotations on entry and would raise
        ``TypeError`` for a wrongly typed value before the checks here raise
        :class:`~peer_ring.errors.InvalidRequest`, in both builds alike.)

        ``hits`` 0 peeks, negative refunds. ``algorithm``: an
        :class:`Algorithm` or its name (``"sliding_window"``). ``name`` is
        gubernator's limit name: the counter is ``name`` and ``key`` together.
        ``mode``: ``exact``, ``lease`` or ``global`` (default ``config.mode``).
        Bad input raises :class:`~peer_ring.errors.InvalidRequest`.
        """
        # The hot path: a limit already seen is not validated again (the key
        # and hits are; they change per call). CONCURRENCY always takes the
        # full check (its hits need a lease id).
        spec_key = (name, limit, period, algorithm, burst, behavior)
        spec = self._specs.get(spec_key)
        if spec is None:
            spec = self._spec(name, limit, period, algorithm, burst, behavior)
        dur, alg, beh, slice_sig, glob, alg_i, beh_i = spec
        if type(key) is not str or not key or len(key) > MAX_NAME_LEN:
            raise InvalidRequest(
                f"key must be a non-empty string of at most {MAX_NAME_LEN} characters,"
                f" got {key!r:.40}"
            )
        if type(hits) is not int or not -INT64_MAX <= hits <= INT64_MAX:
            raise InvalidRequest(f"hits must be in [{-INT64_MAX}, {INT64_MAX}], got {hits!r:.40}")
        if not mode:
            mode = "global" if glob else self.config.mode
        if mode == "exact" and alg_i != _CONCURRENCY:
            # the hot path of exact mode: the wire request straight from the
            # validated limit (what request_to_wire makes of the request
            # object), the answer straight into a Decision
            raw = await self.route_key(
                f"{name}_{key}".encode(),
                "decide",
                [name, key, limit, dur, hits, alg_i, beh_i, burst, ""],
            )
            return _decision_from_wire(raw)
        if mode == "lease" and hits > 0:
            local = self._lease.local(f"{name}_{key}", slice_sig, hits)
            if local is not None:
                return Decision.of(local)
        req = RateLimitRequest(name, key, limit, dur, hits, alg, beh, burst)
        if alg is Algorithm.CONCURRENCY:
            req = check_request(req)
        return Decision.of(await self._decide_checked(req, mode))

    def _spec(
        self, name: str, limit: int, period: float, algorithm: Any, burst: int, behavior: int
    ) -> _Spec:
        """Validate a limit once (:class:`InvalidRequest` if bad); remember it
        with what the hot path needs of it."""
        probe = check_request(
            RateLimitRequest(
                name=name,
                unique_key="probe",
                limit=limit,
                duration_ns=_duration_ns(period),
                hits=0,
                algorithm=_algorithm(algorithm),
                behavior=_behavior(behavior),
                burst=burst,
            )
        )
        if len(self._specs) >= 4096:
            self._specs.clear()
        spec = (
            probe.duration_ns,
            probe.algorithm,
            probe.behavior,
            _modes.sig(limit, probe.duration_ns, probe.algorithm, burst, probe.behavior),
            bool(int(probe.behavior) & _GLOBAL),
            int(probe.algorithm),
            int(probe.behavior),
        )
        self._specs[(name, limit, period, algorithm, burst, behavior)] = spec
        return spec

    async def hit_many(self, reqs: Iterable[RateLimitRequest]) -> list[RateLimitResponse]:
        """Decide a batch concurrently; answers in order.

        A request that fails validation, or whose owner could not be reached
        or timed out, gets an OVER_LIMIT response whose ``error`` says why
        (never a silent allow); the others are decided. More than
        ``config.max_batch`` requests raise :class:`InvalidRequest`.
        """
        batch = list(reqs)
        if len(batch) > self.config.max_batch:
            raise InvalidRequest(
                f"a batch holds at most {self.config.max_batch} requests, got {len(batch)}"
            )
        answers = await asyncio.gather(*(self.decide(r) for r in batch), return_exceptions=True)
        out: list[RateLimitResponse] = []
        for req, answer in zip(batch, answers, strict=True):
            if isinstance(answer, RateLimitResponse):
                out.append(answer)
            elif isinstance(answer, PeerRingError):
                lim = req.limit if type(req.limit) is int else 0
                out.append(RateLimitResponse(Status.OVER_LIMIT, lim, 0, 0, 0, error=str(answer)))
            else:
                raise answer
        return out

    def concurrency(
        self, key: Any, *, limit: Any, timeout: Any = 60.0, name: Any = "concurrency"
    ) -> _Slot:
        """Hold one of ``limit`` slots of ``key`` for the block's duration
        (``async with limiter.concurrency(...) as decision:``).

        Raises :class:`RateLimited` when all are held. ``timeout`` (seconds)
        frees the slot if this process dies holding it. The slot is released
        on exit; if the release cannot reach the owner, the timeout frees it.
        """
        return _Slot(self, key, limit, _duration_ns(timeout), name)

    async def should_rate_limit(
        self,
        domain: Any,  # str
        descriptors: Sequence[Sequence[tuple[str, str]]],
        hits_addend: Any = 1,  # int
        overrides: Sequence[DescriptorLimit | None] | None = None,
    ) -> tuple[bool, list[DescriptorStatus]]:
        """Envoy's ``ShouldRateLimit``: ``(overall_ok, statuses)`` for descriptors
        matched against the named limits given at construction.

        Raises :class:`InvalidRequest` for an unknown domain, a bad descriptor
        or ``hits_addend`` out of range; ``shadow_mode`` limits count and
        report but answer OK. ``overrides`` (one per descriptor, or None)
        replace the configured limit, as Envoy's ``RateLimitOverride`` does:
        the descriptor then counts under that limit even when no configured
        descriptor matches (its counter is its own).
        """
        if self.limits is None:
            raise InvalidRequest("no named limits are configured on this node")
        if type(domain) is not str or domain not in self.limits.domains:
            raise InvalidRequest(f"unknown domain {domain!r:.80}")
        if type(hits_addend) is not int or not 0 <= hits_addend <= 0xFFFFFFFF:
            raise InvalidRequest(f"hits_addend must be a uint32, got {hits_addend!r:.40}")
        if not descriptors or len(descriptors) > self.config.max_batch:
            raise InvalidRequest(
                f"give 1 to {self.config.max_batch} descriptors, got {len(descriptors)}"
            )
        if overrides is not None and len(overrides) != len(descriptors):
            raise InvalidRequest("give one override (or None) per descriptor")
        matches: list[Match | None] = []
        given: Sequence[Sequence[Any]] = descriptors  # lists or tuples (compiled: no check)
        for d in given:
            if not d or not all(
                type(e) in (tuple, list) and len(e) == 2 and all(type(x) is str for x in e)
                for e in d
            ):
                raise InvalidRequest("a descriptor is a non-empty list of (key, value) strings")
            if any(not e[0] for e in d):
                raise InvalidRequest("a descriptor entry needs a key")
            entries = [(e[0], e[1]) for e in d]
            match = self.limits.match(domain, entries)
            over = overrides[len(matches)] if overrides is not None else None
            if over is not None:
                parts = "|".join([domain, *(f"{k}_{v}" for k, v in entries)])
                key = f"{parts}|{over.requests_per_unit}/{over.unit}"
                match = Match(key, over)
            matches.append(match)
        reqs: list[tuple[int, RateLimitRequest]] = []
        for i, m in enumerate(matches):
            if m is None or m.limit.unlimited:
                continue
            reqs.append(
                (
                    i,
                    RateLimitRequest(
                        name=domain,
                        unique_key=m.key,
                        limit=m.limit.requests_per_unit,
                        duration_ns=m.limit.duration_ns,
                        hits=hits_addend,
                        algorithm=m.limit.algorithm,
                        burst=m.limit.burst,
                    ),
                )
            )
        answers = await asyncio.gather(*(self.decide(r) for _, r in reqs))
        now_ns = round(self.app.clock.time() * NS_PER_S)
        statuses = [DescriptorStatus(True, None if m is None else m.limit, 0, 0.0) for m in matches]
        for (i, _), resp in zip(reqs, answers, strict=True):
            lim = matches[i].limit  # type: ignore[union-attr]
            statuses[i] = DescriptorStatus(
                ok=resp.allowed or lim.shadow_mode,
                limit=lim,
                remaining=resp.remaining,
                reset_after=max(0, resp.reset_time_ns - now_ns) / NS_PER_S,
                shadowed=lim.shadow_mode and not resp.allowed,
            )
        return all(s.ok for s in statuses), statuses


class _Slot:
    """The async context manager of :meth:`RateLimiter.concurrency` (a class,
    not an async generator: the module is compiled by mypyc, which has none)."""

    __slots__ = ("_base", "_limiter")

    def __init__(
        self, limiter: RateLimiter, key: str, limit: int, duration_ns: int, name: str
    ) -> None:
        self._limiter = limiter
        self._base = RateLimitRequest(
            name=name,
            unique_key=key,
            limit=limit,
            duration_ns=duration_ns,
            hits=1,
            algorithm=Algorithm.CONCURRENCY,
            lease=f"{limiter.app.node_id}:{next(limiter._leases)}",
        )

    async def __aenter__(self) -> Decision:
        got = Decision.of(await self._limiter.decide(self._base))
        if not got.allowed:
            raise RateLimited(got)
        return got

    async def __aexit__(self, *exc_info: object) -> None:
        base = self._base
        release = RateLimitRequest(
            name=base.name,
            unique_key=base.unique_key,
            limit=base.limit,
            duration_ns=base.duration_ns,
            hits=-1,
            algorithm=Algorithm.CONCURRENCY,
            lease=base.lease,
        )
        try:
            await self._limiter.decide(release)
        except PeerRingError as exc:
            log.warning(
                "ratelimit: release of %s failed (%s); its timeout frees it", base.lease, exc
            )


#: Written help texts of the lease and global modes' counters (``/metrics``).
_MODE_HELP = {
    "lease_local": "Lease mode: decisions made locally from a granted slice",
    "lease_grants": "Lease mode: slices granted by this node as a key's owner",
    "lease_granted_hits": "Lease mode: hits handed out in granted slices",
    "lease_returned_hits": "Lease mode: unused hits returned to the owner",
    "global_local": "Global mode: decisions answered locally",
    "global_syncs": "Global mode: hits synced to the key's owner",
    "global_sync_failures": "Global mode: syncs to the owner that failed",
}
