"""Local failure detector: liveness from this node's own experience.

Discovery says who is in the cluster; this module says who answers. It is
fed by two sources: the transport's health observer (connects, broken
channels, request timeouts) and the node's periodic pings. A member is
marked DOWN after ``failures_to_down`` consecutive failures and UP again on
the first success. Down is not gone: a down member keeps its place in the
ring; the node only routes around it.

Deterministic under an injected :class:`~peer_ring.clock.Clock`: the detector
never reads the time itself except through the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from peer_ring.clock import Clock
from peer_ring.errors import ConfigError
from peer_ring.membership.base import MemberState


@dataclass(frozen=True, slots=True)
class FailureDetectorConfig:
    """Failure-detection settings (seconds).

    Every ``ping_interval`` the node pings each member it has not heard from
    within that interval; a ping unanswered within ``ping_timeout`` is a
    failure. Detection time of a silent peer is about
    ``failures_to_down × ping_interval + ping_timeout``; a refused connection
    (crashed process) counts at once, so crashes are seen within about one
    interval. Lower values detect faster and raise the risk of false
    positives on a loaded machine.
    """

    #: Seconds between pings of a member not heard from within that time.
    ping_interval: float = 0.5
    #: Seconds a ping may go unanswered before it counts as a failure.
    ping_timeout: float = 0.5
    #: Consecutive failures that mark a member down. Higher tolerates a
    #: loaded or briefly paused peer, and detects a dead one later.
    failures_to_down: int = 2

    def __post_init__(self) -> None:
        if not (self.ping_interval > 0 and self.ping_timeout > 0):
            raise ConfigError("failure detector intervals must be > 0")
        if self.failures_to_down < 1:
            raise ConfigError("failures_to_down must be >= 1")


class _Health:
    __slots__ = ("changed_at", "failures", "last_ok", "state")

    def __init__(self, now: float) -> None:
        self.state = MemberState.UP
        self.failures = 0
        self.last_ok = now
        self.changed_at = now


#: ``listener(member_id, new_state)``, called synchronously; must not block.
StateListener = Callable[[str, MemberState], None]


class FailureDetector:
    """Tracks UP/DOWN per member id. See the module docstring."""

    def __init__(self, clock: Clock, config: FailureDetectorConfig | None = None) -> None:
        self.clock = clock
        self.config = config or FailureDetectorConfig()
        self._health: dict[str, _Health] = {}
        self._listeners: list[StateListener] = []
        self._down: set[str] = set()

    @property
    def bound(self) -> float:
        """Seconds within which a silent member is marked down (the docstring of
        :class:`FailureDetectorConfig`: ``failures_to_down × ping_interval +
        ping_timeout``); a crashed process with a refused port is seen sooner."""
        c = self.config
        return c.failures_to_down * c.ping_interval + c.ping_timeout

    def add_listener(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def track(self, member_id: str) -> None:
        """Start tracking a member (it starts UP: innocent until proven silent)."""
        if member_id not in self._health:
            self._health[member_id] = _Health(self.clock.monotonic())

    def forget(self, member_id: str) -> None:
        self._health.pop(member_id, None)
        self._down.discard(member_id)

    @property
    def any_down(self) -> bool:
        """True when some tracked member is DOWN (a constant-time check for hot paths)."""
        return bool(self._down)

    def success(self, member_id: str) -> None:
        h = self._health.get(member_id)
        if h is None:
            return
        h.failures = 0
        h.last_ok = self.clock.monotonic()
        if h.state is not MemberState.UP:
            self._set(member_id, h, MemberState.UP)

    def failure(self, member_id: str, *, definite: bool = False) -> None:
        """Count a failure; ``definite`` (connection refused) marks down at once."""
        h = self._health.get(member_id)
        if h is None:
            return
        h.failures += 1
        if h.state is MemberState.UP and (definite or h.failures >= self.config.failures_to_down):
            self._set(member_id, h, MemberState.DOWN)

    def _set(self, member_id: str, h: _Health, state: MemberState) -> None:
        h.state = state
        if state is MemberState.UP:
            self._down.discard(member_id)
        else:
            self._down.add(member_id)
        h.changed_at = self.clock.monotonic()
        for listener in self._listeners:
            listener(member_id, state)

    def state(self, member_id: str) -> MemberState:
        h = self._health.get(member_id)
        return MemberState.UP if h is None else h.state

    def is_up(self, member_id: str) -> bool:
        h = self._health.get(member_id)
        return h is None or h.state is MemberState.UP

    def down_for(self, member_id: str) -> float:
        """Seconds the member has been DOWN (0 when up)."""
        h = self._health.get(member_id)
        if h is None or h.state is MemberState.UP:
            return 0.0
        return self.clock.monotonic() - h.changed_at

    def needs_ping(self, member_id: str) -> bool:
        """True when nothing good was heard from the member for a ping interval."""
        h = self._health.get(member_id)
        if h is None:
            return False
        return self.clock.monotonic() - h.last_ok >= self.config.ping_interval

    def states(self) -> dict[str, MemberState]:
        return {mid: h.state for mid, h in self._health.items()}
