"""Helpers shared by the discovery integration tests."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from peer_ring.membership.base import Discovery


async def eventually(
    condition: Callable[[], bool], what: str, timeout: float = 20.0, interval: float = 0.05
) -> None:
    """Await ``condition()`` with a deadline (never a bare sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(interval)


def view_ids(d: Discovery) -> set[str]:
    return set(d.members())


class Runner:
    """A discovery instance in its own process, killable with SIGKILL."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                raise AssertionError(f"runner exited with {await self.proc.wait()}")
            if line.strip() == b"READY":
                return

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
