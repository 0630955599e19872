"""A recorded client workload against the RESP ports of a cluster, and the final reads.

:func:`run_workload` runs ``clients`` asyncio clients (redis-py,
``redis.asyncio.Redis``), each bound to one node's RESP port and moving to
the next node after an error (a client failing over). Every operation is
recorded in a :class:`~peer_ring.testing.history.History`. The run stops at
``max_ops`` operations **or** after ``duration`` seconds, whichever comes
first; no operation outlives ``op_timeout``.

Operation mix (chosen so that the checkers can see loss, after Jepsen's
"set" and "list-append" workloads):

* **append** -- ``APPEND key "<element>;"`` on a key owned by that client
  alone. APPEND is a read-modify-write with the read's causal context on the
  server, so every acknowledged element must appear in the key's final
  value: a lost append is a missing element. After an operation whose
  outcome is unknown the client moves to a fresh key (an in-flight write
  that lands late would be a concurrent sibling, and over RESP the
  siblings of a key are not visible), and every ``max_appends_per_key``
  appends too (values stay small).
* **write** -- ``SET key <unique value>`` on a few keys shared by all
  clients: blind, concurrent writes. Each shared key takes at most
  ``max_writes_per_shared_key`` writes, then the workload moves that slot
  to a fresh key: in siblings mode every acknowledged blind write must stay
  a sibling, and a store keeps at most ``KVConfig.max_siblings`` (16).
  Over RESP a read shows the resolved (last-writer-wins) value; the
  replicas' own copies (:func:`replica_dumps`) show every sibling.
* **read** -- ``GET`` of a key the workload has touched.

Outcomes: a reply is ``ok``; a connection refused before anything was sent
or an ``-ERR`` reply (other than ``TRYAGAIN``) is ``fail``; timeouts, lost
connections and ``TRYAGAIN`` (quorum not reached) are ``unknown``.

:func:`final_reads` reads every key through RESP (quorum reads, retried on
other nodes until a deadline). :func:`replica_dumps` reads each replica's
*local* copy of each key over the peer protocol (the replica command
``get`` of the ``kv`` service), for the convergence check; a replica that is
still syncing is asked again until a deadline, and one that never answers
is reported (:attr:`ReplicaDumps.unanswered`), never silently left out.

Invariants: clients talk only to the endpoints given (loopback in tests);
every client and connection is closed when :func:`run_workload` returns,
also when it is cancelled.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError, TryAgainError

from peer_ring import wire
from peer_ring.clock import Clock, SystemClock
from peer_ring.errors import ConfigError, PeerRingError
from peer_ring.ring import Ring, RingNode
from peer_ring.testing.history import History

#: Marks a tombstone in replica dumps (a deleted key still has a version).
TOMBSTONE = "\x00tombstone"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A node's RESP address, named like the node (``n1``)."""

    name: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """How much load, of which kind.

    ``clients`` -- concurrent clients (each one connection at a time).
    ``max_ops`` -- total operation budget over all clients.
    ``duration`` -- seconds of load at most (the run also stops at ``max_ops``).
    ``op_timeout`` -- seconds before an operation counts as ``unknown``;
    keep it above the store's own quorum timeout, or the client gives up
    on operations that would still have answered.
    ``append_ratio`` / ``read_ratio`` -- shares of appends and reads; the
    rest are blind writes to ``shared_keys`` keys.
    ``pause_between`` -- seconds each client waits between operations
    (``0``: as fast as the cluster answers).
    ``start_on`` -- the endpoint name every client starts on (default:
    clients are spread round-robin); they fail over to the next ones.
    ``max_writes_per_shared_key`` -- blind writes a shared key takes before
    its slot moves to a fresh key (keep it below the store's
    ``max_siblings`` for the siblings-mode checks).
    """

    clients: int = 6
    max_ops: int = 4000
    duration: float = 6.0
    op_timeout: float = 3.0
    append_ratio: float = 0.5
    read_ratio: float = 0.3
    shared_keys: int = 6
    max_appends_per_key: int = 40
    pause_between: float = 0.0
    key_prefix: str = "fi"
    seed: int | None = None
    start_on: str | None = None
    max_writes_per_shared_key: int = 12

    def __post_init__(self) -> None:
        if self.clients < 1 or self.max_ops < 1 or self.shared_keys < 1:
            raise ConfigError("workload needs clients, max_ops and shared_keys >= 1")
        if self.max_writes_per_shared_key < 1:
            raise ConfigError("workload needs max_writes_per_shared_key >= 1")
        if self.duration <= 0 or self.op_timeout <= 0 or self.pause_between < 0:
            raise ConfigError("workload duration and op_timeout must be > 0")
        if min(self.append_ratio, self.read_ratio) < 0 or self.append_ratio + self.read_ratio > 1:
            raise ConfigError("append_ratio + read_ratio must be within [0, 1]")


@dataclass
class WorkloadResult:
    """What a run did: operation counts and every key it touched."""

    ops: int = 0
    ok: int = 0
    unknown: int = 0
    failed: int = 0
    append_keys: set[str] = field(default_factory=set)
    shared_keys: set[str] = field(default_factory=set)
    #: per shared-key slot: [generation, writes in this generation]
    slots: dict[int, list[int]] = field(default_factory=dict)

    @property
    def keys(self) -> set[str]:
        return self.append_keys | self.shared_keys


Status = Literal["ok", "fail", "unknown"]


def classify(exc: BaseException) -> Status:
    """The outcome of an operation that raised ``exc`` (see the module docstring)."""
    if isinstance(exc, TryAgainError):
        return "unknown"
    if isinstance(exc, ResponseError):
        return "fail"
    if isinstance(exc, RedisConnectionError) and "connecting to" in str(exc):
        return "fail"  # redis-py's connect-phase message: nothing was sent
    return "unknown"


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _client(ep: Endpoint, timeout: float) -> aioredis.Redis:
    return aioredis.Redis(
        host=ep.host,
        port=ep.port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # a retried write would blur the history
        decode_responses=False,
    )


class _Client:
    def __init__(
        self,
        index: int,
        endpoints: Sequence[Endpoint],
        history: History,
        config: WorkloadConfig,
        result: WorkloadResult,
        budget: list[int],
        rng: random.Random,
    ) -> None:
        self.process = f"c{index}"
        self.endpoints = endpoints
        names = [ep.name for ep in endpoints]
        if config.start_on is not None:
            self.ep_index = names.index(config.start_on)
        else:
            self.ep_index = index % len(endpoints)
        self.history = history
        self.config = config
        self.result = result
        self.budget = budget
        self.rng = rng
        self.seq = 0
        self.generation = 0
        self.appends_on_key = 0
        self.redis: aioredis.Redis | None = None

    @property
    def endpoint(self) -> Endpoint:
        return self.endpoints[self.ep_index]

    def append_key(self) -> str:
        return f"{self.config.key_prefix}:a:{self.process}:{self.generation}"

    def shared_key(self) -> str:
        """A shared key for the next blind write (see ``max_writes_per_shared_key``)."""
        cfg = self.config
        slot = self.rng.randrange(cfg.shared_keys)
        gen = self.result.slots.setdefault(slot, [0, 0])
        key = f"{cfg.key_prefix}:s:{slot}.{gen[0]}"
        gen[1] += 1
        if gen[1] >= cfg.max_writes_per_shared_key:
            gen[0] += 1
            gen[1] = 0
        return key

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    async def failover(self) -> None:
        await self.close()
        self.ep_index = (self.ep_index + 1) % len(self.endpoints)

    async def run(self, deadline: float, clock: Clock, stop: asyncio.Event | None = None) -> None:
        cfg = self.config
        try:
            while clock.monotonic() < deadline and self.budget[0] > 0:
                if stop is not None and stop.is_set():
                    break
                self.budget[0] -= 1
                await self.one_op()
                if cfg.pause_between:
                    await clock.sleep(cfg.pause_between)
        finally:
            await self.close()

    async def one_op(self) -> None:
        cfg = self.config
        if self.redis is None:
            self.redis = _client(self.endpoint, cfg.op_timeout)
        self.seq += 1
        roll = self.rng.random()
        node = self.endpoint.name
        h = self.history
        r = self.redis
        command: Any
        if roll < cfg.append_ratio:
            key = self.append_key()
            elem = f"{self.process}.{self.seq}"
            self.result.append_keys.add(key)
            oid = h.invoke(self.process, node, "append", key, elem)
            command = r.append(key, elem + ";")
        elif roll < cfg.append_ratio + cfg.read_ratio and self.result.keys:
            key = self.rng.choice(sorted(self.result.keys))
            oid = h.invoke(self.process, node, "read", key)
            command = r.get(key)
        else:
            key = self.shared_key()
            value = f"{self.process}.{self.seq}"
            self.result.shared_keys.add(key)
            oid = h.invoke(self.process, node, "write", key, value)
            command = r.set(key, value)
            elem = ""
        op = h.events[-1].op
        self.result.ops += 1
        try:
            reply = await asyncio.wait_for(command, cfg.op_timeout + 1.0)
        except (RedisError, OSError, TimeoutError) as exc:
            status = classify(exc)
            h.complete(oid, status, error=f"{type(exc).__name__}: {exc}"[:200])
            if status == "unknown":
                self.result.unknown += 1
            else:
                self.result.failed += 1
            if op == "append":
                self.generation += 1  # see the module docstring
                self.appends_on_key = 0
            await self.failover()
            return
        self.result.ok += 1
        if op == "read":
            text = _text(reply) if reply is not None else None
            h.complete(oid, "ok", value=text)
            return
        h.complete(oid, "ok")
        if op == "append":
            self.appends_on_key += 1
            if self.appends_on_key >= cfg.max_appends_per_key:
                self.generation += 1
                self.appends_on_key = 0


async def run_workload(
    endpoints: Sequence[Endpoint],
    history: History,
    config: WorkloadConfig | None = None,
    *,
    clock: Clock | None = None,
    result: WorkloadResult | None = None,
    stop: asyncio.Event | None = None,
) -> WorkloadResult:
    """Run the workload until ``max_ops`` or ``duration``; returns the counts and keys.

    Pass ``result`` to watch the counts while the run is in progress, and
    ``stop`` to end it earlier: once the event is set, each client finishes
    the operation in progress (its outcome is recorded) and stops.
    """
    if not endpoints:
        raise ConfigError("run_workload needs at least one endpoint")
    cfg = config or WorkloadConfig()
    if cfg.start_on is not None and cfg.start_on not in {ep.name for ep in endpoints}:
        raise ConfigError(f"start_on names no endpoint: {cfg.start_on!r}")
    clk = clock or SystemClock()
    res = result if result is not None else WorkloadResult()
    seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(4), "big")
    budget = [cfg.max_ops]
    clients = [
        _Client(i, endpoints, history, cfg, res, budget, random.Random(seed + i))
        for i in range(1, cfg.clients + 1)
    ]
    deadline = clk.monotonic() + cfg.duration
    await asyncio.gather(*(c.run(deadline, clk, stop) for c in clients))
    return res


# -- reading the outcome ------------------------------------------------------------------
@dataclass
class FinalReads:
    """The final value of every key (``[]``: missing) and the keys no node could read."""

    values: dict[str, list[str]]
    unread: list[str]


async def final_reads(
    endpoints: Sequence[Endpoint], keys: Sequence[str], *, timeout: float = 30.0
) -> FinalReads:
    """Read every key over RESP (a quorum read each; read repair runs as a side effect).

    A key whose read fails is retried on the next endpoint until ``timeout``
    seconds have passed; keys never read are listed in ``unread``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    clients = [_client(ep, 3.0) for ep in endpoints]
    values: dict[str, list[str]] = {}
    unread: list[str] = []
    try:
        for n, key in enumerate(sorted(keys)):
            attempt = n
            while True:
                r = clients[attempt % len(clients)]
                try:
                    raw = await r.get(key)
                except (RedisError, OSError):
                    if loop.time() > deadline:
                        unread.append(key)
                        break
                    attempt += 1
                    await asyncio.sleep(0.05)
                    continue
                values[key] = [] if raw is None else [_text(raw)]
                break
    finally:
        for r in clients:
            await r.aclose()
    return FinalReads(values, unread)


def owners_of(
    node_ids: Sequence[str], keys: Sequence[str], *, partitions: int, replicas: int
) -> dict[str, list[str]]:
    """The preference list of each key on a ring of ``node_ids`` (no zones, weight 1)."""
    ring = Ring([RingNode(n) for n in node_ids], partitions=partitions, replicas=replicas)
    return {k: list(ring.owners(k.encode())) for k in keys}


def _values_of_state(state: Any) -> list[str]:
    """Sibling values of one replica's raw DVVSet entries (``[[actor, n, [item...]]...]``)."""
    out: list[str] = []
    for entry in state or ():
        for item in entry[2]:
            value = item[0]
            out.append(TOMBSTONE if value is None else bytes(value).decode("utf-8", "replace"))
    return sorted(out)


@dataclass
class ReplicaDumps:
    """Each node's local copy of each key, and the nodes that never answered.

    ``contents``: ``{node: {key: sibling values}}`` for the nodes that
    answered every key; ``unanswered``: ``{node: last error}`` for the others.
    """

    contents: dict[str, dict[str, list[str]]]
    unanswered: dict[str, str]


async def replica_dumps(
    peers: Mapping[str, str],
    keys: Sequence[str],
    *,
    partitions: int,
    namespace: str = "kv",
    timeout: float = 3.0,
    deadline: float = 30.0,
) -> ReplicaDumps:
    """Each node's *local* copy of each key (see :class:`ReplicaDumps`).

    ``peers`` maps node names to their peer (``--listen``) addresses. A node
    that refuses or does not answer (a restarted replica still syncing its
    partitions refuses reads) is asked again until ``deadline`` seconds have
    passed; after that it is listed in ``unanswered`` with its last error.
    This sends the ``kv`` service's replica command ``get`` over the peer
    protocol, the same request a coordinator sends: it reads, never writes.
    """
    from peer_ring.transport.base import TransportConfig
    from peer_ring.transport.tcp import TcpTransport

    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    ring = Ring([RingNode("x")], partitions=partitions, replicas=1)
    cfg = TransportConfig(request_timeout=timeout, connect_timeout=timeout)
    client = TcpTransport(f"harness-{os.getpid()}", "127.0.0.1:0", cfg)
    await client.start()
    dumps: dict[str, dict[str, list[str]]] = {}
    unanswered: dict[str, str] = {}
    try:
        for name, address in peers.items():
            contents: dict[str, list[str]] = {}
            todo = list(keys)
            while todo:
                key = todo[0]
                k = key.encode()
                msg = wire.probe_frame(
                    namespace, "get", k, ring.partition_for(k), None, client.node_id
                )
                try:
                    state = await client.request(address, msg, timeout)
                except PeerRingError as exc:
                    if loop.time() > give_up:
                        unanswered[name] = f"{type(exc).__name__}: {exc}"[:300]
                        break
                    await asyncio.sleep(0.1)
                    continue
                if state:
                    contents[key] = _values_of_state(state)
                todo.pop(0)
            if not todo:
                dumps[name] = contents
    finally:
        await client.close()
    return ReplicaDumps(dumps, unanswered)


def final_from_dumps(
    dumps: Mapping[str, Mapping[str, Sequence[str]]],
    owners: Mapping[str, Sequence[str]],
) -> dict[str, list[str]]:
    """The final state with every sibling: per key, the union of its owners'
    values (tombstones left out). Meaningful once the owners converged."""
    final: dict[str, list[str]] = {}
    for key, nodes in owners.items():
        values: set[str] = set()
        for n in nodes:
            values.update(v for v in dumps.get(n, {}).get(key, ()) if v != TOMBSTONE)
        final[key] = sorted(values)
    return final
