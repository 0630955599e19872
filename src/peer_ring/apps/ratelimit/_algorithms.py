"""The rate-limiting algorithms as pure state machines.

No asyncio, no I/O, no clock: every function takes ``now`` (int nanoseconds
on the wall clock the key's replicas share) and returns a new state; states
are never mutated. A state is a flat tuple of ints (strings too for
:attr:`~Algorithm.CONCURRENCY`), so msgpack encodes it as is and
:func:`decode_state` checks one that arrives from the network::

    (algorithm, limit, duration_ns, burst, *fields)

It carries the limit it was built with, so that a request with another limit
(or algorithm) is answered from a conservative conversion (:func:`convert`)
rather than from a misread state. Notation below: ``L`` limit, ``D``
duration, ``C`` capacity (``burst`` or else ``L``), ``t`` the request's time.

* TOKEN_BUCKET ``(level, updated)``, level = tokens x D: at ``t``,
  ``level += (t - updated)·L`` capped at ``C·D``; pass iff ``h·D <= level``.
* LEAKY_BUCKET ``(water, updated)``, water = hits x D: at ``t``,
  ``water -= (t - updated)·L`` floored at 0; pass iff ``water + h·D <= C·D``.
* GCRA ``(tat,)``, the theoretical arrival time: ``T = D // L``,
  ``τ = T·C``; pass iff ``max(tat, t) + h·T - τ <= t``, then
  ``tat = max(tat, t) + h·T``.
* FIXED_WINDOW ``(window_start, count)``: the window is ``t - t mod D``;
  pass iff ``count + h <= L``.
* SLIDING_WINDOW ``(window_start, previous, current)``: with
  ``e = t - window_start``, pass iff ``previous·(D - e)/D + current + h <= L``.
* CONCURRENCY ``(leases,)``, ``((id, held, expires_at), ...)`` sorted by id:
  live leases are those with ``expires_at > t``; pass iff
  ``Σ held + h <= L``; a lease taken or topped up at ``t`` expires at
  ``t + D``.

Tokens and water are kept multiplied by ``D`` so that refill and leak are
exact integers (``L`` units per nanosecond) and nothing rounds in a client's
favour. The bounds these give (checked by ``tests/property``):

* token and leaky bucket, GCRA: at most ``C + (t2 - t1)/P`` hits pass in any
  interval ``[t1, t2]``, where ``P`` is ``D/L`` (``T`` for GCRA, ``D // L``:
  redis-cell's truncation makes its rate a hair faster than ``L/D``);
* fixed window: at most ``L`` hits per aligned window;
* sliding window: at every hit that passes, the weighted estimate including
  it is at most ``L`` (so at most ``L`` per aligned window, and at most
  ``2L`` in any span of length ``D``, the known limit of the estimate);
* concurrency: at most ``L`` held by unexpired leases at any instant.

Semantics shared by all (``docs/ratelimit.md`` has the table):

* ``hits > 0`` passes whole or not at all. A refused request leaves the
  counted hits as they were, unless ``DRAIN_OVER_LIMIT``: then it empties
  what remains.
* ``hits == 0`` peeks: the answer as of ``t``; the state returned is the one
  passed in, unchanged (not even its timestamps).
* ``hits < 0`` refunds ``-hits``, never beyond a full limit; always
  ``UNDER_LIMIT``. For CONCURRENCY it releases slots of ``lease``.
* ``RESET_REMAINING`` starts the key afresh and ignores ``hits``.
* A clock reading earlier than one the state has seen is taken as that
  later instant: a step back of the clock never refills a bucket nor reopens
  a window (GCRA and CONCURRENCY need no rule: an earlier ``t`` only makes
  them stricter).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from peer_ring.app import InvalidRequest
from peer_ring.apps.ratelimit._types import (
    INT64_MAX,
    MAX_NAME_LEN,
    NS_PER_MS,
    NS_PER_S,
    RESERVED_LEASE_PREFIX,
    Algorithm,
    Behavior,
    RateLimitRequest,
    RateLimitResponse,
    Status,
    check_limit,
)

#: Behaviour bits tested per decision, as plain ints (an IntFlag ``&`` builds a flag).
_RESET: Final = int(Behavior.RESET_REMAINING)
_DRAIN: Final = int(Behavior.DRAIN_OVER_LIMIT)

__all__ = [
    "FORCED_LEASE",
    "State",
    "available",
    "capacity_of",
    "cl_throttle",
    "convert",
    "decide",
    "decode_state",
    "force",
    "fresh",
]

#: ``(algorithm, limit, duration_ns, burst, *fields)``; see the module docstring.
State = tuple[Any, ...]
#: The lease that holds slots counted on behalf of holders this replica never saw.
FORCED_LEASE: Final = RESERVED_LEASE_PREFIX + "forced"

_Lease = tuple[str, int, int]  # (lease id, held, expires_at_ns)
_Step = Callable[[State, RateLimitRequest, int], tuple[State, RateLimitResponse]]

_TB: Final = int(Algorithm.TOKEN_BUCKET)
_LB: Final = int(Algorithm.LEAKY_BUCKET)
_GCRA: Final = int(Algorithm.GCRA)
_FW: Final = int(Algorithm.FIXED_WINDOW)
_SW: Final = int(Algorithm.SLIDING_WINDOW)
_CC: Final = int(Algorithm.CONCURRENCY)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _over(req: RateLimitRequest) -> bool:
    return bool(int(req.behavior) & _DRAIN)


def _response(
    req: RateLimitRequest, passed: bool, remaining: int, reset_at: int, retry_at: int, now: int
) -> RateLimitResponse:
    """``retry_at``: absolute instant, or -1 for never; ignored when ``passed``."""
    return RateLimitResponse(
        status=Status.UNDER_LIMIT if passed else Status.OVER_LIMIT,
        limit=req.limit,
        remaining=max(0, remaining),
        reset_time_ns=reset_at,
        retry_after_ns=0 if passed else (-1 if retry_at < 0 else max(0, retry_at - now)),
    )


def capacity_of(state: State) -> int:
    """The most hits the state's own limit lets pass at one instant."""
    alg, limit, _, burst = state[0], state[1], state[2], state[3]
    if alg in (_TB, _LB, _GCRA):
        return int(burst or limit)
    return int(limit)


def fresh(req: RateLimitRequest, now: int) -> State:
    """The state of a key that has counted nothing yet, under ``req``'s limit."""
    alg, lim, dur, burst = int(req.algorithm), req.limit, req.duration_ns, req.burst
    if alg == _TB:
        return (alg, lim, dur, burst, req.capacity * dur, now)
    if alg == _LB:
        return (alg, lim, dur, burst, 0, now)
    if alg == _GCRA:
        return (alg, lim, dur, burst, now)
    if alg == _FW:
        return (alg, lim, dur, burst, now - now % dur, 0)
    if alg == _SW:
        return (alg, lim, dur, burst, now - now % dur, 0, 0)
    return (alg, lim, dur, burst, ())


# --- token bucket -----------------------------------------------------------


def _tb_at(s: State, now: int) -> tuple[int, int]:
    lim, cap = s[1], capacity_of(s) * s[2]
    level, updated = s[4], s[5]
    t = now if now > updated else updated
    level = level + (t - updated) * lim
    return (cap if level > cap else level), t


def _tb_step(s: State, req: RateLimitRequest, now: int) -> tuple[State, RateLimitResponse]:
    lim, dur, cap_hits = s[1], s[2], capacity_of(s)
    cap = cap_hits * dur
    level, t = _tb_at(s, now)
    at_t = level
    h = req.hits
    passed, retry_at = True, -1
    if int(req.behavior) & _RESET:
        level = cap
    elif h > 0:
        if h * dur <= level:
            level -= h * dur
        else:
            passed = False
            if h <= cap_hits:
                retry_at = t + _ceil_div(h * dur - level, lim)
            if _over(req) and level > 0:
                level = 0
    elif h < 0:
        level = min(cap, level - h * dur)
    reset_at = t + _ceil_div(cap - level, lim) if level < cap else t
    resp = _response(req, passed, level // dur, reset_at, retry_at, now)
    if not passed and level == at_t:
        # a refusal that took nothing: ``s`` refills to the same level at
        # every later instant, so the state is unchanged (nothing to write)
        return s, resp
    return (s[0], lim, dur, s[3], level, t), resp


# --- leaky bucket -----------------------------------------------------------


def _lb_at(s: State, now: int) -> tuple[int, int]:
    lim, water, updated = s[1], s[4], s[5]
    t = now if now > updated else updated
    water = water - (t - updated) * lim
    return (0 if water < 0 else water), t


def _lb_step(s: State, req: RateLimitRequest, now: int) -> tuple[State, RateLimitResponse]:
    lim, dur, cap_hits = s[1], s[2], capacity_of(s)
    cap = cap_hits * dur
    water, t = _lb_at(s, now)
    at_t = water
    h = req.hits
    passed, retry_at = True, -1
    if int(req.behavior) & _RESET:
        water = 0
    elif h > 0:
        if water + h * dur <= cap:
            water += h * dur
        else:
            passed = False
            if h <= cap_hits:
                retry_at = t + _ceil_div(water + h * dur - cap, lim)
            if _over(req) and water < cap:
                water = cap
    elif h < 0:
        water = max(0, water + h * dur)
    reset_at = t + _ceil_div(water, lim)
    resp = _response(req, passed, (cap - water) // dur, reset_at, retry_at, now)
    if not passed and water == at_t:
        return s, resp  # a refusal that added nothing: unchanged, as for the token bucket
    return (s[0], lim, dur, s[3], water, t), resp


# --- GCRA (redis-cell) ------------------------------------------------------


def _gcra_params(s: State) -> tuple[int, int]:
    """``(T, τ)``: emission interval and delay variation tolerance, in ns."""
    interval = s[2] // s[1]
    return interval, interval * capacity_of(s)


def _gcra_core(
    tat: int, interval: int, tau: int, h: int, now: int, drain: bool
) -> tuple[int, bool, int, int]:
    """One redis-cell step: ``(new_tat, limited, retry_ns or -1, ttl_ns)``.

    ``ttl`` is redis-cell's: after a pass ``new_tat - now``; after a refusal
    ``max(tat, now) - now`` (the state it leaves).
    """
    tat_e = tat if tat > now else now
    if h < 0:  # a refund: move the schedule back, never before "now" (full)
        new = tat_e + h * interval
        new = now if new < now else new
        return new, False, -1, new - now
    inc = h * interval
    new_tat = tat_e + inc
    diff = now - (new_tat - tau)
    if diff < 0:
        retry = -diff if inc <= tau else -1
        if drain and tat_e < now + tau:
            tat_e = now + tau
        return tat_e, True, retry, tat_e - now
    return new_tat, False, -1, new_tat - now


def _gcra_step(s: State, req: RateLimitRequest, now: int) -> tuple[State, RateLimitResponse]:
    interval, tau = _gcra_params(s)
    tat = s[4]
    if int(req.behavior) & _RESET:
        tat, limited, retry = now, False, -1
    else:
        tat, limited, retry, _ = _gcra_core(tat, interval, tau, req.hits, now, _over(req))
    tat_e = tat if tat > now else now
    remaining = (tau - (tat_e - now)) // interval
    state = (s[0], s[1], s[2], s[3], tat)
    retry_at = now + retry if retry >= 0 else -1
    return state, _response(req, not limited, remaining, tat_e, retry_at, now)


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _cell_seconds(ns: int) -> int:
    """redis-cell's reply rounding: whole seconds, +1 if a millisecond is left over."""
    secs = _trunc_div(ns, NS_PER_S)
    rest_ms = _trunc_div(ns - secs * NS_PER_S, NS_PER_MS)
    return secs + 1 if rest_ms > 0 else secs


def cl_throttle(
    state: State | None, max_burst: int, count: int, period_s: int, quantity: int, now: int
) -> tuple[State | None, tuple[int, int, int, int, int]]:
    """``CL.THROTTLE key max_burst count period [quantity]`` at ``now``.

    Returns the new state (the one given, unchanged, for ``quantity`` 0) and
    redis-cell's reply ``(limited, limit, remaining, retry_after,
    reset_after)``: ``limit`` is ``max_burst + 1``; ``retry_after`` is -1
    unless limited (and still -1 if ``quantity`` can never fit);
    ``retry_after`` and ``reset_after`` are seconds, whole seconds plus one
    when at least a millisecond is left over (a sub-millisecond remainder is
    dropped, as redis-cell does). ``remaining`` is redis-cell's: the
    microsecond quotient ``(τ - ttl) / T`` truncated toward zero, 0 once
    ``τ - ttl <= -T``. Differences from redis-cell, both only at extremes:
    ``T = period·10⁹ // count`` in exact integers where redis-cell divides
    floats (equal below periods of about 104 days), and for ``T`` under one
    microsecond ``remaining`` is computed in nanoseconds (redis-cell divides
    by zero there). A negative ``quantity`` refunds, never beyond full.
    """
    if type(max_burst) is not int or max_burst < 0:
        raise InvalidRequest(f"max_burst must be a non-negative integer, got {max_burst!r:.40}")
    if type(period_s) is not int or not 1 <= period_s <= INT64_MAX // NS_PER_S:
        raise InvalidRequest(f"period must be a positive number of seconds, got {period_s!r:.40}")
    if max_burst >= INT64_MAX:
        raise InvalidRequest(f"max_burst must be below {INT64_MAX}, got {max_burst}")
    if type(quantity) is not int or abs(quantity) > INT64_MAX:
        raise InvalidRequest(f"quantity must be an int64, got {quantity!r:.40}")
    req = RateLimitRequest(
        name="cl",
        unique_key="throttle",
        limit=count,
        duration_ns=period_s * NS_PER_S,
        hits=quantity,
        algorithm=Algorithm.GCRA,
        burst=max_burst + 1,
    )
    check_limit(req.algorithm, req.limit, req.duration_ns, req.burst)
    current = fresh(req, now) if state is None else convert(state, req, now)
    interval, tau = _gcra_params(current)
    tat, limited, retry, ttl = _gcra_core(current[4], interval, tau, quantity, now, False)
    nxt = tau - ttl
    remaining = 0
    if nxt > -interval:
        t_us = _trunc_div(interval, 1000)
        # redis-cell divides microseconds as floats and truncates
        remaining = int(_trunc_div(nxt, 1000) / t_us) if t_us > 0 else _trunc_div(nxt, interval)
    reply = (
        1 if limited else 0,
        max_burst + 1,
        remaining,
        _cell_seconds(retry) if retry >= 0 else -1,
        _cell_seconds(ttl),
    )
    if quantity == 0:
        return state, reply
    return (current[0], current[1], current[2], current[3], tat), reply


# --- fixed window -----------------------------------------------------------


def _fw_at(s: State, now: int) -> tuple[int, int, int]:
    dur, start, count = s[2], s[4], s[5]
    t = now if now > start else start
    w = t - t % dur
    return w, (count if w == start else 0), t


def _fw_step(s: State, req: RateLimitRequest, now: int) -> tuple[State, RateLimitResponse]:
    lim, dur = s[1], s[2]
    w, count, t = _fw_at(s, now)
    h = req.hits
    passed, retry_at = True, -1
    if int(req.behavior) & _RESET:
        count = 0
    elif h > 0:
        if count + h <= lim:
            count += h
        else:
            passed = False
            if h <= lim:
                retry_at = w + dur
            if _over(req) and count < lim:
                count = lim
    elif h < 0:
        count = max(0, count + h)
    state = (s[0], lim, dur, s[3], w, count)
    reset_at = w + dur if count > 0 else t
    return state, _response(req, passed, lim - count, reset_at, retry_at, now)


# --- sliding window counter -------------------------------------------------


def _sw_at(s: State, now: int) -> tuple[int, int, int, int]:
    dur, start, prev, cur = s[2], s[4], s[5], s[6]
    t = now if now > start else start
    w = t - t % dur
    if w == start + dur:
        prev, cur = cur, 0
    elif w != start:
        prev, cur = 0, 0
    return w, prev, cur, t


def _sw_retry(lim: int, dur: int, w: int, prev: int, cur: int, h: int) -> int:
    """Earliest instant at which ``h`` more would pass, nothing else hit (-1: never)."""
    if h > lim:
        return -1
    room = (lim - cur - h) * dur  # budget for the previous window's weight, now
    if room >= 0 and prev > 0:
        return w + dur - room // prev
    room_next = (lim - h) * dur  # next window: previous = cur, current = 0
    if cur == 0:
        return w + dur
    return w + dur + max(0, dur - room_next // cur)


def _sw_step(s: State, req: RateLimitRequest, now: int) -> tuple[State, RateLimitResponse]:
    lim, dur = s[1], s[2]
    w, prev, cur, t = _sw_at(s, now)
    e = t - w
    h = req.hits
    passed, retry_at = True, -1
    if int(req.behavior) & _RESET:
        prev, cur = 0, 0
    elif h > 0:
        if prev * (dur - e) + (cur + h) * dur <= lim * dur:
            cur += h
        else:
            passed = False
            retry_at = _sw_retry(lim, dur, w, prev, cur, h)
            if _over(req) and cur < lim:
                cur = lim
    elif h < 0:
        back = -h
        take = min(cur, back)
        cur -= take
        prev = max(0, prev - (back - take))
    used = prev * (dur - e) + cur * dur
    reset_at = w + 2 * dur if cur > 0 else (w + dur if prev > 0 else t)
    state = (s[0], lim, dur, s[3], w, prev, cur)
    return state, _response(req, passed, (lim * dur - used) // dur, reset_at, retry_at, now)


# --- concurrency ------------------------------------------------------------


def _cc_live(s: State, now: int) -> tuple[_Lease, ...]:
    return tuple(lease for lease in s[4] if lease[2] > now)


def _cc_put(
    leases: tuple[_Lease, ...], lease_id: str, held: int, expires: int
) -> tuple[_Lease, ...]:
    rest = [lease for lease in leases if lease[0] != lease_id]
    if held > 0:
        rest.append((lease_id, held, expires))
    rest.sort()
    return tuple(rest)


def _cc_step(s: State, req: RateLimitRequest, now: int) -> tuple[State, RateLimitResponse]:
    lim, dur = s[1], s[2]
    leases = _cc_live(s, now)
    held = sum(lease[1] for lease in leases)
    h = req.hits
    passed, retry_at = True, -1
    mine = next((lease for lease in leases if lease[0] == req.lease), None)
    if int(req.behavior) & _RESET:
        leases = ()
    elif h > 0:
        if held + h <= lim:
            old_held, old_exp = (mine[1], mine[2]) if mine is not None else (0, 0)
            leases = _cc_put(leases, req.lease, old_held + h, max(old_exp, now + dur))
        else:
            passed = False
            if h <= lim:
                need, freed = held + h - lim, 0
                for lease in sorted(leases, key=lambda x: x[2]):
                    freed += lease[1]
                    if freed >= need:
                        retry_at = lease[2]
                        break
    elif h < 0 and mine is not None:
        leases = _cc_put(leases, mine[0], mine[1] + h, mine[2])
    held = sum(lease[1] for lease in leases)
    reset_at = max((lease[2] for lease in leases), default=now)
    state = (s[0], lim, dur, s[3], leases)
    return state, _response(req, passed, lim - held, reset_at, retry_at, now)


# --- dispatch ---------------------------------------------------------------

_STEPS: Final[dict[int, _Step]] = {
    _TB: _tb_step,
    _LB: _lb_step,
    _GCRA: _gcra_step,
    _FW: _fw_step,
    _SW: _sw_step,
    _CC: _cc_step,
}


def available(state: State, now: int) -> int:
    """Hits that would pass at ``now`` under the state's own limit.

    Exact (rounded down) and possibly negative: a state that counted more
    than its limit (by :func:`force`) owes the difference.
    """
    alg = state[0]
    if alg == _TB:
        level, _ = _tb_at(state, now)
        return int(level // state[2])
    if alg == _LB:
        water, _ = _lb_at(state, now)
        return int((capacity_of(state) * state[2] - water) // state[2])
    if alg == _GCRA:
        interval, tau = _gcra_params(state)
        tat = state[4] if state[4] > now else now
        return (tau - (tat - now)) // interval
    if alg == _FW:
        _, count, _ = _fw_at(state, now)
        return int(state[1]) - count
    if alg == _SW:
        w, prev, cur, t = _sw_at(state, now)
        dur = state[2]
        return int((state[1] * dur - prev * (dur - (t - w)) - cur * dur) // dur)
    return int(state[1]) - sum(lease[1] for lease in _cc_live(state, now))


def force(state: State, hits: int, now: int) -> State:
    """Count ``hits`` (>= 0) as passed at ``now``, whatever the limit says.

    Used for hits that were decided elsewhere (another replica, an earlier
    limit of the key) and must not be forgotten; the state may end up owing
    (``available < 0``), which later requests pay back.
    """
    if hits < 0:
        raise ValueError(f"force counts hits, not refunds: {hits}")
    alg, lim, dur, burst = state[0], state[1], state[2], state[3]
    if alg == _TB:
        level, t = _tb_at(state, now)
        return (alg, lim, dur, burst, level - hits * dur, t)
    if alg == _LB:
        water, t = _lb_at(state, now)
        return (alg, lim, dur, burst, water + hits * dur, t)
    if alg == _GCRA:
        interval, _ = _gcra_params(state)
        tat = state[4] if state[4] > now else now
        return (alg, lim, dur, burst, tat + hits * interval)
    if alg == _FW:
        w, count, _ = _fw_at(state, now)
        return (alg, lim, dur, burst, w, count + hits)
    if alg == _SW:
        w, prev, cur, _ = _sw_at(state, now)
        return (alg, lim, dur, burst, w, prev, cur + hits)
    leases = _cc_live(state, now)
    if hits == 0:
        return (alg, lim, dur, burst, leases)
    old = next((lease for lease in leases if lease[0] == FORCED_LEASE), None)
    held, exp = (old[1], old[2]) if old is not None else (0, 0)
    return (alg, lim, dur, burst, _cc_put(leases, FORCED_LEASE, held + hits, max(exp, now + dur)))


def convert(state: State, req: RateLimitRequest, now: int) -> State:
    """``state`` re-expressed under ``req``'s limit, never forgetting a hit.

    The same limit: ``state`` itself. The same window algorithm and duration,
    or CONCURRENCY to CONCURRENCY: the counts are kept and only the limit
    changes. Anything else (another algorithm, another rate): the hits the
    old state counts, ``capacity - available`` rounded up, are forced onto a
    fresh state of the new limit. (gubernator resets the count when the
    algorithm changes; we carry it over, so that changing a limit is never
    a way around it.)
    """
    alg = int(req.algorithm)
    if (state[0], state[1], state[2], state[3]) == (alg, req.limit, req.duration_ns, req.burst):
        return state
    if state[0] == alg and (alg == _CC or (alg in (_FW, _SW) and state[2] == req.duration_ns)):
        return (alg, req.limit, req.duration_ns, req.burst, *state[4:])
    used = capacity_of(state) - available(state, now)
    return force(fresh(req, now), max(0, used), now)


def decide(
    state: State | None, req: RateLimitRequest, now: int
) -> tuple[State | None, RateLimitResponse]:
    """Answer ``req`` at ``now`` from ``state`` (None: nothing counted yet).

    ``req`` must have passed :func:`~peer_ring.apps.ratelimit._types.check_request`.
    Returns the state to keep and the response. A peek (``hits == 0``
    without ``RESET_REMAINING``) returns ``state`` itself, so the caller can
    tell by identity that nothing is to be written; so does a refusal of
    the token or leaky bucket that took nothing (under the same limit): the
    stored state reads the same at every later instant. (A window refusal
    returns an equal tuple: the caller compares.)
    """
    current = fresh(req, now) if state is None else convert(state, req, now)
    new, resp = _STEPS[int(req.algorithm)](current, req, now)
    if req.hits == 0 and not int(req.behavior) & _RESET:
        return state, resp
    return new, resp


# --- decoding ---------------------------------------------------------------


def _bad(state: object, why: str) -> InvalidRequest:
    return InvalidRequest(f"invalid rate-limit state ({why}): {state!r:.80}")


def _is_int(x: object) -> bool:
    return type(x) is int and -(1 << 127) < x < (1 << 127)


def decode_state(obj: object) -> State:
    """A state that arrived from the network (msgpack lists), checked, as a tuple.

    Raises :class:`InvalidRequest` for anything :func:`decide` could not
    use: a wrong shape, a bad limit, a non-integer field.
    """
    if type(obj) not in (list, tuple):
        raise _bad(obj, "not a sequence")
    items: list[Any] = list(obj)  # type: ignore[call-overload]
    if len(items) < 5:
        raise _bad(obj, "too short")
    try:
        alg = check_limit(items[0], items[1], items[2], items[3])
    except InvalidRequest as exc:
        raise _bad(obj, str(exc)) from None
    sizes = {_TB: 6, _LB: 6, _GCRA: 5, _FW: 6, _SW: 7, _CC: 5}
    if len(items) != sizes[int(alg)]:
        raise _bad(obj, f"{alg.name} states have {sizes[int(alg)]} fields")
    items[0] = int(alg)
    if alg is not Algorithm.CONCURRENCY:
        if not all(_is_int(x) for x in items[4:]):
            raise _bad(obj, "fields must be integers")
        return tuple(items)
    raw = items[4]
    if type(raw) not in (list, tuple) or len(raw) > items[1] + 1:
        raise _bad(obj, "leases must be a list of at most limit + 1 entries")
    leases: list[_Lease] = []
    for entry in raw:
        if type(entry) not in (list, tuple) or len(entry) != 3:
            raise _bad(obj, "a lease is [id, held, expires]")
        lease_id, held, expires = entry
        if type(lease_id) is not str or len(lease_id) > MAX_NAME_LEN:
            raise _bad(obj, "lease id must be a string")
        if type(held) is not int or held <= 0 or not _is_int(expires):
            raise _bad(obj, "lease held must be positive and expires an integer")
        leases.append((lease_id, held, expires))
    leases.sort()
    if len({lease[0] for lease in leases}) != len(leases):
        raise _bad(obj, "duplicate lease ids")
    items[4] = tuple(leases)
    return tuple(items)
