"""Injectable time.

Everything in peer-ring that depends on time (failure detection, TTLs,
timeouts, gossip periods) takes a :class:`Clock`. Production code uses
:class:`SystemClock`; tests use :class:`ManualClock`, whose time only moves
when the test advances it, so a 30-second failure-detector scenario runs in
milliseconds and is deterministic.

``monotonic()`` is for durations and deadlines; ``time()`` is wall-clock
seconds since the epoch, used only where a value must mean the same on two
machines (TTL expiry instants, hybrid logical clocks).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time as _time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Source of time. Implementations must be safe to call from the event loop."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (arbitrary origin)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clocks, optionally with a fixed wall-clock offset.

    ``offset`` shifts :meth:`time` only (fault injection of a skewed node);
    :meth:`monotonic` is never shifted. It is fixed for the clock's life:
    :class:`peer_ring.hlc.HLC` recognises a SystemClock (this exact class) and
    reads ``time.time() + offset`` itself, without calling :meth:`time`, so
    :meth:`time` must stay exactly that.
    """

    __slots__ = ("_offset",)

    def __init__(self, offset: float = 0.0) -> None:
        self._offset = float(offset)

    @property
    def offset(self) -> float:
        """Seconds added to the system wall clock (read-only)."""
        return self._offset

    def monotonic(self) -> float:
        return _time.monotonic()

    def time(self) -> float:
        return _time.time() + self._offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to.

    ``await clock.sleep(d)`` suspends until :meth:`advance` has moved time
    past the wake-up instant. :meth:`advance` wakes sleepers in time order and
    yields to the event loop after each, so code woken at ``t`` runs before
    code woken at ``t + ε``.
    """

    def __init__(self, start: float = 1_000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_delta = wall_start - start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_delta

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    async def advance(self, seconds: float, step: float | None = None) -> None:
        """Move time forward by ``seconds``, waking sleepers on the way.

        With ``step`` the clock moves in increments of at most ``step``,
        letting woken tasks schedule new sleeps that fall inside the window.
        """
        target = self._now + seconds
        while True:
            await _settle()
            if self._sleepers and self._sleepers[0][0] <= target:
                when, _, fut = heapq.heappop(self._sleepers)
                if step is not None and when - self._now > step:
                    heapq.heappush(self._sleepers, (when, next(self._seq), fut))
                    self._now = min(target, self._now + step)
                    continue
                self._now = max(self._now, when)
                if not fut.done():
                    fut.set_result(None)
                continue
            if step is not None and target - self._now > step:
                self._now += step
                continue
            self._now = target
            await _settle()
            return

    @property
    def pending(self) -> int:
        """Number of tasks currently sleeping on this clock."""
        return sum(1 for _, _, f in self._sleepers if not f.done())


async def _settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)
