"""Fault injectors for a :class:`~peer_ring.testing.cluster.LocalCluster`, each logged in a history.

Every fault has ``await start()`` and ``await heal()``; both are idempotent
(a second ``start`` or a ``heal`` of a healed fault does nothing) and each
transition is recorded in the :class:`~peer_ring.testing.history.History`
(``kind``, ``target``, ``phase``). :class:`Nemesis` keeps the faults of a
run and heals every one of them on exit, also when the test fails.

* :class:`KillNode` -- ``kill -9`` one node; heal restarts it (same
  arguments, fresh memory: a new data life for the store).
* :class:`PauseNode` -- ``SIGSTOP``; heal is ``SIGCONT``.
* :class:`LinkFault` -- per-link message drop probability and delay, through
  the ``/admin/faults`` HTTP endpoint of nodes started with ``--testing``
  (rules apply to frames a node *writes* towards a peer address, so a
  two-way cut sets rules on both ends). Built by :func:`partition`
  (majority/minority, or one-way), :func:`bridge` (two sides that only a
  bridge node sees both of), :func:`message_loss` and :func:`slow_node`.
  Heal sends ``DELETE /admin/faults`` to every node the fault touched, which
  clears *all* rules on that node: link faults on the same node do not
  compose.
* :class:`ClockOffset` -- restart one node with ``--clock-offset SECONDS``
  (its wall clock only); heal restarts it without. The start checks that the
  offset took effect (the node's RESP ``TIME``) and raises
  :class:`FaultNotInjected` otherwise: a fault that cannot be injected fails
  the scenario, it never turns it into a skip or a run without the fault.

Blocking work (a restart waits for the node's ready line) runs in a thread,
so a workload on the same event loop keeps running while a node restarts.

Invariants: only processes the cluster started are signalled, by PID; only
loopback HTTP endpoints of the cluster are contacted.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import aiohttp

from peer_ring import wire
from peer_ring.errors import ConfigError, PeerRingError
from peer_ring.testing.cluster import LocalCluster
from peer_ring.testing.history import History


class Fault(abc.ABC):
    """Base of the injectors: idempotent, logged ``start``/``heal``.

    Subclasses implement :meth:`_start` and :meth:`_heal`; they are called at
    most once per transition, from the event loop, and must not block it.
    """

    kind = "fault"

    def __init__(self, history: History, target: str, **detail: Any) -> None:
        self.history = history
        self.target = target
        self.detail = detail
        self.active = False

    async def start(self) -> None:
        if self.active:
            return
        self.history.fault(self.kind, self.target, "start", **self.detail)
        self.active = True
        await self._start()

    async def heal(self) -> None:
        if not self.active:
            return
        await self._heal()
        self.active = False
        self.history.fault(self.kind, self.target, "heal", **self.detail)

    @abc.abstractmethod
    async def _start(self) -> None: ...

    @abc.abstractmethod
    async def _heal(self) -> None: ...


class KillNode(Fault):
    """``kill -9`` of one node; heal restarts it."""

    kind = "kill"

    def __init__(self, cluster: LocalCluster, history: History, name: str) -> None:
        super().__init__(history, name)
        self.cluster = cluster
        self.name = name

    async def _start(self) -> None:
        await asyncio.to_thread(self.cluster.kill, self.name)

    async def _heal(self) -> None:
        await asyncio.to_thread(self.cluster.restart, self.name)


class PauseNode(Fault):
    """``SIGSTOP`` of one node (it keeps its sockets, answers nothing); heal is ``SIGCONT``."""

    kind = "pause"

    def __init__(self, cluster: LocalCluster, history: History, name: str) -> None:
        super().__init__(history, name)
        self.cluster = cluster
        self.name = name

    async def _start(self) -> None:
        self.cluster.pause(self.name)

    async def _heal(self) -> None:
        self.cluster.resume(self.name)


# -- link faults through /admin/faults -----------------------------------------------------
class AdminError(PeerRingError):
    """A node's ``/admin/faults`` endpoint refused or failed a request."""


async def admin_faults(
    cluster: LocalCluster,
    name: str,
    method: str = "GET",
    *,
    drop: Mapping[str, float] | None = None,
    delay: Mapping[str, float] | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Call ``/admin/faults`` of node ``name``; returns its rules after the call."""
    node = cluster[name]
    if node.http is None:
        raise ConfigError("link faults need the cluster started with http_port")
    url = f"http://{node.http}/admin/faults"
    body = {"drop": dict(drop or {}), "delay": dict(delay or {})}
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as session,
            session.request(method, url, json=body if method == "POST" else None) as response,
        ):
            data: dict[str, Any] = await response.json()
            if response.status != 200:
                raise AdminError(f"{method} {url}: {response.status} {data}")
            return data
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise AdminError(f"{method} {url} failed: {exc!r}") from exc


class LinkFault(Fault):
    """Drop and delay rules on directed links ``(from_node, to_node)``.

    ``drop`` is the loss probability, ``delay`` seconds added, on each link.
    """

    kind = "link"

    def __init__(
        self,
        cluster: LocalCluster,
        history: History,
        links: Iterable[tuple[str, str]],
        *,
        drop: float = 0.0,
        delay: float = 0.0,
        kind: str | None = None,
        target: str | None = None,
    ) -> None:
        self.links = sorted(set(links))
        for a, b in self.links:
            if a not in cluster.nodes or b not in cluster.nodes or a == b:
                raise ConfigError(f"bad link {a!r} -> {b!r}")
        if not 0.0 <= drop <= 1.0 or delay < 0:
            raise ConfigError("drop must be within [0, 1] and delay >= 0")
        if kind is not None:
            self.kind = kind
        super().__init__(
            history,
            target or ",".join(f"{a}>{b}" for a, b in self.links),
            drop=drop,
            delay=delay,
        )
        self.cluster = cluster
        self.drop = drop
        self.delay = delay

    def _by_source(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for a, b in self.links:
            out.setdefault(a, []).append(self.cluster[b].address)
        return out

    async def _start(self) -> None:
        for src, addrs in self._by_source().items():
            if not self.cluster[src].running:
                continue
            await admin_faults(
                self.cluster,
                src,
                "POST",
                drop={a: self.drop for a in addrs} if self.drop else None,
                delay={a: self.delay for a in addrs} if self.delay else None,
            )

    async def _heal(self) -> None:
        for src in self._by_source():
            if self.cluster[src].running:
                await admin_faults(self.cluster, src, "DELETE")


def partition(
    cluster: LocalCluster,
    history: History,
    *groups: Sequence[str],
    one_way: bool = False,
) -> LinkFault:
    """Cut every link between different groups (``one_way``: only from the first
    group towards the others, so the others still reach it)."""
    if len(groups) < 2:
        raise ConfigError("a partition needs at least two groups")
    links = []
    for i, j in itertools.permutations(range(len(groups)), 2):
        if one_way and i != 0:
            continue
        links += [(a, b) for a in groups[i] for b in groups[j]]
    target = "|".join(",".join(g) for g in groups) + (" (one-way)" if one_way else "")
    return LinkFault(cluster, history, links, drop=1.0, kind="partition", target=target)


def bridge(
    cluster: LocalCluster,
    history: History,
    left: Sequence[str],
    middle: Sequence[str],
    right: Sequence[str],
) -> LinkFault:
    """``left`` and ``right`` cannot talk; ``middle`` talks to both (Jepsen's bridge)."""
    links = [(a, b) for a in left for b in right] + [(b, a) for a in left for b in right]
    target = f"{','.join(left)}|{','.join(middle)}|{','.join(right)}"
    return LinkFault(cluster, history, links, drop=1.0, kind="bridge", target=target)


def message_loss(
    cluster: LocalCluster, history: History, p: float = 0.05, nodes: Sequence[str] | None = None
) -> LinkFault:
    """Every link between ``nodes`` (default: all) loses a fraction ``p`` of its frames."""
    names = list(nodes or cluster.nodes)
    links = list(itertools.permutations(names, 2))
    return LinkFault(cluster, history, links, drop=p, kind="loss", target=f"all@{p:g}")


def slow_node(cluster: LocalCluster, history: History, name: str, delay: float = 0.2) -> LinkFault:
    """Every frame to and from ``name`` is delayed by ``delay`` seconds."""
    others = [n for n in cluster.nodes if n != name]
    links = [(name, o) for o in others] + [(o, name) for o in others]
    return LinkFault(cluster, history, links, delay=delay, kind="slow", target=name)


# -- clock offset --------------------------------------------------------------------------
class FaultNotInjected(PeerRingError):
    """A fault could not be injected (the node lacks the flag, or it had no effect)."""


async def node_clock_offset(cluster: LocalCluster, name: str, timeout: float = 5.0) -> float:
    """Seconds node ``name``'s wall clock is ahead of ours (its RESP ``TIME``)."""
    import time

    import redis.asyncio as aioredis

    node = cluster[name]
    if node.resp_port is None:
        raise ConfigError("measuring a node's clock needs the cluster started with resp_port")
    client = aioredis.Redis(host=node.ip, port=node.resp_port, socket_timeout=timeout)
    try:
        before = time.time()
        seconds, micros = await client.time()
        after = time.time()
    finally:
        await client.aclose()
    return float(seconds) + micros / 1e6 - (before + after) / 2


class ClockOffset(Fault):
    """Restart one node with its wall clock shifted by ``offset`` seconds."""

    kind = "clock"

    def __init__(self, cluster: LocalCluster, history: History, name: str, offset: float) -> None:
        super().__init__(history, name, offset=offset)
        self.cluster = cluster
        self.name = name
        self.offset = offset

    def _set_flag(self, offset: float | None) -> None:
        node = self.cluster[self.name]
        args = list(node.args)
        if "--clock-offset" in args:
            i = args.index("--clock-offset")
            del args[i : i + 2]
        if offset is not None:
            args += ["--clock-offset", repr(offset)]
        node.args = args

    async def _start(self) -> None:
        self._set_flag(self.offset)
        try:
            await asyncio.to_thread(self.cluster.restart, self.name)
        except RuntimeError as exc:  # NodeStartError: e.g. no such flag in this build
            raise FaultNotInjected(f"{self.name} did not start with --clock-offset: {exc}") from exc
        if self.cluster[self.name].resp_port is None:
            return  # nothing to measure with: the node accepted the flag
        measured = await node_clock_offset(self.cluster, self.name)
        if abs(measured - self.offset) > max(1.0, abs(self.offset) / 10):
            raise FaultNotInjected(
                f"{self.name} runs {measured:+.2f} s off, not the {self.offset:+g} s injected"
            )

    async def _heal(self) -> None:
        self._set_flag(None)
        await asyncio.to_thread(self.cluster.restart, self.name)


# -- bookkeeping ---------------------------------------------------------------------------
class Nemesis:
    """The faults of one run: ``async with Nemesis(...) as nem`` heals them all on exit."""

    def __init__(self, cluster: LocalCluster, history: History) -> None:
        self.cluster = cluster
        self.history = history
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    async def heal_all(self) -> None:
        """Heal every fault, last started first; keeps going when one heal fails."""
        errors: list[BaseException] = []
        for fault in reversed(self.faults):
            try:
                await fault.heal()
            except (PeerRingError, OSError, RuntimeError) as exc:
                errors.append(exc)
        if errors:
            raise AdminError(f"{len(errors)} fault(s) did not heal: {errors!r}")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.heal_all()


# -- waiting for the cluster ----------------------------------------------------------------
async def node_status(address: str, timeout: float = 2.0, transport: str = "tcp") -> dict[str, Any]:
    """The ``status`` map of the node listening at ``address`` (peer op ``st``)."""
    from peer_ring.transport import request_once

    result: dict[str, Any] = await request_once(
        address,
        wire.status_frame(),
        transport=transport,
        timeout=timeout,
        name=f"harness-{os.getpid()}",
    )
    return result


async def wait_members_up(
    cluster: LocalCluster, names: Sequence[str] | None = None, *, timeout: float = 30.0
) -> None:
    """Wait until each running node sees every node in ``names`` (default: the
    running ones) as ``up``; raises :class:`TimeoutError` at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    want = set(names or [n for n, p in cluster.nodes.items() if p.running])
    last: Any = None
    while True:
        pending = False
        for name, proc in cluster.nodes.items():
            if not proc.running:
                continue
            try:
                st = await node_status(proc.address)
            except PeerRingError as exc:
                last, pending = exc, True
                break
            up = {m["id"] for m in st["members"] if m["state"] == "up"}
            if not want <= up:
                last, pending = f"{name} sees up={sorted(up)}", True
                break
        if not pending:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"members {sorted(want)} not all up within {timeout}s: {last}")
        await asyncio.sleep(0.1)
