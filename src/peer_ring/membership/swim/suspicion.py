"""Lifeguard suspicion timer (Dadgar et al. 2017, section IV-B, "LHA-Suspicion").

A suspicion starts with timeout ``max``; each *independent* confirmation
(a suspect message from a member not seen before) shrinks it::

    timeout(c) = max(min, max - (max - min) * log(c + 1) / log(k + 1))

reaching ``min`` after ``k`` confirmations. With ``k == 0`` the timeout is
``min`` from the start. Invariant: the timer fires at most once, at
``start + timeout(c)`` for the confirmations ``c`` received so far (at once if
that instant has passed), unless cancelled.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from peer_ring.membership.swim.sched import Scheduler, Timer


class Suspicion:
    def __init__(
        self,
        scheduler: Scheduler,
        accuser: str,
        k: int,
        min_timeout: float,
        max_timeout: float,
        on_timeout: Callable[[], None],
    ) -> None:
        self.scheduler = scheduler
        self.k = k
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout if k > 0 else min_timeout
        self.on_timeout = on_timeout
        self.start = scheduler.now()
        self.confirmations: set[str] = {accuser}
        self.fired = False
        self._timer: Timer = scheduler.call_later(self.max_timeout, self._fire)

    def timeout(self) -> float:
        c = len(self.confirmations) - 1
        if self.k < 1:
            return self.min_timeout
        frac = math.log(c + 1) / math.log(self.k + 1)
        return max(
            self.min_timeout, self.max_timeout - (self.max_timeout - self.min_timeout) * frac
        )

    def confirm(self, accuser: str) -> bool:
        """Count an independent accuser; True if it was new (and shortened the timer)."""
        if self.fired or accuser in self.confirmations or len(self.confirmations) > self.k:
            return False
        self.confirmations.add(accuser)
        self._timer.cancel()
        remaining = self.start + self.timeout() - self.scheduler.now()
        self._timer = self.scheduler.call_later(max(0.0, remaining), self._fire)
        return True

    def _fire(self) -> None:
        if not self.fired:
            self.fired = True
            self.on_timeout()

    def cancel(self) -> None:
        self.fired = True
        self._timer.cancel()
