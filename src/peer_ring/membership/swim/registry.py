"""Registry + gossip: a registry decides who may join, SWIM decides who is alive.

:class:`RegistryGatedSwim` composes a registry backend (Kubernetes, etcd,
ZooKeeper, static -- any :class:`Discovery`) with :class:`SwimDiscovery`:

* the registry is authoritative for *membership*: only ids in its current
  view are admitted by SWIM (gossip about others is ignored and counted as
  ``denied``), and the gossip addresses its members publish in
  ``meta[gossip_meta_key]`` become SWIM's seeds;
* SWIM is authoritative for *liveness*: the published view is
  ``registry ∩ (alive or suspect in SWIM)``.

Invariant: a member absent from the registry's latest view is never in the
published view, whatever gossip says.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from peer_ring.membership.base import Discovery, Member, View, parse_address
from peer_ring.membership.swim.discovery import SwimDiscovery
from peer_ring.membership.swim.transport import Addr


class RegistryGatedSwim(Discovery):
    name = "swim+registry"

    def __init__(
        self, registry: Discovery, swim: SwimDiscovery, *, gossip_meta_key: str = "swim"
    ) -> None:
        super().__init__()
        self.registry = registry
        self.swim = swim
        self.gossip_meta_key = gossip_meta_key
        self._allowed: frozenset[str] = frozenset()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, local: Member) -> None:
        """Bind gossip, register ``local`` (with its gossip address in meta), then join."""
        await self.swim.open()
        local = replace(local, meta={**local.meta, self.gossip_meta_key: self.swim.gossip_address})
        await self.registry.start(local)
        self._apply_registry(self.registry.members())
        await self.swim.start(local)
        self._republish()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._follow_registry()),
            loop.create_task(self._follow_swim()),
        ]

    def _seeds_of(self, view: View) -> list[Addr]:
        seeds = []
        for member in view.values():
            text = member.meta.get(self.gossip_meta_key)
            if text:
                with contextlib.suppress(ValueError):
                    seeds.append(parse_address(text))
        return seeds

    def _apply_registry(self, view: View) -> None:
        self._allowed = frozenset(view)
        allowed = self._allowed
        self.swim.set_allow(lambda node_id: node_id in allowed)
        self.swim.set_seeds(self._seeds_of(view))

    def _republish(self) -> None:
        self._publisher.publish(m for m in self.swim.members().values() if m.id in self._allowed)

    async def _follow_registry(self) -> None:
        async for view in self.registry.subscribe():
            self._apply_registry(view)
            self._republish()

    async def _follow_swim(self) -> None:
        async for _ in self.swim.subscribe():
            self._republish()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.swim.stop()
        await self.registry.stop()
        self._publisher.close()
