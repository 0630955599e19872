"""SWIM gossip membership with Lifeguard (``--discovery swim``).

Public surface, grouped:

* discovery: :class:`SwimDiscovery` (the :class:`~peer_ring.membership.base.Discovery`
  backend), :class:`RegistryGatedSwim` (registry supplies seeds and who may
  join, SWIM supplies liveness);
* configuration: :class:`SwimConfig` (presets ``local()``, ``lan()``, ``wan()``),
  :class:`Keyring`;
* observation: :class:`MemberStatus`, :class:`MemberEvent`,
  :class:`MemberEventKind`, :class:`SwimState`;
* engine and testing: :class:`SwimAgent`, :class:`PacketTransport`,
  :class:`UdpTransport`, :class:`SimNetwork`, :class:`SimScheduler`,
  :class:`ClockScheduler`, :class:`SimCluster`.

See ``docs/swim.md`` for the protocol, the wire format and the presets.
"""

from peer_ring.membership.swim.agent import SwimAgent
from peer_ring.membership.swim.config import SwimConfig
from peer_ring.membership.swim.discovery import SwimDiscovery
from peer_ring.membership.swim.keyring import Keyring
from peer_ring.membership.swim.registry import RegistryGatedSwim
from peer_ring.membership.swim.sched import ClockScheduler, Scheduler, SimScheduler
from peer_ring.membership.swim.sim import SimCluster
from peer_ring.membership.swim.simnet import SimNetwork, SimTransport
from peer_ring.membership.swim.state import MemberEvent, MemberEventKind, MemberStatus
from peer_ring.membership.swim.transport import PacketTransport, UdpTransport
from peer_ring.membership.swim.wire import SwimState

__all__ = [
    "ClockScheduler",
    "Keyring",
    "MemberEvent",
    "MemberEventKind",
    "MemberStatus",
    "PacketTransport",
    "RegistryGatedSwim",
    "Scheduler",
    "SimCluster",
    "SimNetwork",
    "SimScheduler",
    "SimTransport",
    "SwimAgent",
    "SwimConfig",
    "SwimDiscovery",
    "SwimState",
    "UdpTransport",
]
