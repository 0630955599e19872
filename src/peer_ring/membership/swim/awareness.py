"""Lifeguard local health awareness (Dadgar et al. 2017, section IV-A).

A score in ``[0, max]``: raised when this node misses nacks it expected (its
own slowness, not the target's) or must refute a suspicion of itself, lowered
on every successful probe. Probe intervals and timeouts are multiplied by
``score + 1``: an overloaded node probes less and waits longer instead of
accusing healthy members.
"""

from __future__ import annotations


class Awareness:
    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.score = 0

    def apply(self, delta: int) -> None:
        self.score = min(self.maximum, max(0, self.score + delta))

    def scale(self, seconds: float) -> float:
        return seconds * (self.score + 1)
