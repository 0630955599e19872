"""Shared fixtures. Subsystem fixtures live in the conftest of their folder."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from peer_ring._build import HOT_MODULES, build


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a stale compiled build, and check the build asked for.

    A C extension built by `make compile` is imported in place of its ``.py``,
    so an edit to the source would silently go untested; and `make test`
    names the build each run must see (``PEER_RING_EXPECT_BUILD``).
    """
    for name in HOT_MODULES:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        if origin is None or origin.suffix != ".so":
            continue
        source = origin.with_name(name.rpartition(".")[2] + ".py")
        if source.exists() and source.stat().st_mtime > origin.stat().st_mtime:
            pytest.exit(
                f"{origin.name} is older than {source.name}: run `make compile` "
                "(or `make uncompile` to test the pure-Python source)",
                returncode=2,
            )
    expected = os.environ.get("PEER_RING_EXPECT_BUILD")
    if expected and build() != expected:
        pytest.exit(f"expected the {expected} build, found {build()}", returncode=2)


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str = "condition",
) -> None:
    """Await ``predicate()`` becoming true, failing the test after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


async def ready_on_clock(nodes: Sequence[Any], clock: Any) -> None:
    """Wait until started ``nodes`` that run on the ManualClock ``clock`` see
    each other and are ready. Their bootstrap waits on that clock, so it is
    advanced in 0.05 s steps (at most 1,000) until every node is ready."""
    await wait_for(lambda: all(len(n.members) == len(nodes) for n in nodes), message="membership")
    ready = asyncio.ensure_future(asyncio.gather(*(n.wait_ready() for n in nodes)))
    for _ in range(1000):
        if ready.done():
            break
        await clock.advance(0.05)
    await ready
