"""The SWIM protocol engine with Lifeguard extensions.

Implements SWIM (Das, Gupta, Motivala: "SWIM: Scalable Weakly-consistent
Infection-style Process Group Membership Protocol", DSN 2002) with the
Lifeguard refinements (Dadgar, Phillips, Currey: "Lifeguard: Local Health
Awareness for More Accurate Failure Detection", 2017), in the shape of
hashicorp/memberlist:

* every ``probe_interval`` one member (round-robin over a shuffled list) is
  pinged over UDP; without an ack within ``probe_timeout``, ``indirect_checks``
  members ping it for us (and nack if they get no answer), and a TCP ping is
  tried; without any ack by the end of the interval it is *suspected*;
* a suspicion becomes *dead* after a timeout that starts long and shrinks
  with independent confirmations (:mod:`.suspicion`); the suspect refutes by
  gossiping ``alive`` with a higher incarnation;
* probe interval and timeouts scale with this node's local-health score
  (:mod:`.awareness`): a slow node backs off instead of accusing others;
* updates are piggybacked on every packet and gossiped to ``gossip_nodes``
  random members each ``gossip_interval``, each sent ~``log(N)`` times
  (:mod:`.broadcast`); a periodic TCP push-pull exchanges full state;
* dead/left members are reaped to tombstones; dead members and (when alone)
  the seeds are re-contacted so partitions heal; revived members are damped
  when they flap.

State precedence (what makes the protocol converge): an update about member
``m`` is applied only if its version ``(life, incarnation)`` is newer than
what we hold, or equal with a stronger state (dead > suspect > alive). Only
``m`` itself raises its incarnation, so only ``m`` can refute. A newer life
(``Member.incarnation``, the restart counter) supersedes everything about the
old one.

Concurrency rule: the agent is synchronous and single-threaded. Every entry
point (packet/stream handlers, timer callbacks, public methods) runs to
completion on the owner's event loop or simulator and never blocks; the
``listener`` and ``on_change`` hooks are called synchronously from inside it
and must not block or call back into the agent.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from peer_ring.membership.base import Member, format_address
from peer_ring.membership.swim.awareness import Awareness
from peer_ring.membership.swim.broadcast import BroadcastQueue
from peer_ring.membership.swim.config import SwimConfig
from peer_ring.membership.swim.keyring import OVERHEAD, Keyring
from peer_ring.membership.swim.sched import Scheduler, Timer
from peer_ring.membership.swim.state import MemberEvent, MemberEventKind, MemberStatus
from peer_ring.membership.swim.suspicion import Suspicion
from peer_ring.membership.swim.transport import Addr, PacketTransport
from peer_ring.membership.swim.wire import (
    Ack,
    Alive,
    Dead,
    Dropped,
    Header,
    IndirectPing,
    Message,
    Nack,
    Ping,
    PushPull,
    ReplayGuard,
    StateRecord,
    Suspect,
    SwimState,
    decode_envelope,
    encode_envelope,
    encode_message,
)

log = logging.getLogger(__name__)

ALIVE, SUSPECT, DEAD, LEFT = SwimState.ALIVE, SwimState.SUSPECT, SwimState.DEAD, SwimState.LEFT
_LIVE = (ALIVE, SUSPECT)
_UDP_MAX = 65_535


@dataclass(slots=True)
class _Node:
    member: Member
    gossip: Addr
    inc: int
    state: SwimState
    since: float
    suspicion: Suspicion | None = None

    @property
    def id(self) -> str:
        return self.member.id

    @property
    def life(self) -> int:
        return self.member.incarnation


@dataclass(slots=True)
class _Tomb:
    life: int
    inc: int
    gossip: Addr
    state: SwimState
    expires: float


@dataclass(slots=True)
class _Probe:
    target: str
    acked: bool = False
    nacks: int = 0
    expected_nacks: int = 0


@dataclass(slots=True)
class _AckWait:
    on_ack: Callable[[], None]
    on_nack: Callable[[], None] | None
    timer: Timer | None = field(default=None)


class SwimAgent:
    """One member's SWIM engine. See the module docstring for the protocol."""

    def __init__(
        self,
        local: Member,
        transport: PacketTransport,
        scheduler: Scheduler,
        config: SwimConfig | None = None,
        *,
        keyring: Keyring | None = None,
        label: str = "",
        seeds: Iterable[Addr] = (),
        rng: random.Random | None = None,
        allow: Callable[[str], bool] | None = None,
        listener: Callable[[MemberEvent], None] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.config = config or SwimConfig.lan()
        self.local_id = local.id
        self.transport = transport
        self.scheduler = scheduler
        self.keyring = keyring
        self.label = label
        self.seeds: list[Addr] = list(seeds)
        self.rng = rng or random.Random()
        self.allow = allow
        self.listener = listener
        self.on_change = on_change
        self.stats: Counter[str] = Counter()
        self.awareness = Awareness(self.config.awareness_max)
        self._nodes: dict[str, _Node] = {}
        self._tombs: dict[str, _Tomb] = {}
        self._queue = BroadcastQueue()
        self._replay = ReplayGuard(self.config.replay_window)
        self._acks: dict[int, _AckWait] = {}
        self._probe_order: list[str] = []
        self._probe_idx = 0
        self._seq = 0
        self._pkt_seq = 0
        self._session = self.rng.getrandbits(62) + 1
        self._penalty: dict[str, tuple[float, float]] = {}
        self._suppressed: set[str] = set()
        self._periodic: dict[str, Timer] = {}
        self._started = False
        self._stopped = False
        self._leaving = False
        label_len = len(label.encode())
        self._overhead = 2 + label_len + (OVERHEAD if keyring else 0) + 40 + len(local.id)
        self._local = local
        transport.set_handlers(self.handle_packet, self.handle_stream)

    # ------------------------------------------------------------------ API
    def start(self) -> None:
        """Begin probing and gossiping. Call once."""
        if self._started:
            return
        self._started = True
        now = self.scheduler.now()
        me = _Node(self._local, self.transport.address, 0, ALIVE, now)
        self._nodes[self.local_id] = me
        self._emit(MemberEventKind.JOIN, me)
        cfg = self.config
        self._every("probe", self.rng.random() * cfg.probe_interval, self._probe_tick)
        self._every("gossip", self.rng.random() * cfg.gossip_interval, self._gossip_tick)
        self._every("pushpull", self._jitter(cfg.push_pull_interval), self._push_pull_tick)
        self._every("reconnect", self._jitter(cfg.reconnect_interval), self._reconnect_tick)
        self._every("reap", self._reap_period(), self._reap_tick)

    def join(self, seeds: Sequence[Addr], on_done: Callable[[int], None] | None = None) -> None:
        """Push-pull with every seed; ``on_done(number that answered)`` when all finished."""
        for s in seeds:
            if s not in self.seeds:
                self.seeds.append(s)
        targets = [s for s in seeds if s != self.transport.address]
        if not targets:
            if on_done is not None:
                on_done(0)
            return
        pending = [len(targets), 0]

        def one(ok: bool) -> None:
            pending[0] -= 1
            pending[1] += int(ok)
            if pending[0] == 0 and on_done is not None:
                on_done(pending[1])

        for addr in targets:
            self._push_pull(addr, join=True, on_done=one)

    def leave(self) -> None:
        """Broadcast a graceful leave (sent directly to up to 64 members, then gossiped)."""
        me = self._nodes.get(self.local_id)
        if me is None or self._leaving:
            return
        self._leaving = True
        msg = Dead(me.inc, me.life, self.local_id, self.local_id)
        self._on_dead(msg)
        others = [n for n in self._nodes.values() if n.id != self.local_id and n.state in _LIVE]
        for node in self.rng.sample(others, min(64, len(others))):
            self._send(node.gossip, [msg])

    def stop(self) -> None:
        """Stop all timers; packets received afterwards are ignored."""
        self._stopped = True
        for timer in self._periodic.values():
            timer.cancel()
        for node in self._nodes.values():
            if node.suspicion is not None:
                node.suspicion.cancel()
        for wait in self._acks.values():
            if wait.timer is not None:
                wait.timer.cancel()
        self._acks.clear()

    def update_local(self, member: Member) -> None:
        """Gossip a changed local record (meta, zone, weight) with a new incarnation."""
        me = self._nodes.get(self.local_id)
        if me is None or member.id != self.local_id:
            return
        me.member = member
        me.inc += 1
        self._broadcast(self.local_id, Alive(me.inc, me.member, me.gossip))
        self._emit(MemberEventKind.UPDATE, me)

    @property
    def incarnation(self) -> int:
        me = self._nodes.get(self.local_id)
        return me.inc if me else 0

    def num_live(self) -> int:
        return sum(1 for n in self._nodes.values() if n.state in _LIVE)

    def status(self, node_id: str) -> MemberStatus | None:
        node = self._nodes.get(node_id)
        return None if node is None else self._status(node)

    def states(self) -> dict[str, MemberStatus]:
        """Every member still listed (alive, suspect, dead, left), by id."""
        return {nid: self._status(n) for nid, n in self._nodes.items()}

    def view(self) -> list[Member]:
        """Members to route to: alive or suspect, allowed, not damped."""
        out = []
        for nid, node in self._nodes.items():
            if node.state not in _LIVE or nid in self._suppressed:
                continue
            if self.allow is not None and nid != self.local_id and not self.allow(nid):
                continue
            out.append(node.member)
        return out

    def is_damped(self, node_id: str) -> bool:
        return node_id in self._suppressed

    # -------------------------------------------------------------- timers
    def _jitter(self, seconds: float) -> float:
        return seconds * (0.5 + self.rng.random())

    def _reap_period(self) -> float:
        return max(0.5, min(self.config.dead_reap_after, self.config.tombstone_ttl) / 4)

    def _every(self, name: str, delay: float, tick: Callable[[], None]) -> None:
        def run() -> None:
            if self._stopped:
                return
            tick()

        self._periodic[name] = self.scheduler.call_later(delay, run)

    def _later(self, delay: float, callback: Callable[[], None]) -> Timer:
        def run() -> None:
            if not self._stopped:
                callback()

        return self.scheduler.call_later(delay, run)

    # ---------------------------------------------------------------- probe
    def _probe_tick(self) -> None:
        interval = self.awareness.scale(self.config.probe_interval)
        self._every("probe", interval, self._probe_tick)
        if self._leaving:
            return
        node = self._next_probe_target()
        if node is not None:
            self._probe(node, interval)

    def _next_probe_target(self) -> _Node | None:
        for _ in range(len(self._probe_order) + 2):
            if self._probe_idx >= len(self._probe_order):
                self._probe_order = [nid for nid in self._nodes if nid != self.local_id]
                self.rng.shuffle(self._probe_order)
                self._probe_idx = 0
                if not self._probe_order:
                    return None
            nid = self._probe_order[self._probe_idx]
            self._probe_idx += 1
            node = self._nodes.get(nid)
            if node is not None and node.state in _LIVE:
                return node
        return None

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _expect(
        self,
        seq: int,
        ttl: float,
        on_ack: Callable[[], None],
        on_nack: Callable[[], None] | None = None,
    ) -> None:
        wait = _AckWait(on_ack, on_nack)

        def expire() -> None:
            self._acks.pop(seq, None)

        wait.timer = self._later(ttl, expire)
        self._acks[seq] = wait

    def _probe(self, node: _Node, interval: float) -> None:
        seq = self._next_seq()
        probe = _Probe(node.id)
        msgs: list[Message] = [Ping(seq, node.id, self.local_id)]
        if node.state is SUSPECT:  # Lifeguard "buddy system": tell it so it can refute
            msgs.append(Suspect(node.inc, node.life, node.id, self.local_id))
        self.stats["probes"] += 1

        def acked() -> None:
            probe.acked = True

        def nacked() -> None:
            probe.nacks += 1

        self._expect(seq, interval, acked, nacked)
        self._send(node.gossip, msgs)
        timeout = self.awareness.scale(self.config.probe_timeout)
        self._later(timeout, lambda: self._probe_indirect(probe, seq, interval - timeout))
        self._later(interval, lambda: self._probe_done(probe, node.life))

    def _probe_indirect(self, probe: _Probe, seq: int, remaining: float) -> None:
        if probe.acked:
            return
        node = self._nodes.get(probe.target)
        if node is None or node.state not in _LIVE:
            return
        self.stats["indirect_probes"] += 1
        helpers = [
            n
            for n in self._nodes.values()
            if n.state is ALIVE and n.id not in (self.local_id, probe.target)
        ]
        chosen = self.rng.sample(helpers, min(self.config.indirect_checks, len(helpers)))
        probe.expected_nacks = len(chosen)
        req = IndirectPing(seq, node.id, node.gossip, self.local_id, True)
        for helper in chosen:
            self._send(helper.gossip, [req])
        if self.config.tcp_fallback:
            data = self._envelope([encode_message(Ping(seq, node.id, self.local_id))])

            def on_reply(reply: bytes | None) -> None:
                if reply is None or self._stopped:
                    return
                try:
                    _, msgs = self._open(reply, self.config.max_stream_size)
                except Dropped as exc:
                    self.stats[f"dropped_{exc.reason}"] += 1
                    return
                if any(isinstance(m, Ack) and m.seq == seq for m in msgs):
                    self.stats["tcp_fallback_acks"] += 1
                    probe.acked = True

            self.transport.exchange(node.gossip, data, max(remaining, 0.001), on_reply)

    def _probe_done(self, probe: _Probe, life: int) -> None:
        if probe.acked:
            self.awareness.apply(-1)
            return
        self.stats["probes_failed"] += 1
        if probe.expected_nacks > 0:
            self.awareness.apply(probe.expected_nacks - probe.nacks)
        else:
            self.awareness.apply(1)
        node = self._nodes.get(probe.target)
        if node is None or node.state not in _LIVE or node.life != life:
            return
        self._on_suspect(Suspect(node.inc, node.life, node.id, self.local_id))

    # --------------------------------------------------------------- gossip
    def _retransmit_limit(self) -> int:
        return self.config.retransmit_limit(self.num_live())

    def _broadcast(self, key: str, msg: Message) -> None:
        self._queue.queue(key, encode_message(msg))

    def _gossip_tick(self) -> None:
        self._every("gossip", self.config.gossip_interval, self._gossip_tick)
        if not len(self._queue):
            return
        now = self.scheduler.now()
        horizon = self.config.gossip_to_the_dead
        candidates = [
            n
            for n in self._nodes.values()
            if n.id != self.local_id
            and (n.state in _LIVE or (n.state is DEAD and now - n.since < horizon))
        ]
        budget = self.config.max_packet_size - self._overhead
        limit = self._retransmit_limit()
        for node in self.rng.sample(candidates, min(self.config.gossip_nodes, len(candidates))):
            parts = self._queue.take(budget, limit)
            if not parts:
                break
            self._send_parts(node.gossip, parts)

    def _push_pull_tick(self) -> None:
        n = self.num_live()
        self._every(
            "pushpull", self._jitter(self.config.push_pull_interval_for(n)), self._push_pull_tick
        )
        others = [n for n in self._nodes.values() if n.id != self.local_id and n.state is ALIVE]
        if others:
            self.stats["push_pulls"] += 1
            self._push_pull(self.rng.choice(others).gossip, join=False)

    def _reconnect_tick(self) -> None:
        self._every("reconnect", self._jitter(self.config.reconnect_interval), self._reconnect_tick)
        if self._leaving:
            return
        targets = [n.gossip for n in self._nodes.values() if n.state is DEAD]
        targets += [t.gossip for t in self._tombs.values() if t.state is DEAD]
        if not any(n.state in _LIVE for n in self._nodes.values() if n.id != self.local_id):
            targets += [s for s in self.seeds if s != self.transport.address]
        if targets:
            self.stats["reconnects"] += 1
            self._push_pull(self.rng.choice(targets), join=False)

    def _reap_tick(self) -> None:
        self._every("reap", self._reap_period(), self._reap_tick)
        now = self.scheduler.now()
        for nid, node in list(self._nodes.items()):
            if nid == self.local_id or node.state in _LIVE:
                continue
            if now - node.since >= self.config.dead_reap_after:
                del self._nodes[nid]
                self._tombs[nid] = _Tomb(
                    node.life, node.inc, node.gossip, node.state, now + self.config.tombstone_ttl
                )
                self.stats["reaped"] += 1
        for nid, tomb in list(self._tombs.items()):
            if tomb.expires <= now:
                del self._tombs[nid]

    # ------------------------------------------------------------ packets
    def _envelope(self, parts: Iterable[bytes]) -> bytes:
        self._pkt_seq += 1
        header = Header(
            self._session, self._pkt_seq, int(self.scheduler.wall() * 1000), self.local_id
        )
        return encode_envelope(header, parts, label=self.label, keyring=self.keyring)

    def _send(self, addr: Addr, msgs: Sequence[Message]) -> None:
        parts = [encode_message(m) for m in msgs]
        used = sum(len(p) for p in parts)
        budget = self.config.max_packet_size - self._overhead - used
        parts.extend(self._queue.take(budget, self._retransmit_limit()))
        self._send_parts(addr, parts)

    def _send_parts(self, addr: Addr, parts: Sequence[bytes]) -> None:
        data = self._envelope(parts)
        self.stats["packets_sent"] += 1
        self.stats["bytes_sent"] += len(data)
        self.transport.send_to(addr, data)

    def _open(self, data: bytes, max_size: int) -> tuple[Header, list[Message]]:
        header, msgs = decode_envelope(
            data, label=self.label, keyring=self.keyring, max_size=max_size
        )
        self._replay.check(header, self.scheduler.wall())
        return header, msgs

    def handle_packet(self, data: bytes, addr: Addr) -> None:
        """UDP receive callback. Bad packets are counted (``dropped_<reason>``) and dropped."""
        if self._stopped or not self._started:
            return
        self.stats["bytes_received"] += len(data)
        try:
            header, msgs = self._open(data, _UDP_MAX)
        except Dropped as exc:
            self.stats[f"dropped_{exc.reason}"] += 1
            return
        self.stats["packets_received"] += 1
        for msg in msgs:
            try:
                self._dispatch(msg, addr, header)
            except Exception:  # a bug must not kill the node; it is counted and logged
                self.stats["internal_errors"] += 1
                log.exception("swim: error handling %r", msg)

    def handle_stream(self, data: bytes, addr: Addr) -> bytes | None:
        """TCP request callback: a ping (TCP fallback probe) or a push-pull."""
        if self._stopped or not self._started:
            return None
        try:
            header, msgs = self._open(data, self.config.max_stream_size)
            if len(msgs) != 1:
                raise Dropped("malformed", "a stream frame carries exactly one message")
        except Dropped as exc:
            self.stats[f"dropped_{exc.reason}"] += 1
            return None
        msg = msgs[0]
        try:
            if isinstance(msg, Ping):
                if msg.target != self.local_id:
                    self.stats["dropped_misdirected"] += 1
                    return None
                return self._envelope([encode_message(Ack(msg.seq))])
            if isinstance(msg, PushPull):
                self.stats["push_pulls_served"] += 1
                self._merge(msg, header.sender)
                return self._envelope([encode_message(PushPull(False, self._local_state()))])
        except Exception:
            self.stats["internal_errors"] += 1
            log.exception("swim: error handling stream %r", msg)
            return None
        self.stats["dropped_unexpected"] += 1
        return None

    def _dispatch(self, msg: Message, addr: Addr, header: Header) -> None:
        if isinstance(msg, Ping):
            if msg.target != self.local_id:
                self.stats["dropped_misdirected"] += 1
                return
            self._send(addr, [Ack(msg.seq)])
        elif isinstance(msg, IndirectPing):
            self._relay(msg, addr)
        elif isinstance(msg, Ack):
            wait = self._acks.pop(msg.seq, None)
            if wait is not None:
                if wait.timer is not None:
                    wait.timer.cancel()
                wait.on_ack()
        elif isinstance(msg, Nack):
            wait = self._acks.get(msg.seq)
            if wait is not None and wait.on_nack is not None:
                wait.on_nack()
        elif isinstance(msg, Alive):
            self._on_alive(msg)
        elif isinstance(msg, Suspect):
            self._on_suspect(msg)
        elif isinstance(msg, Dead):
            self._on_dead(msg)
        else:
            self.stats["dropped_unexpected"] += 1

    def _relay(self, req: IndirectPing, requester: Addr) -> None:
        seq = self._next_seq()
        done = [False]

        def acked() -> None:
            done[0] = True
            self._send(requester, [Ack(req.seq)])

        self._expect(seq, self.config.probe_interval, acked)
        self._send(req.target_addr, [Ping(seq, req.target, self.local_id)])
        if req.nack:

            def nack() -> None:
                if not done[0]:
                    self._send(requester, [Nack(req.seq)])

            self._later(self.config.probe_timeout * self.config.nack_fraction, nack)

    def _push_pull(
        self, addr: Addr, *, join: bool, on_done: Callable[[bool], None] | None = None
    ) -> None:
        data = self._envelope([encode_message(PushPull(join, self._local_state()))])

        def on_reply(reply: bytes | None) -> None:
            ok = False
            if reply is not None and not self._stopped:
                try:
                    header, msgs = self._open(reply, self.config.max_stream_size)
                except Dropped as exc:
                    self.stats[f"dropped_{exc.reason}"] += 1
                else:
                    for msg in msgs:
                        if isinstance(msg, PushPull):
                            self._merge(msg, header.sender)
                            ok = True
            if on_done is not None:
                on_done(ok)

        self.transport.exchange(addr, data, self.config.stream_timeout, on_reply)

    def _local_state(self) -> tuple[StateRecord, ...]:
        return tuple(StateRecord(n.inc, n.state, n.member, n.gossip) for n in self._nodes.values())

    def _merge(self, pp: PushPull, sender: str) -> None:
        for rec in pp.states:
            if rec.state is ALIVE:
                self._on_alive(Alive(rec.inc, rec.member, rec.gossip))
            elif rec.state is LEFT:
                self._on_dead(Dead(rec.inc, rec.member.incarnation, rec.member.id, rec.member.id))
            else:
                # A remote "dead" is only a suspicion here (memberlist does the same):
                # the member gets a chance to refute before we drop it.
                self._on_suspect(Suspect(rec.inc, rec.member.incarnation, rec.member.id, sender))

    # ------------------------------------------------------- state machine
    def _status(self, node: _Node) -> MemberStatus:
        return MemberStatus(
            member=node.member,
            state=node.state,
            incarnation=node.inc,
            gossip_address=format_address(*node.gossip),
            since=node.since,
            damped=node.id in self._suppressed,
        )

    def _emit(self, kind: MemberEventKind, node: _Node) -> None:
        if self.listener is not None:
            self.listener(MemberEvent(kind, self._status(node), self.scheduler.now()))
        if self.on_change is not None:
            self.on_change()

    def _refute(self, inc: int) -> None:
        me = self._nodes[self.local_id]
        me.inc = max(me.inc, inc) + 1
        self.awareness.apply(1)
        self.stats["refutations"] += 1
        self._broadcast(self.local_id, Alive(me.inc, me.member, me.gossip))

    def _insert_probe(self, nid: str) -> None:
        lo = min(self._probe_idx, len(self._probe_order))
        self._probe_order.insert(self.rng.randint(lo, len(self._probe_order)), nid)

    def _on_alive(self, msg: Alive) -> None:
        nid, life = msg.member.id, msg.member.incarnation
        now = self.scheduler.now()
        if nid == self.local_id:
            me = self._nodes.get(nid)
            if me is not None and life == me.life and msg.inc > me.inc and not self._leaving:
                self._refute(msg.inc)  # an older process of ours got further: overtake it
            return
        if self.allow is not None and not self.allow(nid):
            self.stats["denied"] += 1
            return
        node = self._nodes.get(nid)
        if node is None:
            tomb = self._tombs.get(nid)
            if tomb is not None and (life, msg.inc) <= (tomb.life, tomb.inc):
                return
            node = _Node(msg.member, msg.gossip, msg.inc, ALIVE, now)
            self._nodes[nid] = node
            self._insert_probe(nid)
            self._broadcast(nid, msg)
            if tomb is not None:
                del self._tombs[nid]
                self._flap(nid)
            self._emit(MemberEventKind.JOIN, node)
            return
        if life < node.life or (life == node.life and msg.inc <= node.inc):
            return
        prev, old_life = node.state, node.life
        changed = (
            node.member != msg.member
            or node.member.meta != msg.member.meta
            or node.gossip != msg.gossip
        )
        if node.suspicion is not None:
            node.suspicion.cancel()
            node.suspicion = None
        node.member, node.gossip, node.inc, node.state = msg.member, msg.gossip, msg.inc, ALIVE
        if prev is not ALIVE:
            node.since = now
        self._broadcast(nid, msg)
        if prev in (DEAD, LEFT):
            self._flap(nid)
            self._emit(MemberEventKind.JOIN, node)
        elif life > old_life or changed:
            self._emit(MemberEventKind.UPDATE, node)
        elif prev is SUSPECT:
            self._emit(MemberEventKind.ALIVE, node)

    def _on_suspect(self, msg: Suspect) -> None:
        node = self._nodes.get(msg.node)
        if node is None or msg.life != node.life or msg.inc < node.inc:
            return
        if node.state is SUSPECT:
            if node.suspicion is not None and node.suspicion.confirm(msg.source):
                self.stats["confirmations"] += 1
                self._broadcast(node.id, msg)
            return
        if node.state is not ALIVE:
            return
        if node.id == self.local_id:
            if not self._leaving:
                self._refute(msg.inc)
            return
        node.inc = msg.inc
        node.state = SUSPECT
        node.since = self.scheduler.now()
        self._broadcast(node.id, msg)
        n = self.num_live()
        cfg = self.config
        inc, life, nid = msg.inc, msg.life, node.id

        def expired() -> None:
            cur = self._nodes.get(nid)
            if cur is not None and cur.state is SUSPECT and cur.inc == inc and cur.life == life:
                self._on_dead(Dead(inc, life, nid, self.local_id))

        node.suspicion = Suspicion(
            self.scheduler,
            msg.source,
            cfg.suspicion_confirmations(n),
            cfg.suspicion_min_timeout(n),
            cfg.suspicion_max_timeout(n),
            lambda: None if self._stopped else expired(),
        )
        self.stats["suspicions"] += 1
        self._emit(MemberEventKind.SUSPECT, node)

    def _on_dead(self, msg: Dead) -> None:
        node = self._nodes.get(msg.node)
        if node is None or msg.life != node.life or msg.inc < node.inc:
            return
        if node.state in (DEAD, LEFT):
            return
        if node.id == self.local_id and not self._leaving:
            self._refute(msg.inc)
            return
        if node.suspicion is not None:
            node.suspicion.cancel()
            node.suspicion = None
        left = msg.source == msg.node
        node.inc = msg.inc
        node.state = LEFT if left else DEAD
        node.since = self.scheduler.now()
        self._broadcast(node.id, msg)
        if not left:
            self.stats["deaths"] += 1
        self._emit(MemberEventKind.LEAVE if left else MemberEventKind.DEAD, node)

    # ---------------------------------------------------------- flapping
    def _penalty_now(self, nid: str, now: float) -> float:
        value, at = self._penalty.get(nid, (0.0, now))
        decay: float = 0.5 ** ((now - at) / self.config.flap_half_life)
        return value * decay

    def _flap(self, nid: str) -> None:
        now = self.scheduler.now()
        value = self._penalty_now(nid, now) + 1.0
        self._penalty[nid] = (value, now)
        cfg = self.config
        if value >= cfg.flap_suppress and nid not in self._suppressed:
            self._suppressed.add(nid)
            self.stats["flap_suppressed"] += 1
        if nid in self._suppressed:
            wait = cfg.flap_half_life * math.log2(value / cfg.flap_reuse) + 1e-6
            self._later(wait, lambda: self._flap_recheck(nid))

    def _flap_recheck(self, nid: str) -> None:
        if nid not in self._suppressed:
            return
        value = self._penalty_now(nid, self.scheduler.now())
        if value <= self.config.flap_reuse + 1e-9:
            self._suppressed.discard(nid)
            self._penalty.pop(nid, None)
            if self.on_change is not None:
                self.on_change()
