"""Five real SWIM processes on loopback aliases 127.0.0.2..6 (UDP + TCP).

Each node is ``python -m peer_ring.membership.swim`` printing JSON lines; the
tests act on the processes they started, by PID only (SIGKILL, SIGSTOP/SIGCONT,
SIGTERM), and await conditions on the printed events with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from peer_ring.membership.swim import SwimConfig

pytestmark = pytest.mark.integration

CFG = SwimConfig.local()
KEY = "5a" * 32
#: Extra seconds on top of protocol bounds for a busy 2-core machine.
SLACK = 10.0


class Node:
    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())
        self.gossip = ""

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(raw))
            self.changed.set()
        self.changed.set()

    async def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.5))
        return True

    def events(self, subject: str) -> list[dict[str, Any]]:
        return [x for x in self.lines if x.get("type") == "event" and x.get("id") == subject]

    def state_of(self, subject: str) -> str | None:
        evs = self.events(subject)
        return evs[-1]["state"] if evs else None

    def view(self) -> list[str]:
        views = [x["members"] for x in self.lines if x.get("type") == "view"]
        return views[-1] if views else []

    def stats(self) -> dict[str, Any]:
        found = [x for x in self.lines if x.get("type") == "stats"]
        return found[-1] if found else {}

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, sig)


async def spawn(name: str, host: str, seeds: list[str], *extra: str) -> Node:
    args = [sys.executable, "-m", "peer_ring.membership.swim", "--id", name]
    args += ["--bind", f"{host}:0", "--preset", "local", *extra]
    for s in seeds:
        args += ["--seed", s]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    node = Node(name, proc)
    ok = await node.wait(lambda: any(x.get("type") == "ready" for x in node.lines), 30)
    assert ok, f"{name} did not start"
    node.gossip = next(x["gossip"] for x in node.lines if x.get("type") == "ready")
    return node


@pytest.fixture
async def launcher() -> AsyncIterator[Callable[..., Any]]:
    started: list[Node] = []

    async def launch(n: int = 5, *extra: str) -> list[Node]:
        nodes: list[Node] = []
        for i in range(n):
            seeds = [nodes[0].gossip] if nodes else []
            node = await spawn(f"n{i + 1}", f"127.0.0.{i + 2}", seeds, *extra)
            nodes.append(node)
            started.append(node)
        ids = sorted(x.name for x in nodes)
        for node in nodes:
            assert await node.wait(lambda node=node: node.view() == ids, 30), node.view()
        return nodes

    launch.started = started  # type: ignore[attr-defined]
    yield launch
    for node in started:
        if node.proc.returncode is None:
            node.signal(signal.SIGCONT)
            node.signal(signal.SIGKILL)
        await node.proc.wait()
        await node.reader


async def test_kill_9_is_marked_dead_everywhere_within_bound(launcher: Any) -> None:
    nodes = await launcher(5)
    victim, others = nodes[-1], nodes[:-1]
    victim.signal(signal.SIGKILL)
    bound = CFG.detection_bound(5) + SLACK
    for node in others:
        assert await node.wait(
            lambda node=node: node.state_of("n5") == "dead" and "n5" not in node.view(), bound
        )


async def test_sigstop_is_suspected_then_alive_without_removal(launcher: Any) -> None:
    nodes = await launcher(5)
    victim, others = nodes[-1], nodes[:-1]
    victim.signal(signal.SIGSTOP)
    # Paused for at least 2x the probe timeout: until someone suspects it.
    loop = asyncio.get_running_loop()
    paused_at = loop.time()

    def suspected() -> bool:
        return any(n.state_of("n5") == "suspect" for n in others)

    while not suspected() and loop.time() - paused_at < 20:
        await asyncio.wait([asyncio.ensure_future(n.wait(suspected, 0.2)) for n in others])
    victim.signal(signal.SIGCONT)
    assert suspected()
    assert loop.time() - paused_at >= 2 * CFG.probe_timeout
    for node in others:
        assert await node.wait(lambda node=node: node.state_of("n5") == "alive", 15)
    for node in others:
        assert all(ev["state"] != "dead" for ev in node.events("n5"))
        assert "n5" in node.view()


async def test_graceful_leave_is_seen_as_left(launcher: Any) -> None:
    nodes = await launcher(5)
    leaver, others = nodes[-1], nodes[:-1]
    leaver.signal(signal.SIGTERM)
    assert await leaver.proc.wait() == 0
    assert any(x.get("type") == "stopped" for x in leaver.lines)
    for node in others:
        assert await node.wait(
            lambda node=node: node.state_of("n5") == "left" and "n5" not in node.view(), 10
        )
        assert all(ev["state"] != "dead" for ev in node.events("n5"))


async def test_encrypted_cluster_ignores_wrong_key_and_other_label(launcher: Any) -> None:
    good = ["--key", KEY, "--label", "blue"]
    nodes = await launcher(3, *good)
    seed = nodes[0].gossip
    wrong_key = await spawn("x1", "127.0.0.5", [seed], "--key", "a7" * 32, "--label", "blue")
    other_label = await spawn("x2", "127.0.0.6", [seed], "--key", KEY, "--label", "green")
    launcher.started.extend([wrong_key, other_label])

    def drops_counted() -> bool:
        nodes[0].signal(signal.SIGUSR1)
        st = nodes[0].stats()
        return st.get("dropped_decrypt", 0) > 0 and st.get("dropped_label", 0) > 0

    # Both outsiders keep knocking (join, then reconnect to seeds); the seed counts drops.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not drops_counted() and loop.time() < deadline:
        await nodes[0].wait(lambda: False, 0.5)
    assert drops_counted()
    for node in nodes:
        assert node.view() == ["n1", "n2", "n3"]
    assert wrong_key.view() == ["x1"]
    assert other_label.view() == ["x2"]
