"""Timers for the SWIM agent: an asyncio scheduler over a Clock, and a simulator.

The agent (:mod:`.agent`) is a synchronous state machine: it reacts to packets
and to timers, and never awaits. All of its time comes from a
:class:`Scheduler`:

* :class:`ClockScheduler` runs each timer as an asyncio task sleeping on a
  :class:`peer_ring.clock.Clock` -- :class:`~peer_ring.clock.SystemClock` in
  production, :class:`~peer_ring.clock.ManualClock` in asyncio tests.
* :class:`SimScheduler` is a discrete-event simulator (a heap of timers, no
  event loop): hundreds of simulated members run for simulated minutes in
  seconds of CPU, deterministically for a given seed. ManualClock is not used
  there because waking one asyncio task per timer costs ~10x more.

Invariant of both: callbacks run one at a time, in non-decreasing time order
(ties in scheduling order); a cancelled timer's callback never runs.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable
from typing import Protocol

from peer_ring.clock import Clock

log = logging.getLogger(__name__)


class Timer(Protocol):
    def cancel(self) -> None:
        """Stop the timer; its callback will not run. Idempotent."""
        ...


class Scheduler(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def wall(self) -> float:
        """Wall-clock seconds since the epoch (replay-window timestamps)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` after ``delay`` seconds. The callback must not block."""
        ...


class _TaskTimer:
    __slots__ = ("task",)

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task

    def cancel(self) -> None:
        self.task.cancel()


class ClockScheduler:
    """Timers as asyncio tasks sleeping on an injected :class:`Clock`.

    A callback that raises is logged and counted in :attr:`errors`; it never
    stops the scheduler.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.errors = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        return self.clock.monotonic()

    def wall(self) -> float:
        return self.clock.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        async def run() -> None:
            await self.clock.sleep(max(0.0, delay))
            try:
                callback()
            except Exception:
                self.errors += 1
                log.exception("swim timer callback failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return _TaskTimer(task)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class _SimTimer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class SimScheduler:
    """Deterministic discrete-event scheduler; time moves only in :meth:`run_until`.

    Exceptions raised by callbacks propagate out of :meth:`run_until` (a bug
    in a simulation should fail the test, not be logged).
    """

    def __init__(self, start: float = 1_000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset - start
        self._heap: list[tuple[float, int, _SimTimer, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.executed = 0

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = _SimTimer()
        heapq.heappush(self._heap, (self._now + max(0.0, delay), next(self._seq), timer, callback))
        return timer

    def run_until(self, when: float, stop: Callable[[], bool] | None = None) -> bool:
        """Run callbacks due up to ``when``; with ``stop``, return True as soon as it holds.

        ``stop`` is checked after each callback; time is left at the instant it
        became true (otherwise at ``when``).
        """
        heap = self._heap
        while heap and heap[0][0] <= when:
            at, _, timer, callback = heapq.heappop(heap)
            if timer.cancelled:
                continue
            self._now = max(self._now, at)
            self.executed += 1
            callback()
            if stop is not None and stop():
                return True
        self._now = max(self._now, when)
        return stop is not None and stop()

    def run_for(self, seconds: float, stop: Callable[[], bool] | None = None) -> bool:
        return self.run_until(self._now + seconds, stop)
