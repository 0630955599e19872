"""What the SWIM agent reports about members: statuses and events.

A :class:`MemberStatus` pairs the discovery :class:`~peer_ring.membership.base.Member`
record (whose ``incarnation`` is the node's *restart* counter, its "life")
with SWIM's own refutation counter ``incarnation``, its state and its gossip
address. The *version* of what we know about a member is the pair
``(member.incarnation, incarnation)``: a newer life beats anything said about
an older one, so a restarted node is never confused with the corpse of its
previous life, and within one life the usual SWIM precedence applies
(higher incarnation wins; at equal incarnation dead > suspect > alive).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from peer_ring.membership.base import Member, MemberState
from peer_ring.membership.swim.wire import SwimState

__all__ = ["MemberEvent", "MemberEventKind", "MemberStatus", "SwimState"]


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member as this node sees it (what ``peer-ring status`` prints)."""

    member: Member
    state: SwimState
    incarnation: int
    gossip_address: str
    since: float  # monotonic seconds of the last state change
    damped: bool = False  # flapping: kept out of the published view

    @property
    def member_state(self) -> MemberState:
        """The framework-wide :class:`MemberState` for this SWIM state."""
        return {
            SwimState.ALIVE: MemberState.UP,
            SwimState.SUSPECT: MemberState.SUSPECT,
            SwimState.DEAD: MemberState.DOWN,
            SwimState.LEFT: MemberState.LEFT,
        }[self.state]

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.member.id,
            "address": self.member.address,
            "gossip": self.gossip_address,
            "state": self.state.label,
            "incarnation": self.incarnation,
            "life": self.member.incarnation,
            "damped": self.damped,
        }


class MemberEventKind(enum.Enum):
    JOIN = "join"  # first seen, or back after dead/left
    UPDATE = "update"  # record changed (meta, address) or a restart (new life)
    SUSPECT = "suspect"
    ALIVE = "alive"  # a suspicion was refuted
    DEAD = "dead"
    LEAVE = "leave"  # graceful leave


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: MemberEventKind
    status: MemberStatus
    at: float  # monotonic seconds

    @property
    def id(self) -> str:
        return self.status.member.id
