"""Configuration of the distributed rate limiter (:class:`RateLimiterConfig`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from peer_ring.app import ConfigError

__all__ = ["RateLimiterConfig"]


@dataclass(frozen=True, slots=True)
class RateLimiterConfig:
    """Knobs of :class:`~peer_ring.apps.ratelimit.RateLimiter`; durations in float seconds.

    **The crash bound** of ``exact`` mode follows from the first three: a
    key's owner copies the state of the keys it decided to the key's other
    owners once ``copy_every`` decisions are waiting or ``copy_interval``
    after the first of them, whichever comes first; and a decision waits
    while ``max_unreplicated`` decisions are not yet acknowledged by the
    other owners. So when the owner is killed, the next owner has a copy
    that lacks at most ``max_unreplicated`` decisions -- the hits of those
    (at most ``max_unreplicated`` x the largest ``hits`` per request; one
    each for plain hits) is the most a crash can over-admit. Smaller values
    tighten the bound and cost more peer messages (``copy_every=1`` copies
    every decision before the next one waits).
    """

    #: Decisions that trigger a copy to the other owners (>= 1).
    copy_every: int = 32
    #: Longest a decided key waits for its copy to start (seconds, > 0).
    copy_interval: float = 0.05
    #: Unacknowledged decisions at which new decisions wait for the copy to
    #: land (>= ``copy_every``); the crash bound in decisions. 0: twice
    #: ``copy_every``.
    max_unreplicated: int = 0
    #: How often each node forgets keys that are back to full (seconds).
    sweep_interval: float = 10.0
    #: Deadline of one forwarded decision or copy (seconds; 0: the node's
    #: request timeout).
    timeout: float = 0.0
    #: Most requests one batch call takes (gubernator's default is 1000).
    max_batch: int = 1000
    #: Mode of a request that names none: ``exact`` (decided at the owner),
    #: ``lease`` (decided from a quota slice the owner granted this node) or
    #: ``global`` (gubernator's GLOBAL: decided from a cached copy, synced
    #: asynchronously). Requests with gubernator's GLOBAL flag use ``global``.
    mode: str = "exact"
    #: ``lease``: a node asks for ``limit / lease_fraction`` hits at a time
    #: (at least the request's hits, at most ``lease_max_slice``).
    lease_fraction: int = 8
    lease_max_slice: int = 1000
    #: ``lease``: how long a slice may be used (seconds); a window
    #: algorithm's slice also ends with its window. Unused hits go back to
    #: the owner when it ends.
    lease_ttl: float = 1.0
    #: ``global``: how often a node sends the hits it admitted to the owner
    #: and refreshes its copies (seconds). The error bound scales with it.
    global_sync_interval: float = 0.05

    def __post_init__(self) -> None:
        if type(self.copy_every) is not int or self.copy_every < 1:
            raise ConfigError(f"copy_every must be an integer >= 1, got {self.copy_every!r}")
        if self.mode not in ("exact", "lease", "global"):
            raise ConfigError(f"mode must be exact, lease or global, got {self.mode!r}")
        for name in ("lease_fraction", "lease_max_slice"):
            v = getattr(self, name)
            if type(v) is not int or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("copy_interval", "sweep_interval", "lease_ttl", "global_sync_interval"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {v!r}")
        if not isinstance(self.timeout, int | float) or not 0 <= self.timeout < math.inf:
            raise ConfigError(f"timeout must be >= 0 seconds, got {self.timeout!r}")
        mu = self.max_unreplicated
        if type(mu) is not int or (mu != 0 and mu < self.copy_every):
            raise ConfigError(
                f"max_unreplicated must be 0 or an integer >= copy_every ({self.copy_every}),"
                f" got {mu!r}"
            )
        if type(self.max_batch) is not int or not 1 <= self.max_batch <= 100_000:
            raise ConfigError(
                f"max_batch must be an integer in [1, 100000], got {self.max_batch!r}"
            )

    @property
    def unreplicated_limit(self) -> int:
        """``max_unreplicated`` with its default applied: the crash bound in decisions."""
        return self.max_unreplicated or 2 * self.copy_every
