"""Helpers of the membership-change process tests: a probe client, configs, RESP loads.

The probe talks to node processes over the peer transport like
``peer-ring status`` does: ``["st"]`` for status and *replica-local* KV
commands (``["s", "kv", command, key, partition, payload, "probe"]``, no
epoch: never fenced), so a test sees exactly what one replica holds, not
what a quorum answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from peer_ring.membership import Member
from peer_ring.ring import Ring
from peer_ring.testing.cluster import LocalCluster
from peer_ring.transport.base import TransportConfig
from peer_ring.transport.tcp import TcpTransport
from tests.conftest import wait_for

PARTITIONS = 64
RESP = 6379

#: ``--preset local`` values: a ``--config`` file replaces the preset, so it repeats them.
_LOCAL = """\
[node]
member_sync_interval = 0.5
discovery_start_timeout = 3.0

[node.failure]
ping_interval = 0.25
ping_timeout = 0.5
failures_to_down = 2

[node.transport_config]
request_timeout = 2.0
connect_timeout = 1.0

[node.handoff]
"""


def config_file(tmp_path: Path, **handoff: Any) -> list[str]:
    """``--config FILE`` args: the local preset plus ``[node.handoff]`` values."""
    lines = [_LOCAL]
    for k, v in handoff.items():
        text = str(v).lower() if isinstance(v, bool) else repr(v)
        lines.append(f"{k} = {text}")
    path = tmp_path / "node.toml"
    path.write_text("\n".join(lines) + "\n")
    return ["--config", str(path)]


class Probe:
    """One transport client for status and replica-local reads of many nodes."""

    def __init__(self) -> None:
        cfg = TransportConfig(request_timeout=5.0, connect_timeout=1.0)
        self.t = TcpTransport("probe", "127.0.0.1:0", cfg)

    async def __aenter__(self) -> Probe:
        await self.t.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.t.close()

    async def status(self, address: str) -> dict[str, Any]:
        st: dict[str, Any] = await self.t.request(address, ["st"])
        return st

    async def held(self, address: str) -> set[bytes]:
        """Every live key this node's replica holds (replica-local ``scan``)."""
        msg = ["s", "kv", "scan", b"", 0, [list(range(PARTITIONS)), None], "probe"]
        keys: list[bytes] = await self.t.request(address, msg, 10.0)
        return set(keys)

    async def state(self, address: str, key: bytes) -> Any:
        """This node's replica-local DVV state of ``key`` (nil when absent)."""
        part = Ring((), partitions=PARTITIONS).partition_for(key)
        return await self.t.request(address, ["s", "kv", "get", key, part, None, "probe"])

    async def converged(self, cluster: LocalCluster, names: Iterable[str]) -> bool:
        """Every named node sees exactly these members, all up, at one epoch."""
        want = set(names)
        try:
            sts = [await self.status(cluster[n].address) for n in want]
        except Exception:
            return False
        return len({s["epoch"] for s in sts}) == 1 and all(
            {m["id"] for m in s["members"]} == want
            and all(m["state"] == "up" for m in s["members"])
            for s in sts
        )

    async def wait_converged(
        self, cluster: LocalCluster, names: Iterable[str], timeout: float = 30.0
    ) -> None:
        names = list(names)
        seen: list[Any] = []

        async def check() -> bool:
            if await self.converged(cluster, names):
                return True
            seen[:] = [await self._view(cluster[n].address) for n in names]
            return False

        try:
            await wait_for(check, timeout=timeout, interval=0.2, message=f"one ring of {names}")
        except BaseException as exc:
            raise AssertionError(f"no single ring of {names}; views: {seen}") from exc

    async def _view(self, address: str) -> Any:
        try:
            st = await self.status(address)
        except Exception as exc:
            return repr(exc)
        return [st["node"], st["epoch"], [(m["id"], m["state"]) for m in st["members"]]]

    async def quiet(self, cluster: LocalCluster, names: Iterable[str]) -> bool:
        """No transfer in progress and no queued hint on any named node."""
        for n in names:
            st = await self.status(cluster[n].address)
            if st["transfers"] or any(st["hints"].values()):
                return False
        return True


def ring_of(cluster: LocalCluster, names: Iterable[str], replicas: int) -> Ring:
    """The ring the named nodes compute (placement uses ids only)."""
    members = [Member(n, cluster[n].address) for n in names]
    return Ring.from_members(members, partitions=PARTITIONS, replicas=replicas)


async def placement_errors(
    probe: Probe,
    cluster: LocalCluster,
    ring: Ring,
    keys: Iterable[bytes],
    *,
    strays: bool = True,
) -> list[str]:
    """What is wrong with the placement of ``keys`` (empty: every key on exactly its owners).

    A node must hold every key it owns; with ``strays`` it must also hold no
    key (of any kind) of a partition it does not own.
    """
    keys = list(keys)
    problems: list[str] = []
    for name in ring.node_ids:
        held = await probe.held(cluster[name].address)
        missing = [k for k in keys if name in ring.owners(k) and k not in held]
        if missing:
            problems.append(f"{name} lacks {len(missing)} owned keys, e.g. {missing[:3]}")
        if strays:
            extra = [k for k in held if name not in ring.owners(k)]
            if extra:
                problems.append(f"{name} holds {len(extra)} keys it does not own, e.g. {extra[:3]}")
    return problems


def redis_client(cluster: LocalCluster, name: str) -> aioredis.Redis:
    return aioredis.Redis(host=cluster[name].ip, port=RESP, socket_timeout=5)


async def set_many(r: aioredis.Redis, items: dict[bytes, bytes], batch: int = 500) -> set[bytes]:
    """Pipelined SETs; returns the keys whose write was acknowledged (+OK)."""
    acked: set[bytes] = set()
    pairs = list(items.items())
    for i in range(0, len(pairs), batch):
        chunk = pairs[i : i + batch]
        try:
            async with r.pipeline(transaction=False) as p:
                for k, v in chunk:
                    p.set(k, v)
                results = await p.execute(raise_on_error=False)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            continue  # outcome unknown: not acknowledged
        acked.update(k for (k, _), ok in zip(chunk, results, strict=True) if ok is True)
    return acked


async def get_many(r: aioredis.Redis, keys: list[bytes], batch: int = 500) -> dict[bytes, Any]:
    """Pipelined MGETs: ``key -> value or None``."""
    out: dict[bytes, Any] = {}
    for i in range(0, len(keys), batch):
        chunk = keys[i : i + batch]
        values = await r.mget(chunk)
        out.update(zip(chunk, values, strict=True))
    return out


async def run_blocking(fn: Any, *args: Any) -> Any:
    """Run a blocking LocalCluster call (start, restart) off the event loop."""
    return await asyncio.to_thread(fn, *args)
