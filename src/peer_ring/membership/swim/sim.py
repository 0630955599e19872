"""A simulated SWIM cluster: many agents on one :class:`~.simnet.SimNetwork`.

Used by the deterministic tests and by ``bench/swim.py``; usable by
applications' own tests too. Everything runs on a :class:`~.sched.SimScheduler`
(no event loop), so the same seed always gives the same history.

Addresses are ``10.0.x.y:7946``-style strings that never touch a socket
(the simulated network is in memory only).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from peer_ring.membership.base import Member
from peer_ring.membership.swim.agent import SwimAgent
from peer_ring.membership.swim.config import SwimConfig
from peer_ring.membership.swim.keyring import Keyring
from peer_ring.membership.swim.sched import SimScheduler
from peer_ring.membership.swim.simnet import SimNetwork
from peer_ring.membership.swim.state import MemberEvent, MemberEventKind
from peer_ring.membership.swim.transport import Addr
from peer_ring.membership.swim.wire import SwimState


def sim_addr(i: int) -> Addr:
    return (f"sim-{i}", 7946)


def sim_id(i: int) -> str:
    return f"n{i}"


@dataclass
class SimNode:
    index: int
    agent: SwimAgent
    events: list[MemberEvent] = field(default_factory=list)


class SimCluster:
    """``n`` members indexed ``0..n-1`` (ids ``n0..``), all seeded with member 0."""

    def __init__(
        self,
        config: SwimConfig,
        *,
        seed: int = 1,
        loss: float = 0.0,
        delay: float = 0.0005,
        jitter: float = 0.0002,
        keyring_for: Callable[[int], Keyring | None] = lambda i: None,
        label_for: Callable[[int], str] = lambda i: "",
    ) -> None:
        self.config = config
        self.scheduler = SimScheduler()
        self.rng = random.Random(seed)
        self.net = SimNetwork(
            self.scheduler, rng=random.Random(seed + 1), loss=loss, delay=delay, jitter=jitter
        )
        self.nodes: dict[int, SimNode] = {}
        self.keyring_for = keyring_for
        self.label_for = label_for

    # --- membership ----------------------------------------------------
    def add(
        self, i: int, *, life: int = 0, seeds: Iterable[int] = (0,), join: bool = True
    ) -> SimNode:
        addr = sim_addr(i)
        transport = self.net.attach(addr)
        member = Member(sim_id(i), f"10.1.{i // 250}.{i % 250 + 1}:9000", incarnation=life)
        node = SimNode(i, None)  # type: ignore[arg-type]
        agent = SwimAgent(
            member,
            transport,
            self.net.scheduler_for(addr),
            self.config,
            keyring=self.keyring_for(i),
            label=self.label_for(i),
            seeds=[sim_addr(s) for s in seeds if s != i],
            rng=random.Random(self.rng.getrandbits(64)),
            listener=node.events.append,
        )
        node.agent = agent
        self.nodes[i] = node
        agent.start()
        if join:
            agent.join([sim_addr(s) for s in seeds if s != i])
        return node

    def start(self, n: int, *, seeds: Iterable[int] = (0,)) -> None:
        for i in range(n):
            self.add(i, seeds=seeds)

    def kill(self, i: int) -> None:
        """kill -9: the process and its endpoint vanish."""
        node = self.nodes.pop(i)
        node.agent.stop()
        self.net.kill(sim_addr(i))

    def leave(self, i: int) -> None:
        self.nodes[i].agent.leave()

    # --- time ----------------------------------------------------------
    @property
    def now(self) -> float:
        return self.scheduler.now()

    def run_for(self, seconds: float) -> None:
        self.scheduler.run_for(seconds)

    def run_until(
        self, cond: Callable[[], bool], timeout: float, check_every: float = 0.05
    ) -> bool:
        """Advance until ``cond()`` holds (checked every ``check_every`` s) or ``timeout``."""
        deadline = self.now + timeout
        while self.now < deadline:
            if cond():
                return True
            self.scheduler.run_until(min(deadline, self.now + check_every))
        return cond()

    # --- observation -----------------------------------------------------
    def state_of(self, observer: int, subject: int) -> SwimState | None:
        status = self.nodes[observer].agent.status(sim_id(subject))
        return None if status is None else status.state

    def view_ids(self, i: int) -> set[str]:
        return {m.id for m in self.nodes[i].agent.view()}

    def converged(self, members: Iterable[int] | None = None) -> bool:
        """Every listed running node sees exactly the listed members as live."""
        idx = sorted(self.nodes if members is None else members)
        expected = {sim_id(i) for i in idx}
        return all(
            {nid for nid, st in self.nodes[i].agent.states().items() if st.state is SwimState.ALIVE}
            == expected
            and self.view_ids(i) == expected
            for i in idx
        )

    def all_see(self, subject: int, states: Iterable[SwimState], observers: Iterable[int]) -> bool:
        wanted = set(states)
        for o in observers:
            st = self.nodes[o].agent.status(sim_id(subject))
            if (st.state if st else SwimState.DEAD) not in wanted:
                return False
        return True

    def events(
        self, kind: MemberEventKind, subject: int | None = None
    ) -> list[tuple[int, MemberEvent]]:
        out = []
        for i, node in self.nodes.items():
            for ev in node.events:
                if ev.kind is kind and (subject is None or ev.id == sim_id(subject)):
                    out.append((i, ev))
        return out
