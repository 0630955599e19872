"""Static discovery: a seed list of contact points, and member-list exchange.

The seeds are contact points, not the cluster: a node started with any one
reachable seed joins, and the member set spreads to every node through a
periodic pairwise exchange of member lists (anti-entropy of the membership
itself, until a gossip protocol takes over; see ``membership.swim``).

Merge rule, per member id: the record with the higher incarnation wins; at
equal incarnation a ``left`` record beats a live one (a node that left stays
gone until it restarts with a higher incarnation). Left records are kept as
tombstones for ``tombstone_ttl`` seconds so the leave spreads everywhere.

Liveness is not this module's business: it lists members, the node's failure
detector decides who answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Any

from peer_ring.clock import Clock, SystemClock
from peer_ring.errors import ConfigError, PeerRingError
from peer_ring.membership.base import Discovery, Exchange, Member

log = logging.getLogger(__name__)

__all__ = ["Exchange", "StaticDiscovery"]


class StaticDiscovery(Discovery):
    """Seed-list discovery with periodic member-list exchange."""

    name = "static"
    exchanges_members = True
    removes_dead_members = True

    def __init__(
        self,
        seeds: Sequence[str] = (),
        *,
        interval: float = 1.0,
        start_timeout: float = 5.0,
        tombstone_ttl: float = 60.0,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        if interval <= 0 or start_timeout <= 0:
            raise ConfigError("static discovery interval and start_timeout must be > 0")
        self.seeds = tuple(dict.fromkeys(seeds))
        self.interval = interval
        self.start_timeout = start_timeout
        self.tombstone_ttl = tombstone_ttl
        self.clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._exchange: Exchange | None = None
        self._local: Member | None = None
        self._records: dict[str, tuple[Member, bool, float]] = {}  # id -> (member, left, since)
        self._task: asyncio.Task[None] | None = None
        self.rejected = 0

    def bind(self, exchange: Exchange) -> None:
        """Give the backend its way to talk to peers (the node calls this)."""
        self._exchange = exchange

    # -- Discovery -------------------------------------------------------
    async def start(self, local: Member) -> None:
        self._local = local
        self._records[local.id] = (local, False, self.clock.monotonic())
        self._publish()
        others = [s for s in self.seeds if s != local.address]
        if others and self._exchange is not None:
            # one round against every seed, bounded by start_timeout; a node
            # whose seeds are all still down starts alone and keeps trying
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(self._sync(s) for s in others)), self.start_timeout
                )
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def leave(self) -> None:
        """Announce that this node leaves the cluster for good (decommission).

        Marks the local record as left and pushes it to a few peers; the
        exchange spreads it to the rest.
        """
        if self._local is None:
            return
        local = self._local
        self._records[local.id] = (local, True, self.clock.monotonic())
        targets = [m.address for m in self._live() if m.id != local.id][:3]
        if targets and self._exchange is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(self._sync(a) for a in targets), return_exceptions=True),
                    2.0,
                )

    async def stop(self) -> None:
        """Stop exchanging. Not a leave: peers keep this node as a member."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._publisher.close()

    def update_local(self, local: Member) -> None:
        self._local = local
        self._records[local.id] = (local, False, self.clock.monotonic())
        self._publish()

    def remove(self, member_id: str) -> None:
        """Mark a member as left (decommission or dead-after); spreads by exchange."""
        rec = self._records.get(member_id)
        if rec is not None and not rec[1]:
            self._records[member_id] = (rec[0], True, self.clock.monotonic())
            self._publish()

    # -- exchange --------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """Our member records, as sent in an exchange."""
        out = []
        for member, left, _ in self._records.values():
            rec = member.to_wire()
            if left:
                rec["left"] = True
            out.append(rec)
        return out

    def merge(self, records: Any) -> bool:
        """Merge records received from a peer; True if the view changed."""
        if not isinstance(records, list):
            self.rejected += 1
            return False
        now = self.clock.monotonic()
        changed = False
        local = self._local
        for raw in records:
            try:
                member = Member.from_wire(raw)
                left = bool(raw.get("left", False))
            except (PeerRingError, AttributeError) as exc:
                self.rejected += 1
                log.warning("ignoring malformed member record %r: %s", raw, exc)
                continue
            if local is not None and member.id == local.id:
                # somebody thinks we left or holds an older life of us: our
                # own record always wins, re-announced with a higher incarnation
                # -- unless we did leave (decommission), which must stick
                own = self._records.get(local.id)
                if own is not None and own[1]:
                    continue
                if left and member.incarnation >= local.incarnation:
                    local = local.with_incarnation(member.incarnation + 1)
                    self._local = local
                    self._records[local.id] = (local, False, now)
                    changed = True
                continue
            cur = self._records.get(member.id)
            if cur is None:
                if left:
                    self._records[member.id] = (member, True, now)
                    continue
                self._records[member.id] = (member, False, now)
                changed = True
                continue
            cmember, cleft, _ = cur
            if member.incarnation > cmember.incarnation or (
                member.incarnation == cmember.incarnation and left and not cleft
            ):
                self._records[member.id] = (member, left, now)
                changed = True  # a newer life, or a leave we had not seen
            elif (
                member.incarnation == cmember.incarnation
                and not left
                and not cleft
                and member.meta != cmember.meta
            ):
                self._records[member.id] = (member, False, now)
                changed = True
        if changed:
            self._publish()
        return changed

    def _live(self) -> list[Member]:
        return [m for m, left, _ in self._records.values() if not left]

    def _publish(self) -> None:
        self._publisher.publish(self._live())

    async def _sync(self, address: str) -> None:
        if self._exchange is None:
            return
        try:
            theirs = await self._exchange(address, self.records())
        except PeerRingError as exc:
            log.debug("member exchange with %s failed: %s", address, exc)
            return
        self.merge(theirs)

    async def _loop(self) -> None:
        while True:
            await self.clock.sleep(self.interval * (0.5 + self._rng.random()))
            self._expire_tombstones()
            local = self._local
            peers = [m.address for m in self._live() if local is None or m.id != local.id]
            targets = []
            if peers:
                targets.append(self._rng.choice(peers))
            seeds = [s for s in self.seeds if local is None or s != local.address]
            if seeds and (not peers or self._rng.random() < 0.3):
                # re-contact a seed now and then so partitions heal
                targets.append(self._rng.choice(seeds))
            for address in dict.fromkeys(targets):
                await self._sync(address)

    def _expire_tombstones(self) -> None:
        now = self.clock.monotonic()
        for mid, (_, left, since) in list(self._records.items()):
            if left and now - since > self.tombstone_ttl:
                del self._records[mid]
