"""Small services and cluster helpers for the membership-change tests."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import xxhash

from peer_ring.config import HandoffConfig, NodeConfig, ReplicationConfig
from peer_ring.errors import (
    InvalidRequest,
    PeerUnavailable,
    QuorumNotReached,
    RequestTimeout,
    UnknownCommand,
)
from peer_ring.node import Node
from peer_ring.service import Record, Request, Service
from peer_ring.transport.memory import MemoryNetwork

Q = 64


class Register(Service):
    """Last-writer-wins registers: ``put [ts, value]``, ``get`` -> ``[ts, value]`` or None."""

    namespace = "reg"

    def __init__(self) -> None:
        self.data: dict[int, dict[bytes, tuple[int, bytes]]] = defaultdict(dict)

    def handle(self, request: Request) -> Any:
        part = self.data[request.partition]
        if request.command == "put":
            if type(request.payload) is not list or len(request.payload) != 2:
                raise InvalidRequest("put takes [ts, value]")
            return self._merge(part, request.key, (request.payload[0], request.payload[1]))
        if request.command == "get":
            cur = part.get(request.key)
            return None if cur is None else list(cur)
        raise UnknownCommand(request.command)

    @staticmethod
    def _merge(part: dict[bytes, tuple[int, bytes]], key: bytes, state: tuple[int, bytes]) -> bool:
        cur = part.get(key)
        if cur is None or state > cur:
            part[key] = state
            return True
        return False

    def export_partition(self, partition: int) -> Iterator[Record]:
        return iter([(k, list(v)) for k, v in self.data.get(partition, {}).items()])

    def import_records(self, partition: int, records: Sequence[Record]) -> int:
        part = self.data[partition]
        return sum(self._merge(part, k, (v[0], v[1])) for k, v in records)

    def digest(self, partition: int) -> dict[bytes, bytes]:
        return {
            k: xxhash.xxh3_64_digest(repr(v).encode())
            for k, v in self.data.get(partition, {}).items()
        }

    def read_records(self, partition: int, keys: Iterable[bytes]) -> list[Record]:
        part = self.data.get(partition, {})
        return [(k, list(part[k])) for k in keys if k in part]

    def drop_partition(self, partition: int) -> int:
        return len(self.data.pop(partition, {}))

    def partition_size(self, partition: int) -> int:
        return len(self.data.get(partition, {}))

    def holds(self, key: bytes, partition: int) -> tuple[int, bytes] | None:
        return self.data.get(partition, {}).get(key)


def address(i: int) -> str:
    return f"10.0.1.{i}:7400"


def make_node(
    net: MemoryNetwork,
    i: int,
    *,
    replicas: int = 2,
    seeds: Sequence[int] = (1,),
    handoff: HandoffConfig | None = None,
    **kw: Any,
) -> Node:
    cfg = NodeConfig.local(
        f"n{i}",
        listen=address(i),
        transport="memory",
        seeds=tuple(address(s) for s in seeds),
        replication=ReplicationConfig(
            partitions=Q, replicas=replicas, read_quorum=1, write_quorum=1
        ),
        **kw,
    )
    node = Node(cfg, network=net, handoff=handoff or fast_handoff())
    node.register(Register())
    return node


def fast_handoff(**kw: Any) -> HandoffConfig:
    base: dict[str, Any] = {
        "sweep_interval": 1.0,
        "hint_interval": 0.1,
        "retry_min": 0.05,
        "retry_max": 0.5,
        "ae_partitions_per_second": 0.0,
        "reap_interval": 0.2,
    }
    base.update(kw)
    return HandoffConfig(**base)


def reg(node: Node) -> Register:
    svc = node.service("reg")
    assert isinstance(svc, Register)
    return svc


def key(i: int) -> bytes:
    return f"key-{i}".encode()


def holds_all(node: Node, keys: list[int], ts: int = 1) -> bool:
    """``node`` holds every key of ``keys`` it owns, with the value ``write`` gave it."""
    ring = node.ring
    for i in keys:
        k = key(i)
        p = ring.partition_for(k)
        if node.id in ring.preference_list(p) and reg(node).holds(k, p) != (ts, b"v%d" % i):
            return False
    return True


async def write(
    node: Node, keys: Iterable[int], ts: int = 1, *, expect: int | None = None, **kw: Any
) -> list[int]:
    """Write ``keys`` with W=2 through ``node``; return those acknowledged.

    Only the outcomes of a fault (quorum not reached, peer unavailable, timeout)
    count as "not acknowledged"; any other error is a bug and propagates. With
    ``expect``, fewer acknowledgements than that fail the test here.
    """

    async def one(i: int) -> int | None:
        try:
            await node.coordinator.run(
                "reg",
                key(i),
                "put",
                [ts, b"v%d" % i],
                quorum=kw.get("quorum", 2),
                **{k: v for k, v in kw.items() if k != "quorum"},
            )
        except (QuorumNotReached, PeerUnavailable, RequestTimeout):
            return None
        return i

    acked: list[int] = []
    batch = list(keys)
    for start in range(0, len(batch), 200):
        results = await asyncio.gather(*(one(i) for i in batch[start : start + 200]))
        acked.extend(i for i in results if i is not None)
    if expect is not None:
        assert len(acked) >= expect, f"only {len(acked)} of {len(batch)} writes acknowledged"
    return acked


def placement_ok(nodes: Sequence[Node], keys: Iterable[int]) -> bool:
    """Every key is held by exactly the owners of the (common) ring, and nobody else."""
    ring = nodes[0].ring
    if any(n.ring.checksum != ring.checksum for n in nodes):
        return False
    for i in keys:
        k = key(i)
        p = ring.partition_for(k)
        owners = set(ring.preference_list(p))
        holders = {n.id for n in nodes if reg(n).holds(k, p) is not None}
        if holders != owners:
            return False
    return True
