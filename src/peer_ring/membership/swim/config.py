"""Configuration of the SWIM agent, in the style of hashicorp/memberlist.

Every duration is in float seconds. Every field states its unit and the
trade-off it controls; derived quantities (suspicion timeout, retransmit
limit, push-pull interval, detection bound) are methods so the formula lives
in exactly one place. Presets :meth:`SwimConfig.local`, :meth:`SwimConfig.lan`
and :meth:`SwimConfig.wan` start from one set of values and change a few.

Invariants checked at construction (:class:`~peer_ring.errors.ConfigError`
otherwise): every interval/timeout is > 0, ``probe_timeout < probe_interval``,
``suspicion_max_timeout_mult >= 1``, ``flap_reuse < flap_suppress``.

References: SWIM (Das, Gupta, Motivala, DSN 2002); Lifeguard (Dadgar,
Phillips, Currey, 2017, arXiv:1707.00788).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from peer_ring.errors import ConfigError


@dataclass(frozen=True, slots=True)
class SwimConfig:
    """Tunables of one SWIM agent. Start from a preset and ``replace()`` a few fields."""

    # --- failure detection -------------------------------------------------
    #: Seconds between two probes of this node (one random member per probe,
    #: round-robin over a shuffled list so every member is probed within
    #: ``2N-1`` intervals). Lower detects failures sooner; costs one ping+ack
    #: per interval per node and makes slow links look dead sooner.
    probe_interval: float = 0.4
    #: Seconds to wait for a direct ack before asking ``indirect_checks``
    #: members to probe for us. Should be above the 99th percentile RTT;
    #: too low causes needless indirect probes (not false positives: those
    #: need the indirect probes and the TCP fallback to fail as well).
    probe_timeout: float = 0.2
    #: Number of members asked to probe the target indirectly when the
    #: direct probe times out. More makes a false suspicion caused by one lossy
    #: path less likely, at the cost of 4 extra packets per helper.
    indirect_checks: int = 3
    #: Also try a TCP ping when the UDP probe times out. Catches networks
    #: that drop UDP but pass TCP; costs one connection per failed probe.
    tcp_fallback: bool = True
    #: Suspicion timeout multiplier. The minimum suspicion timeout is
    #: ``suspicion_mult * max(1, log10(N)) * probe_interval`` seconds; a
    #: suspected member has at least that long to refute. Higher = fewer false
    #: deaths under load, slower detection.
    suspicion_mult: float = 4.0
    #: Lifeguard: a suspicion starts at ``suspicion_max_timeout_mult`` times
    #: the minimum timeout and shrinks towards the minimum as independent
    #: members confirm it (``suspicion_mult - 2`` confirmations expected). A
    #: lone (possibly unhealthy) accuser thus waits the longest.
    suspicion_max_timeout_mult: float = 6.0
    #: Lifeguard local health: the node's own probe interval and timeout are
    #: multiplied by ``score + 1`` where the score grows on missed nacks and
    #: refuted suspicions of itself, and shrinks on successful probes; this
    #: is the score's maximum (so probes back off up to ``awareness_max`` x).
    awareness_max: int = 8
    #: Fraction of ``probe_timeout`` after which a relay that got no ack
    #: from the target answers the requester with a nack.
    nack_fraction: float = 0.8

    # --- dissemination -----------------------------------------------------
    #: Seconds between gossip rounds (membership updates sent to
    #: ``gossip_nodes`` random members). Lower spreads updates faster and
    #: costs more packets when updates are queued (nothing is sent when the
    #: queue is empty).
    gossip_interval: float = 0.1
    #: Members each gossip round sends to (fan-out).
    gossip_nodes: int = 3
    #: Seconds a dead member still receives gossip, so it can learn it was
    #: declared dead and refute (a false positive heals quickly).
    gossip_to_the_dead: float = 15.0
    #: Each update is retransmitted ``retransmit_mult * ceil(log10(N + 1))``
    #: times (piggybacked on probes and gossip). Higher = more robust to loss,
    #: more bytes.
    retransmit_mult: int = 4
    #: Seconds between full-state TCP push-pull syncs with one random member,
    #: for clusters up to 32 members; scaled by ``1 + log2(N/32)`` above.
    #: Repairs anything gossip lost; each sync sends the whole member table.
    push_pull_interval: float = 20.0
    #: Seconds between attempts to re-contact members marked dead (and the
    #: seeds when this node knows no live peer): heals partitions. Each
    #: attempt is one push-pull.
    reconnect_interval: float = 5.0
    #: Seconds a dead or left member stays listed before it is reaped to a
    #: tombstone (which only remembers its incarnation so stale "alive"
    #: gossip cannot resurrect it).
    dead_reap_after: float = 30.0
    #: Seconds a tombstone is kept (and its address re-contacted while dead).
    tombstone_ttl: float = 600.0

    # --- flap damping ------------------------------------------------------
    #: Each revival of a dead member adds 1 penalty; the penalty halves every
    #: ``flap_half_life`` seconds. Above ``flap_suppress`` the member is left
    #: out of the published view (still probed) until the penalty decays to
    #: ``flap_reuse``. Suppress = 3 tolerates two quick restarts.
    flap_half_life: float = 60.0
    #: Flap penalty above which a member is left out of the published view.
    flap_suppress: float = 3.0
    #: Flap penalty below which a suppressed member is published again.
    flap_reuse: float = 1.5

    # --- wire --------------------------------------------------------------
    #: Maximum UDP payload in bytes (compound packets are filled up to it).
    #: 1400 stays under a 1500-byte Ethernet MTU with IP/UDP headers.
    max_packet_size: int = 1400
    #: Maximum bytes of one TCP frame (push-pull state, ~150 bytes/member).
    max_stream_size: int = 8 * 1024 * 1024
    #: Seconds allowed for one TCP exchange (connect + request + reply).
    stream_timeout: float = 5.0
    #: Seconds of wall-clock skew tolerated by replay protection: packets
    #: stamped further from our wall clock are dropped; within the window a
    #: per-sender sequence bitmap drops duplicates. 0 disables the time check.
    replay_window: float = 60.0

    # --- lifecycle ---------------------------------------------------------
    #: Seconds :meth:`SwimDiscovery.start` waits for the seeds to answer.
    join_timeout: float = 10.0
    #: When true, ``start`` raises DiscoveryError if no seed answered; when
    #: false the node starts alone and keeps re-contacting the seeds.
    require_join: bool = False
    #: Seconds a graceful leave keeps gossiping its "left" message before
    #: the node stops.
    leave_propagate: float = 1.0

    def __post_init__(self) -> None:
        positive = (
            "probe_interval",
            "probe_timeout",
            "suspicion_mult",
            "gossip_interval",
            "push_pull_interval",
            "reconnect_interval",
            "dead_reap_after",
            "tombstone_ttl",
            "flap_half_life",
            "flap_suppress",
            "flap_reuse",
            "stream_timeout",
            "join_timeout",
        )
        for name in positive:
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"swim: {name} must be > 0, got {value!r}")
        for name in ("indirect_checks", "gossip_nodes", "awareness_max", "retransmit_mult"):
            if getattr(self, name) < 0:
                raise ConfigError(f"swim: {name} must be >= 0")
        if self.gossip_nodes < 1 or self.retransmit_mult < 1:
            raise ConfigError("swim: gossip_nodes and retransmit_mult must be >= 1")
        if self.probe_timeout >= self.probe_interval:
            raise ConfigError("swim: probe_timeout must be shorter than probe_interval")
        if self.suspicion_max_timeout_mult < 1:
            raise ConfigError("swim: suspicion_max_timeout_mult must be >= 1")
        if not 0 < self.nack_fraction < 1:
            raise ConfigError("swim: nack_fraction must be in (0, 1)")
        if self.flap_reuse >= self.flap_suppress:
            raise ConfigError("swim: flap_reuse must be below flap_suppress")
        if not 512 <= self.max_packet_size <= 65000:
            raise ConfigError("swim: max_packet_size must be in [512, 65000]")
        if self.max_stream_size < 64 * 1024:
            raise ConfigError("swim: max_stream_size must be >= 64 KiB")
        if self.replay_window < 0 or self.leave_propagate < 0 or self.gossip_to_the_dead < 0:
            raise ConfigError("swim: replay_window, leave_propagate, gossip_to_the_dead >= 0")

    # --- presets -----------------------------------------------------------
    @classmethod
    def lan(cls) -> SwimConfig:
        """One data centre: sub-millisecond RTT. Detects a failure in ~4 s at N=50."""
        return cls()

    @classmethod
    def local(cls) -> SwimConfig:
        """One machine / loopback (tests, demos): fast detection, no WAN tolerance."""
        return replace(
            cls(),
            probe_interval=0.3,
            probe_timeout=0.15,
            gossip_interval=0.05,
            push_pull_interval=5.0,
            reconnect_interval=1.0,
            gossip_to_the_dead=5.0,
            dead_reap_after=10.0,
            stream_timeout=2.0,
            join_timeout=3.0,
            leave_propagate=0.5,
        )

    @classmethod
    def wan(cls) -> SwimConfig:
        """Across regions: 100+ ms RTT, lossy paths; slower, more tolerant."""
        return replace(
            cls(),
            probe_interval=5.0,
            probe_timeout=3.0,
            suspicion_mult=6.0,
            gossip_interval=0.5,
            gossip_nodes=4,
            gossip_to_the_dead=60.0,
            push_pull_interval=60.0,
            reconnect_interval=30.0,
            dead_reap_after=120.0,
            stream_timeout=10.0,
            join_timeout=30.0,
            leave_propagate=3.0,
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SwimConfig:
        """A preset by name (``local``, ``lan``, ``wan``) with field overrides."""
        makers = {"local": cls.local, "lan": cls.lan, "wan": cls.wan}
        if name not in makers:
            raise ConfigError(f"swim: unknown preset {name!r}; choose one of {sorted(makers)}")
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"swim: unknown config fields {sorted(unknown)}")
        return replace(makers[name](), **overrides)

    # --- derived quantities ------------------------------------------------
    @staticmethod
    def _node_scale(n: int) -> float:
        return max(1.0, math.log10(max(1, n)))

    def suspicion_min_timeout(self, n: int) -> float:
        """``suspicion_mult * max(1, log10(N)) * probe_interval`` seconds."""
        return self.suspicion_mult * self._node_scale(n) * self.probe_interval

    def suspicion_max_timeout(self, n: int) -> float:
        """``suspicion_max_timeout_mult`` times the minimum (no confirmations yet)."""
        return self.suspicion_max_timeout_mult * self.suspicion_min_timeout(n)

    def suspicion_confirmations(self, n: int) -> int:
        """Independent confirmations that shrink a suspicion to its minimum.

        ``suspicion_mult - 2`` (Lifeguard's K), or 0 when fewer than that
        many other members could confirm.
        """
        k = max(0, int(self.suspicion_mult) - 2)
        return 0 if n - 2 < k else k

    def retransmit_limit(self, n: int) -> int:
        """Times each update is sent: ``retransmit_mult * ceil(log10(N + 1))``."""
        return self.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))

    def push_pull_interval_for(self, n: int) -> float:
        """The push-pull period scaled for cluster size (doubles each doubling above 32)."""
        if n <= 32:
            return self.push_pull_interval
        return self.push_pull_interval * (1 + math.ceil(math.log2(n) - math.log2(32)))

    def detection_bound(self, n: int) -> float:
        """Seconds from a crash until every healthy member lists it dead (practical bound).

        ``2 * probe_interval`` (someone probes it and the probe fails) +
        ``suspicion_max_timeout(n)`` (no confirmation at all) + time for the
        dead message to spread (``retransmit_limit(n)`` gossip rounds) +
        ``probe_interval`` of slack. With confirmations the real time is close
        to ``probe_interval + suspicion_min_timeout(n)``.
        """
        return (
            3 * self.probe_interval
            + self.suspicion_max_timeout(n)
            + self.retransmit_limit(n) * self.gossip_interval
        )
