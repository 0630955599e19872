"""Hybrid logical clocks.

Implements the HLC of Kulkarni, Demirbas, Madappa, Avva and Leone, "Logical
Physical Clocks and Consistent Snapshots in Globally Distributed Databases"
(OPODIS 2014). A timestamp is ``(l, c)``: ``l`` the largest physical time
(milliseconds) this node has heard of, ``c`` a logical counter that orders
events sharing the same ``l``.

Invariants (for one :class:`HLC` instance):

* **Monotonic**: every timestamp returned by :meth:`HLC.now` or
  :meth:`HLC.update` is strictly greater than every one returned before,
  however the wall clock moves (backwards jumps included).
* **Causal**: ``update(m)`` returns a timestamp strictly greater than ``m``
  (unless ``m`` is rejected, see below), so a receive is ordered after its
  send on every node.
* **Close to physical time**: ``l >= pt`` where ``pt`` is the local wall clock
  in whole milliseconds when the timestamp was taken. ``l - pt`` is bounded by
  the largest clock offset accepted from a peer (``max_offset``) plus the
  carries of counter overflow (below).
* **Packable**: a :class:`Timestamp` packs into one unsigned 64-bit integer,
  48 bits of milliseconds since the Unix epoch (good until the year 10889) and
  16 bits of logical counter; integer order equals timestamp order.

Logical counter overflow. The paper bounds ``c`` by the number of events in
one clock-offset window; a 16-bit counter is exhausted after 65 536 events
within one millisecond that all share the same ``l``. When that happens the
clock *carries*: ``l`` advances by one millisecond and ``c`` restarts at 0.
Monotonicity is kept; the cost is ``l`` running up to a millisecond ahead of
physical time per 65 536 events, which the physical clock absorbs once it
catches up.

Remote timestamps from the future. A peer whose wall clock is far ahead would
drag every HLC in the cluster forward with it: last-writer-wins would then
favour that peer's writes and the logical counters of everyone else would
absorb the gap. The paper assumes a bounded offset ``ε`` and suggests that a
message violating it be rejected or reported. :class:`HLC` makes this a
choice (:class:`SkewPolicy`):

* ``REJECT`` (default): :meth:`HLC.update` raises :class:`ClockSkewError` and
  leaves the clock unchanged. The offending message is refused: writes
  coordinated by a badly skewed node fail loudly instead of winning every
  last-writer-wins race. The skewed node must be fixed (NTP).
* ``ACCEPT``: the timestamp is merged anyway and a (rate-limited) warning is
  logged. Availability is kept; the price is that LWW ordering follows the
  fastest clock in the cluster until real time catches up.

The default ``max_offset`` is 300 s: far above what NTP-synchronised machines
drift (milliseconds), and above the ±60 s offsets the fault-injection tests
apply to one node (two nodes may then differ by 120 s), so those scenarios
exercise skewed-but-accepted clocks; a clock that is minutes or years off is
refused. Lower it (e.g. to 0.5 s, like CockroachDB's default) where tight
bounds matter more than tolerating misconfigured hosts.

This module does no I/O and imports no asyncio; it only reads
:meth:`peer_ring.clock.Clock.time`.

Reading the real clock. Every write takes a timestamp, so the read of the
wall clock is on the hot path. For a :class:`peer_ring.clock.SystemClock`
(exactly that class, recognised by its module and name: this module may not
import ``peer_ring.clock``, the two are independent layers) whose ``time()``
is by definition ``time.time() + offset``, the HLC reads ``time.time()``
itself and adds the clock's (read-only) offset, taken once at construction:
the same value, without a call into the interpreted clock. Any other clock
-- a test's :class:`~peer_ring.clock.ManualClock`, a stub, a subclass of
SystemClock -- is read through its ``time()`` on every timestamp, so an
injected clock keeps driving the HLC.
"""

from __future__ import annotations

import enum
import logging
import time
from typing import Final, NamedTuple, Protocol

from peer_ring.errors import ConfigError, InvalidRequest, register_error

__all__ = [
    "HLC",
    "LOGICAL_BITS",
    "MAX_LOGICAL",
    "MAX_WALL_MS",
    "ClockSkewError",
    "SkewPolicy",
    "Timestamp",
    "from_int",
    "to_int",
    "wall_seconds",
]

_log = logging.getLogger(__name__)

#: The system wall clock (``Final``: a C static in the compiled build, not a
#: module-dictionary lookup per read; constants below likewise).
_system_time: Final = time.time

#: Bits of the packed integer holding the logical counter.
LOGICAL_BITS: Final = 16


class Clock(Protocol):
    """What an HLC reads: wall-clock seconds since the Unix epoch (``time``),
    and a monotonic clock to rate-limit its warnings (``monotonic``).

    Structural, so that this module imports no event loop:
    :class:`peer_ring.clock.Clock` (system or manual) satisfies it.
    """

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


#: Largest logical counter before the clock carries into the next millisecond.
MAX_LOGICAL: Final = (1 << LOGICAL_BITS) - 1
#: Largest representable wall time, in milliseconds since the epoch.
MAX_WALL_MS: Final = (1 << 48) - 1
_MAX_INT: Final = (1 << 64) - 1
#: Below this every packed timestamp fits the compiled build's unboxed
#: integers (62 bits); comparisons with the 64-bit bound, which is a boxed
#: integer there, are made only for values at or above it (never for a real
#: stamp: they are about 2**57 until the year 2112).
_SMALL: Final = 1 << 61


def _system_offset(clock: object) -> float | None:
    """The wall-clock offset of ``clock`` if it is exactly a
    :class:`peer_ring.clock.SystemClock` (whose ``time()`` is ``time.time() +
    offset``), else None: the HLC then reads ``clock.time()``."""
    cls = type(clock)
    if cls.__name__ == "SystemClock" and cls.__module__ == "peer_ring.clock":
        offset = getattr(clock, "offset", None)
        if type(offset) is float or type(offset) is int:
            return float(offset)
    return None


class Timestamp(NamedTuple):
    """A hybrid logical clock timestamp, ordered by ``(wall_ms, logical)``.

    Tuple order is the clock's total order and equals the order of
    :meth:`to_int`.
    """

    wall_ms: int
    logical: int

    def to_int(self) -> int:
        """Pack into an unsigned 64-bit integer (48 bits ms, 16 bits counter)."""
        return (self.wall_ms << LOGICAL_BITS) | self.logical

    @classmethod
    def from_int(cls, value: object) -> Timestamp:
        """Inverse of :meth:`to_int`; raises InvalidRequest for anything but an
        integer in ``[0, 2**64)`` (it decodes what a peer sent)."""
        if type(value) is not int or (not 0 <= value < _SMALL and not 0 <= value <= _MAX_INT):
            raise InvalidRequest(f"HLC timestamp {value!r} is not an unsigned 64-bit integer")
        return cls(value >> LOGICAL_BITS, value & MAX_LOGICAL)

    @property
    def wall_seconds(self) -> float:
        """The physical component as Unix seconds (float)."""
        return self.wall_ms / 1000.0


def to_int(ts: Timestamp) -> int:
    """Pack ``ts`` into one unsigned 64-bit integer; order preserving."""
    return (ts[0] << LOGICAL_BITS) | ts[1]


def from_int(value: object) -> Timestamp:
    """Unpack an integer made by :func:`to_int`."""
    return Timestamp.from_int(value)


def wall_seconds(ts: Timestamp | int) -> float:
    """Physical component of a timestamp (or of its packed integer) in seconds."""
    if isinstance(ts, int):
        return (ts >> LOGICAL_BITS) / 1000.0
    return ts[0] / 1000.0


@register_error
class ClockSkewError(InvalidRequest):
    """A remote HLC timestamp is further ahead of the local clock than allowed.

    Raised by :meth:`HLC.update` under :attr:`SkewPolicy.REJECT`. The local
    clock was not changed. Unlike a generic :class:`InvalidRequest` the
    request itself may be fine: the *sender's* wall clock is wrong (or ours
    is), so fix clock synchronisation rather than the request.
    """

    code = "CLOCK_SKEW"


class SkewPolicy(enum.Enum):
    """What :meth:`HLC.update` does with a timestamp beyond ``max_offset``."""

    REJECT = "reject"
    ACCEPT = "accept"


class HLC:
    """A hybrid logical clock over an injectable :class:`~peer_ring.clock.Clock`.

    Not thread-safe; like the rest of a node it is used from one event loop.
    ``max_offset`` is in seconds: a remote timestamp whose physical part is
    more than that ahead of the local wall clock is handled per ``policy``.
    ``warn_interval`` (seconds of ``clock.monotonic()``) rate-limits the
    warning logged under :attr:`SkewPolicy.ACCEPT`.
    """

    __slots__ = (
        "_c",
        "_clock",
        "_fast",
        "_l",
        "_last_warn",
        "_max_offset_ms",
        "_offset",
        "_policy",
        "_warn_interval",
        "rejected",
        "skewed",
    )

    def __init__(
        self,
        clock: Clock,
        *,
        max_offset: float = 300.0,
        policy: SkewPolicy | str = SkewPolicy.REJECT,
        warn_interval: float = 10.0,
    ) -> None:
        if not max_offset > 0:
            raise ConfigError(f"HLC max_offset must be > 0 seconds, got {max_offset!r}")
        try:
            policy = SkewPolicy(policy)
        except ValueError:
            choices = ", ".join(repr(p.value) for p in SkewPolicy)
            raise ConfigError(f"HLC policy must be one of {choices}, got {policy!r}") from None
        self._clock = clock
        offset = _system_offset(clock)
        #: read time.time() directly (a SystemClock), adding this offset
        self._fast = offset is not None
        self._offset = 0.0 if offset is None else offset
        self._l = 0
        self._c = 0
        self._max_offset_ms = int(max_offset * 1000)
        self._policy = policy
        self._warn_interval = warn_interval
        self._last_warn: float | None = None
        #: Remote timestamps seen beyond ``max_offset`` (accepted or rejected).
        self.skewed = 0
        #: Remote timestamps refused under :attr:`SkewPolicy.REJECT`.
        self.rejected = 0

    @property
    def max_offset(self) -> float:
        """Largest accepted lead of a remote clock, in seconds."""
        return self._max_offset_ms / 1000.0

    @property
    def policy(self) -> SkewPolicy:
        return self._policy

    def _physical_ms(self) -> int:
        if self._fast:
            pt = int((_system_time() + self._offset) * 1000.0)
        else:
            pt = int(self._clock.time() * 1000.0)
        if pt < 0:
            return 0
        return pt if pt <= MAX_WALL_MS else MAX_WALL_MS

    def wall(self) -> float:
        """The clock's wall time in seconds, ``clock.time()`` -- read as the
        stamps read it (``time.time()`` plus the offset, for a SystemClock)."""
        if self._fast:
            return _system_time() + self._offset
        return self._clock.time()

    def last(self) -> Timestamp:
        """The most recent timestamp issued (``(0, 0)`` before the first)."""
        return Timestamp(self._l, self._c)

    def now_int(self) -> int:
        """:meth:`now`, packed with :func:`to_int` (the hot-path variant)."""
        pt = self._physical_ms()
        if pt > self._l:
            self._l = pt
            self._c = 0
        elif self._c < MAX_LOGICAL:
            self._c += 1
        else:  # counter exhausted: carry into the next millisecond
            self._l += 1
            self._c = 0
        return (self._l << LOGICAL_BITS) | self._c

    def now(self) -> Timestamp:
        """Timestamp a local or send event. Strictly greater than any before."""
        self.now_int()
        return Timestamp(self._l, self._c)

    def last_int(self) -> int:
        """:meth:`last`, packed with :func:`to_int` (the hot-path variant)."""
        return (self._l << LOGICAL_BITS) | self._c

    def after_int(self, top: int) -> int:
        """A packed timestamp for a write over a state whose largest stamp is
        ``top``: :meth:`update_int` of ``top`` when it is not below
        :meth:`last_int` (so the result is greater than ``top``), else
        :meth:`now_int` (the hot-path form of that choice: one call)."""
        if top >= (self._l << LOGICAL_BITS) | self._c:
            return self.update_int(top)
        return self.now_int()

    def update(self, remote: Timestamp | int) -> Timestamp:
        """Merge a timestamp received from a peer; timestamp the receive event.

        Returns a timestamp strictly greater than both ``remote`` and every
        timestamp issued before. Raises :class:`ClockSkewError` (clock left
        unchanged) when ``remote`` is more than ``max_offset`` ahead of the
        local wall clock and the policy is :attr:`SkewPolicy.REJECT`;
        :class:`InvalidRequest` when ``remote`` is not a valid timestamp.
        """
        if isinstance(remote, int):
            remote = Timestamp.from_int(remote)
        lm, cm = remote
        if (
            type(lm) is not int
            or type(cm) is not int
            or not (0 <= lm <= MAX_WALL_MS and 0 <= cm <= MAX_LOGICAL)
        ):
            raise InvalidRequest(f"invalid HLC timestamp {remote!r}")
        self._merge(lm, cm)
        return Timestamp(self._l, self._c)

    def update_int(self, remote: int) -> int:
        """:meth:`update` of a packed timestamp, packed (the hot-path variant)."""
        if not 0 <= remote < _SMALL and not 0 <= remote <= _MAX_INT:  # see _SMALL
            raise InvalidRequest(f"HLC timestamp {remote!r} is not an unsigned 64-bit integer")
        self._merge(remote >> LOGICAL_BITS, remote & MAX_LOGICAL)
        return (self._l << LOGICAL_BITS) | self._c

    def _merge(self, lm: int, cm: int) -> None:
        pt = self._physical_ms()
        if lm - pt > self._max_offset_ms:
            self._on_skew(lm, pt)
        l_old, c_old = self._l, self._c
        new_l = max(l_old, lm, pt)
        if new_l == l_old and new_l == lm:
            c = max(c_old, cm) + 1
        elif new_l == l_old:
            c = c_old + 1
        elif new_l == lm:
            c = cm + 1
        else:
            c = 0
        if c > MAX_LOGICAL:
            new_l += 1
            c = 0
        self._l, self._c = new_l, c

    def _on_skew(self, lm: int, pt: int) -> None:
        self.skewed += 1
        ahead = (lm - pt) / 1000.0
        if self._policy is SkewPolicy.REJECT:
            self.rejected += 1
            raise ClockSkewError(
                f"remote HLC timestamp is {ahead:.3f}s ahead of the local clock "
                f"(max_offset {self.max_offset:.3f}s); check clock synchronisation"
            )
        mono = self._clock.monotonic()
        if self._last_warn is None or mono - self._last_warn >= self._warn_interval:
            self._last_warn = mono
            _log.warning(
                "accepting HLC timestamp %.3fs ahead of the local clock (max_offset %.3fs); "
                "check clock synchronisation",
                ahead,
                self.max_offset,
            )
