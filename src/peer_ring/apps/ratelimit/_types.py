"""Requests, responses and limits of the rate limiter, and their validation.

Pure values: no I/O, no clocks. Every instant and duration is an ``int`` of
**nanoseconds** on the wall clock shared by the replicas of a key (state is
replicated and handed off between machines, so a per-process monotonic clock
would mean nothing elsewhere). Integers keep every algorithm exact: no
floating-point drift decides whether the 101st request of 100 passes.

The shapes follow gubernator's ``RateLimitReq``/``RateLimitResp`` so that its
wire format maps onto them field for field (see ``docs/ratelimit.md``): the
enum values that gubernator defines keep gubernator's numbers; algorithms it
does not have are numbered after its own.

Validation (:func:`check_request`, :func:`check_limit`) turns every bad
value into :class:`~peer_ring.errors.InvalidRequest` (a client's request) or
:class:`~peer_ring.errors.ConfigError` (a named limit from a config file)
whose message names the field, the value and the allowed range. Nothing is
clamped silently and nothing bad is allowed through.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from peer_ring.app import InvalidRequest, PeerRingError

__all__ = [
    "INT64_MAX",
    "MAX_NAME_LEN",
    "NS_PER_MS",
    "NS_PER_S",
    "RESERVED_LEASE_PREFIX",
    "Algorithm",
    "Behavior",
    "RateLimitRequest",
    "RateLimitResponse",
    "Status",
    "check_limit",
    "check_request",
]

NS_PER_S: Final = 1_000_000_000
NS_PER_MS: Final = 1_000_000
#: Largest value of every integer field (gubernator's fields are ``int64``).
INT64_MAX: Final = (1 << 63) - 1
#: Longest ``name``, ``unique_key`` or ``lease`` accepted, in characters.
MAX_NAME_LEN: Final = 1024
#: Lease ids the limiter uses itself (hits counted on behalf of an unknown holder).
RESERVED_LEASE_PREFIX: Final = "\x00"


class Algorithm(enum.IntEnum):
    """How a limit counts. 0 and 1 are gubernator's numbers; the rest are ours."""

    #: Continuous refill of ``limit`` tokens per ``duration`` up to ``burst``.
    TOKEN_BUCKET = 0
    #: A meter that fills by hits and leaks ``limit`` per ``duration``.
    LEAKY_BUCKET = 1
    #: Generic cell rate algorithm with redis-cell's ``CL.THROTTLE`` semantics.
    GCRA = 2
    #: ``limit`` hits per window aligned to multiples of ``duration``.
    FIXED_WINDOW = 3
    #: Weighted estimate over the current and the previous fixed window.
    SLIDING_WINDOW = 4
    #: At most ``limit`` held at once; a hold expires ``duration`` after it was taken.
    CONCURRENCY = 5


class Behavior(enum.IntFlag):
    """Per-request flags, bit for bit gubernator's ``Behavior`` enum.

    The algorithms act on :attr:`RESET_REMAINING` and :attr:`DRAIN_OVER_LIMIT`.
    :attr:`NO_BATCHING`, :attr:`GLOBAL` and :attr:`MULTI_REGION` choose how a
    request is routed and are ignored here (the distributed layer reads them).
    :attr:`DURATION_IS_GREGORIAN` is not supported and is rejected.
    """

    BATCHING = 0
    NO_BATCHING = 1
    GLOBAL = 2
    DURATION_IS_GREGORIAN = 4
    #: Forget every counted hit first and ignore this request's ``hits``.
    RESET_REMAINING = 8
    MULTI_REGION = 16
    #: A request refused as over the limit also empties what remains.
    DRAIN_OVER_LIMIT = 32


_KNOWN_BEHAVIOR: Final = int(
    Behavior.NO_BATCHING
    | Behavior.GLOBAL
    | Behavior.DURATION_IS_GREGORIAN
    | Behavior.RESET_REMAINING
    | Behavior.MULTI_REGION
    | Behavior.DRAIN_OVER_LIMIT
)


class Status(enum.IntEnum):
    """gubernator's ``Status`` values."""

    UNDER_LIMIT = 0
    OVER_LIMIT = 1


@dataclass(frozen=True, slots=True)
class RateLimitRequest:
    """One question "may ``hits`` more pass?" about one key.

    ``hits`` > 0 consumes (all or nothing), 0 peeks (never changes state),
    < 0 refunds (never beyond a full limit). For :attr:`Algorithm.CONCURRENCY`
    a positive ``hits`` acquires that many slots under ``lease`` and a
    negative one releases them. ``burst`` 0 means "the same as ``limit``";
    only the bucket algorithms and GCRA accept another value.
    """

    name: str
    unique_key: str
    limit: int
    duration_ns: int
    hits: int = 1
    algorithm: Algorithm = Algorithm.TOKEN_BUCKET
    behavior: Behavior = Behavior.BATCHING
    burst: int = 0
    #: The holder's id for :attr:`Algorithm.CONCURRENCY`; unused otherwise.
    lease: str = ""

    @property
    def key(self) -> str:
        """The limiter key: ``name`` and ``unique_key`` joined as gubernator does."""
        return f"{self.name}_{self.unique_key}"

    @property
    def capacity(self) -> int:
        """Most hits that may pass at one instant (``burst`` or else ``limit``)."""
        return self.burst or self.limit


@dataclass(frozen=True, slots=True)
class RateLimitResponse:
    """The answer to one :class:`RateLimitRequest`.

    ``remaining`` is counted after this request's hits (never negative).
    ``reset_time_ns`` is the instant at which the key would be back to a full
    ``remaining`` if nothing more were hit. ``retry_after_ns`` is 0 for a
    request that passed; for a refused one the wait after which the same
    request would pass if nothing else were hit meanwhile, or -1 if it can
    never pass (more hits than the limit holds at once). ``error`` is
    non-empty only in responses built by the surfaces for a request that
    failed validation; then the other fields mean nothing.
    """

    status: Status
    limit: int
    remaining: int
    reset_time_ns: int
    retry_after_ns: int = 0
    error: str = ""

    @property
    def allowed(self) -> bool:
        return self.status is Status.UNDER_LIMIT and not self.error


_BURST_ALGORITHMS: Final = frozenset(
    {Algorithm.TOKEN_BUCKET, Algorithm.LEAKY_BUCKET, Algorithm.GCRA}
)


def _int_in(field: str, value: object, low: int, high: int, error: type[PeerRingError]) -> int:
    if type(value) is not int:  # bool is an int subclass and is refused too
        raise error(f"{field} must be an integer, got {type(value).__name__} {value!r:.40}")
    if not low <= value <= high:
        raise error(f"{field} must be in [{low}, {high}], got {value}")
    return value


def check_limit(
    algorithm: object,
    limit: object,
    duration_ns: object,
    burst: object = 0,
    *,
    error: type[PeerRingError] = InvalidRequest,
) -> Algorithm:
    """Validate one limit's parameters; return the algorithm as the enum.

    ``error`` is the class raised: :class:`InvalidRequest` for a client's
    request (the default), :class:`~peer_ring.errors.ConfigError` for a named
    limit read from a configuration file.
    """
    try:
        if type(algorithm) is bool or not isinstance(algorithm, int):
            raise TypeError(algorithm)
        alg = Algorithm(algorithm)
    except (ValueError, TypeError):
        names = ", ".join(f"{a.name}={a.value}" for a in Algorithm)
        raise error(f"unknown algorithm {algorithm!r:.40} (known: {names})") from None
    lim = _int_in("limit", limit, 1, INT64_MAX, error)
    dur = _int_in("duration", duration_ns, 1, INT64_MAX, error)
    b = _int_in("burst", burst, 0, INT64_MAX, error)
    if b and alg not in _BURST_ALGORITHMS:
        raise error(
            f"burst applies to TOKEN_BUCKET, LEAKY_BUCKET and GCRA only, not {alg.name}"
            f" (got burst={b}); leave it 0"
        )
    if alg is Algorithm.GCRA and dur // lim < 1:
        raise error(
            f"GCRA needs duration/limit >= 1 ns (its emission interval), got"
            f" duration={dur} ns for limit={lim}"
        )
    return alg


def _text(field: str, value: object, *, required: bool) -> str:
    if type(value) is not str:
        raise InvalidRequest(f"{field} must be a string, got {type(value).__name__}")
    if required and not value:
        raise InvalidRequest(f"{field} must not be empty")
    if len(value) > MAX_NAME_LEN:
        raise InvalidRequest(f"{field} is {len(value)} characters long; the most is {MAX_NAME_LEN}")
    return value


def check_request(req: RateLimitRequest) -> RateLimitRequest:
    """Validate ``req`` (raising :class:`InvalidRequest`); return it normalized.

    Normalized means ``algorithm`` and ``behavior`` are the enum types even
    when the caller passed plain ints (as a decoded wire message does).
    """
    _text("name", req.name, required=True)
    _text("unique_key", req.unique_key, required=True)
    _text("lease", req.lease, required=False)
    alg = check_limit(req.algorithm, req.limit, req.duration_ns, req.burst)
    hits = _int_in("hits", req.hits, -INT64_MAX, INT64_MAX, InvalidRequest)
    raw: object = req.behavior
    if type(raw) is bool or not isinstance(raw, int):
        raise InvalidRequest(f"behavior must be an integer set of flags, got {raw!r:.40}")
    if raw < 0 or raw & ~_KNOWN_BEHAVIOR:
        raise InvalidRequest(f"behavior {raw} has unknown flag bits (known mask {_KNOWN_BEHAVIOR})")
    beh = Behavior(raw)
    if beh & Behavior.DURATION_IS_GREGORIAN:
        raise InvalidRequest("behavior DURATION_IS_GREGORIAN is not supported")
    if alg is Algorithm.CONCURRENCY and hits != 0 and not req.lease:
        raise InvalidRequest("a CONCURRENCY acquire or release needs a lease id")
    if req.lease.startswith(RESERVED_LEASE_PREFIX):
        raise InvalidRequest(f"lease ids starting with {RESERVED_LEASE_PREFIX!r} are reserved")
    if type(req.algorithm) is Algorithm and type(req.behavior) is Behavior:
        return req
    return RateLimitRequest(
        name=req.name,
        unique_key=req.unique_key,
        limit=req.limit,
        duration_ns=req.duration_ns,
        hits=hits,
        algorithm=alg,
        behavior=beh,
        burst=req.burst,
        lease=req.lease,
    )
