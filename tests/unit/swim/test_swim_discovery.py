"""SwimDiscovery on the simulated network with a ManualClock (asyncio, no sleeps)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from peer_ring.clock import ManualClock
from peer_ring.membership.base import Discovery, Member
from peer_ring.membership.swim import (
    ClockScheduler,
    MemberEventKind,
    RegistryGatedSwim,
    SimNetwork,
    SwimConfig,
    SwimDiscovery,
    SwimState,
)
from peer_ring.membership.swim.state import MemberEvent

CFG = SwimConfig.lan()


def addr(i: int) -> tuple[str, int]:
    return (f"sim-{i}", 7946)


def member(i: int) -> Member:
    return Member(f"n{i}", f"10.0.0.{i + 1}:9000")


class World:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.sched = ClockScheduler(self.clock)
        self.net = SimNetwork(self.sched, rng=random.Random(7))

    def swim(self, i: int, seeds: list[int]) -> SwimDiscovery:
        return SwimDiscovery(
            CFG,
            bind=addr(i),
            seeds=[addr(s) for s in seeds],
            clock=self.clock,
            transport=self.net.attach(addr(i)),
            scheduler=self.sched,
            rng=random.Random(i),
        )

    async def until(self, cond: Callable[[], bool], timeout: float) -> bool:
        waited = 0.0
        while not cond():
            if waited >= timeout:
                return False
            await self.clock.advance(0.1)
            waited += 0.1
        return True

    async def run(self, coro: object, advance: float = 15.0) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        await self.until(task.done, advance)
        await task


async def collect(stream: object, into: list[MemberEvent]) -> None:
    async for ev in stream:  # type: ignore[attr-defined]
        into.append(ev)


async def test_views_states_and_event_stream_follow_join_crash_and_leave() -> None:
    w = World()
    discs = [w.swim(i, seeds=[0]) for i in range(4)]
    seen: list[MemberEvent] = []
    consumer = asyncio.ensure_future(collect(discs[0].events(), seen))
    for i, d in enumerate(discs):
        await w.run(d.start(member(i)))
    ids = {f"n{i}" for i in range(4)}
    assert await w.until(lambda: all(set(d.members()) == ids for d in discs), 10)
    st = discs[0].states()
    assert {s.state for s in st.values()} == {SwimState.ALIVE}
    assert st["n1"].member.address == "10.0.0.2:9000"
    assert st["n1"].incarnation == 0

    # kill -9 of n3: dead everywhere, out of every view.
    w.net.kill(addr(3))
    assert discs[3].agent is not None
    discs[3].agent.stop()
    assert await w.until(lambda: "n3" not in discs[0].members(), CFG.detection_bound(4))
    assert discs[0].states()["n3"].state is SwimState.DEAD

    # Graceful leave of n2 (stop() gossips the leave and waits leave_propagate).
    await w.run(discs[2].stop())
    assert await w.until(lambda: "n2" not in discs[1].members(), 5)
    assert discs[1].states()["n2"].state is SwimState.LEFT

    await w.run(discs[0].stop())
    await w.run(discs[1].stop())
    await asyncio.wait_for(consumer, 1)  # the stream ends on stop
    kinds = {(ev.kind, ev.id) for ev in seen}
    assert {(MemberEventKind.JOIN, f"n{i}") for i in range(4)} <= kinds
    assert (MemberEventKind.DEAD, "n3") in kinds
    assert (MemberEventKind.LEAVE, "n2") in kinds
    assert (MemberEventKind.DEAD, "n2") not in kinds
    w.sched.cancel_all()


async def test_start_without_reachable_seed_returns_after_join_timeout_and_heals_later() -> None:
    w = World()
    lone = w.swim(1, seeds=[0])  # seed 0 is not up yet
    await w.run(lone.start(member(1)), advance=CFG.join_timeout + 1)
    assert set(lone.members()) == {"n1"}
    seed = w.swim(0, seeds=[])
    await w.run(seed.start(member(0)))
    # The lone node keeps re-contacting its seeds while it knows no live peer.
    assert await w.until(lambda: set(lone.members()) == {"n0", "n1"}, 3 * CFG.reconnect_interval)
    await w.run(lone.stop())
    await w.run(seed.stop())
    w.sched.cancel_all()


class _Registry:
    """A shared in-memory registry (stands in for Kubernetes/etcd/ZooKeeper)."""

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.clients: list[_RegistryClient] = []

    def publish(self) -> None:
        for c in self.clients:
            c._publisher.publish(self.members.values())


class _RegistryClient(Discovery):
    name = "fake-registry"

    def __init__(self, backend: _Registry) -> None:
        super().__init__()
        self.backend = backend
        backend.clients.append(self)

    async def start(self, local: Member) -> None:
        self.backend.members[local.id] = local
        self.backend.publish()

    async def stop(self) -> None:
        self._publisher.close()


async def test_registry_supplies_seeds_and_admission_swim_supplies_liveness() -> None:
    w = World()
    backend = _Registry()
    gated = [RegistryGatedSwim(_RegistryClient(backend), w.swim(i, seeds=[])) for i in range(3)]
    for i, g in enumerate(gated):
        await w.run(g.start(member(i)))
    ids = {"n0", "n1", "n2"}
    # No static seeds at all: the registry's meta["swim"] addresses were enough.
    assert await w.until(lambda: all(set(g.members()) == ids for g in gated), 10)

    # A node that gossips its way in but is not in the registry is not admitted.
    intruder = w.swim(9, seeds=[0])
    await w.run(intruder.start(member(9)))
    await w.clock.advance(5)
    assert all("n9" not in g.members() for g in gated)
    assert gated[0].swim.stats["denied"] > 0

    # The registry drops n2: it leaves the views although SWIM still sees it alive.
    del backend.members["n2"]
    backend.publish()
    assert await w.until(lambda: "n2" not in gated[0].members(), 2)
    assert gated[0].swim.states()["n2"].state is SwimState.ALIVE

    # registry ∩ alive: a crashed registered member disappears too.
    w.net.kill(addr(1))
    assert gated[1].swim.agent is not None
    gated[1].swim.agent.stop()
    assert await w.until(lambda: set(gated[0].members()) == {"n0"}, CFG.detection_bound(3))
    for g in (gated[0], gated[2]):
        await w.run(g.stop())
    await w.run(intruder.stop())
    w.sched.cancel_all()
