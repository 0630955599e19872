"""Run one node as a process: node + KV store + rate limiter + RESP + HTTP, until a signal.

This is what ``peer-ring node`` runs. It builds the discovery backend named by
``--discovery``, registers the key-value store and the rate limiter (RESP's
``CL.THROTTLE``, HTTP's ``POST /v1/GetRateLimits``), starts the optional network
surfaces, prints one JSON line ``{"event": "ready", ...}`` on stdout when the
node serves (test harnesses and scripts wait for it), and stops gracefully on
SIGTERM/SIGINT. A stop is a temporary absence, not a leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import importlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from peer_ring import wire
from peer_ring.apps.kv.store import KVConfig, KVStore
from peer_ring.apps.pubsub import PubSub
from peer_ring.apps.ratelimit import Limits, RateLimiter, RateLimiterConfig
from peer_ring.apps.streams import Streams
from peer_ring.clock import SystemClock
from peer_ring.config import NodeConfig, security_warnings
from peer_ring.errors import ConfigError, InvalidRequest
from peer_ring.membership.base import Discovery, parse_address
from peer_ring.membership.static import StaticDiscovery
from peer_ring.node import Node
from peer_ring.server.http import HttpServer

log = logging.getLogger(__name__)

DISCOVERY_BACKENDS = ("static", "etcd", "zookeeper", "kubernetes", "swim")


@dataclass(frozen=True, slots=True)
class DiscoveryOptions:
    """``--discovery`` and its backend's options (CLI flags or config file)."""

    backend: str = "static"
    options: Mapping[str, Any] = field(default_factory=dict)


def build_discovery(config: NodeConfig, opts: DiscoveryOptions) -> Discovery:
    """Construct the backend named by ``opts.backend``; imports it on demand."""
    o = dict(opts.options)
    backend = opts.backend
    if backend == "static":
        return StaticDiscovery(
            config.seeds,
            interval=config.member_sync_interval,
            start_timeout=config.discovery_start_timeout,
        )
    if backend == "etcd":
        from peer_ring.membership.etcd import EtcdConfig, EtcdDiscovery

        if not o.get("etcd"):
            raise ConfigError("--discovery etcd needs --etcd http://HOST:PORT[,...]")
        security: dict[str, Any] = {
            "ca_file": o.get("etcd_ca"), "cert_file": o.get("etcd_cert"),
            "key_file": o.get("etcd_key"), "username": o.get("etcd_user"),
        }  # fmt: skip
        if o.get("etcd_password_file"):
            from peer_ring.config import read_secret

            security["password"] = read_secret(o["etcd_password_file"], "etcd password")
        return EtcdDiscovery(EtcdConfig.from_options(o["etcd"], o.get("etcd_prefix"), **security))
    if backend == "zookeeper":
        from peer_ring.membership.zookeeper import ZooKeeperConfig, ZooKeeperDiscovery

        if not o.get("zookeeper"):
            raise ConfigError("--discovery zookeeper needs --zookeeper HOST:PORT[,...]")
        hosts = tuple(h.strip() for h in str(o["zookeeper"]).split(",") if h.strip())
        zk_kwargs: dict[str, Any] = {
            "hosts": hosts, "ca_file": o.get("zk_ca"), "cert_file": o.get("zk_cert"),
            "key_file": o.get("zk_key"),
        }  # fmt: skip
        if o.get("zk_digest_file"):
            from peer_ring.config import read_secret

            zk_kwargs["digest"] = read_secret(o["zk_digest_file"], "ZooKeeper digest")
        if o.get("zk_path"):
            zk_kwargs["path"] = o["zk_path"]
        return ZooKeeperDiscovery(ZooKeeperConfig(**zk_kwargs))
    if backend == "kubernetes":
        from peer_ring.membership.kubernetes import KubernetesConfig, KubernetesDiscovery

        k_kwargs: dict[str, Any] = {}
        if o.get("k8s_namespace"):
            k_kwargs["namespace"] = o["k8s_namespace"]
        if o.get("k8s_service"):
            k_kwargs["service"] = o["k8s_service"]
        return KubernetesDiscovery(KubernetesConfig(**k_kwargs))
    if backend == "swim":
        return _swim(config, o)
    raise ConfigError(f"unknown discovery backend {backend!r}; use {', '.join(DISCOVERY_BACKENDS)}")


def gossip_bind(config: NodeConfig, o: Mapping[str, Any]) -> str:
    """This node's SWIM address: ``--gossip`` or the peer host on port 7946."""
    host, _ = parse_address(config.listen)
    return str(o.get("gossip") or f"{host}:7946")


def swim_seeds(config: NodeConfig, o: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """``--seeds`` as gossip addresses, and the ones that were peer addresses.

    SWIM seeds are other nodes' *gossip* addresses (``--gossip``, port 7946
    by default), not their peer (``--listen``) addresses. A seed on this
    node's own peer port, when that differs from its gossip port, is read as
    a peer address and sent to the same host's gossip port, assuming the
    nodes use the same ports (the usual deployment); the second list names
    those seeds so the caller can say so.
    """
    _, peer_port = parse_address(config.listen)
    _, gossip_port = parse_address(gossip_bind(config, o))
    seeds: list[str] = []
    moved: list[str] = []
    for seed in config.seeds:
        host, port = parse_address(seed)
        if port == peer_port and port != gossip_port:
            moved.append(seed)
            seed = f"{host}:{gossip_port}"
        seeds.append(seed)
    return seeds, moved


def _swim(config: NodeConfig, o: dict[str, Any]) -> Discovery:
    """SWIM gossip; gated by a registry when one is configured too.

    ``--seeds`` name other nodes' *gossip* addresses (a peer address on the
    same port as ours is taken to mean that node's gossip port: see
    :func:`swim_seeds`); ``--gossip`` is this node's (default: the peer
    host, port 7946). With ``--etcd``,
    ``--zookeeper`` or ``--k8s-service`` as well, the registry supplies seeds
    and who may join, SWIM supplies liveness (view = registry ∩ alive).
    """
    from peer_ring.membership.swim import Keyring, RegistryGatedSwim, SwimConfig, SwimDiscovery

    bind = gossip_bind(config, o)
    seeds, moved = swim_seeds(config, o)
    if moved:
        log.warning(
            "swim: --seeds %s are peer (--listen) addresses; gossip runs on its own port, "
            "so they are used as %s (pass each node's --gossip address, port 7946 by default)",
            ",".join(moved),
            ",".join(s for s in seeds if s not in config.seeds),
        )
    keys = [k.strip() for k in str(o.get("gossip_key") or "").split(",") if k.strip()]
    swim = SwimDiscovery(
        SwimConfig.preset(str(o.get("preset") or "lan")),
        bind=bind,
        seeds=seeds,
        keyring=Keyring.from_hex(keys) if keys else None,
        label=str(o.get("gossip_label") or ""),
    )
    registry_backend = next(
        (b for b, flag in (("etcd", "etcd"), ("zookeeper", "zookeeper"),
                           ("kubernetes", "k8s_service")) if o.get(flag)),
        None,
    )  # fmt: skip
    if registry_backend is None:
        return swim
    registry = build_discovery(config, DiscoveryOptions(registry_backend, o))
    gated: Discovery = RegistryGatedSwim(registry, swim)
    return gated


def _kv_store(
    config: NodeConfig, conflicts: str, maxmemory: int = 0, policy: str = "noeviction"
) -> KVStore:
    """The replicated KV store service of a node process.

    Served over RESP, whose SET is a blind write: ``conflicts="lww"`` (the
    process default) keeps one value per key, resolved by hybrid logical
    clock timestamps, which is what Redis clients expect; ``"siblings"``
    keeps concurrent blind writes as siblings (reads still return the newest).
    """
    return KVStore(
        config=KVConfig(conflicts=conflicts, maxmemory=maxmemory, maxmemory_policy=policy)
    )


def _leave_op(node: Node, stop: asyncio.Event) -> Any:
    """Peer op ``["leave"]`` behind ``peer-ring leave``: decommission, then exit.

    Hands every partition to its new owners first (``node.leave()``), answers
    with what moved, and then stops the process.
    """

    async def handle(message: list[Any], peer: Any) -> Any:
        return await _decommission(node, stop)

    return handle


async def _decommission(node: Node, stop: asyncio.Event) -> dict[str, Any]:
    """Hand every partition over, leave, then stop the process (``peer-ring
    leave`` and the web console's decommission of this node)."""
    before = node.metrics()
    await node.leave()
    after = node.metrics()
    asyncio.get_running_loop().call_later(0.2, stop.set)
    return {
        "node": node.id,
        "transfers": after["transfers_completed"] - before["transfers_completed"],
        "records": after["records_sent"] - before["records_sent"],
    }


def _resp_metrics(get_server: Any) -> Any:
    """RESP counters as Prometheus families (empty without a RESP server)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    server = get_server()
    if server is None:
        return
    stats = server.stats
    for name in ("commands_processed", "error_replies", "protocol_errors",
                 "connections_received", "rejected_connections"):  # fmt: skip
        c = CounterMetricFamily(f"peer_ring_resp_{name}", f"RESP {name.replace('_', ' ')}")
        c.add_metric([], getattr(stats, name, 0))
        yield c
    g = GaugeMetricFamily("peer_ring_resp_connections", "Open RESP connections")
    g.add_metric([], len(server.connections))
    yield g


def _kv_admin(kv: Any) -> Any:
    """Peer op ``["kv", verb, key, ...]`` behind ``peer-ring kv get|put|del``."""

    async def handle(message: list[Any], peer: Any) -> Any:
        if len(message) < 3 or not isinstance(message[2], bytes):
            raise InvalidRequest("kv: expected [kv, verb, key, ...] with a bytes key")
        verb, key = message[1], message[2]
        if verb == "get":
            entry = await kv.get_entry(key)
            return None if entry is None else [entry.value, entry.expires_at]
        if verb == "put" and len(message) == 5 and isinstance(message[3], bytes):
            await kv.put(key, message[3], ttl=message[4])
            return True
        if verb == "del":
            return bool(await kv.delete(key))
        raise InvalidRequest(f"kv: unknown verb or arguments {verb!r}")

    return handle


def _ratelimit_admin(limiter: RateLimiter) -> Any:
    """Peer op ``["ratelimit", "hit", key, limit, period, hits, algorithm]`` behind
    ``peer-ring ratelimit hit`` (answers the decision as a map), and
    ``["ratelimit", "stats"]`` behind ``peer-ring status`` (the limiter's figures)."""

    async def handle(message: list[Any], peer: Any) -> Any:
        if message[1:] == ["stats"]:
            return limiter.figures()
        if len(message) != 7 or message[1] != "hit" or type(message[2]) is not str:
            raise InvalidRequest(
                "ratelimit: expected [ratelimit, hit, key, limit, period, hits, alg]"
            )
        _, _, key, limit, period, hits, algorithm = message
        d = await limiter.hit(key, limit=limit, period=period, hits=hits, algorithm=algorithm)
        return {
            "allowed": d.allowed,
            "limit": d.limit,
            "remaining": d.remaining,
            "reset_at": d.reset_at,
            "retry_after": None if d.retry_after == float("inf") else d.retry_after,
        }

    return handle


async def serve(
    config: NodeConfig,
    discovery: DiscoveryOptions | None = None,
    *,
    requirepass: str | None = None,
    resp_options: Mapping[str, Any] | None = None,
    conflicts: str = "lww",
    maxmemory: int = 0,
    maxmemory_policy: str = "noeviction",
    clock_offset: float = 0.0,
    misbehave: str | None = None,
    ratelimit_limits: str | None = None,
    ratelimit_mode: str = "exact",
    grpc_api: str | None = None,
    stop: asyncio.Event | None = None,
    pace_gc: bool = False,
) -> None:
    """Run a node until ``stop`` is set or SIGTERM/SIGINT arrives.

    ``misbehave`` (``MODE[:RATE]``, needs ``config.testing``) registers the
    KV store behind :class:`peer_ring._misbehave.Misbehaving`: a
    replica that breaks a promise on purpose, to prove the fault harness
    catches it.
    ``ratelimit_limits``: a descriptor file of named limits (Envoy style,
    ``docs/ratelimit.md``) for the rate limiter; ``ratelimit_mode`` its
    default mode (exact, lease or global). ``grpc_api``: HOST:PORT of
    the rate limiter's gRPC APIs (gubernator's V1, Envoy's RateLimitService).
    ``pace_gc``: run a :class:`GcPacer` on the loop while serving (a node
    process, after :func:`tune_gc`).
    """
    stop = stop or asyncio.Event()
    discovery = discovery or DiscoveryOptions()
    if discovery.backend == "swim":
        # peers learn our gossip address from the member record (registry seeds)
        config = replace(
            config, meta={**config.meta, "swim": gossip_bind(config, discovery.options)}
        )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if clock_offset and not config.testing:
        raise ConfigError("--clock-offset is a fault-injection tool: it needs --testing")
    if misbehave and not config.testing:
        raise ConfigError("--misbehave is a fault-injection tool: it needs --testing")
    for warning in security_warnings(config):
        log.warning(warning)
    node = Node(
        config,
        discovery=build_discovery(config, discovery),
        clock=SystemClock(offset=clock_offset) if clock_offset else None,
    )
    node.add_peer_handler(wire.LEAVE, _leave_op(node, stop))
    kv = _kv_store(config, conflicts, maxmemory, maxmemory_policy)
    if misbehave:
        from peer_ring._misbehave import Misbehaving, parse_spec

        mode, rate = parse_spec(misbehave)
        log.warning("node %s misbehaves on purpose: %s (rate %g)", config.node_id, mode, rate)
        node.register(Misbehaving(kv, mode, rate=rate))
    else:
        node.register(kv)
    node.add_peer_handler(wire.KV_ADMIN, _kv_admin(kv))
    limits = Limits.from_file(ratelimit_limits) if ratelimit_limits else None
    limiter = node.register(RateLimiter(RateLimiterConfig(mode=ratelimit_mode), limits=limits))
    node.add_peer_handler(wire.RATELIMIT_ADMIN, _ratelimit_admin(limiter))
    streams = node.register(Streams())
    pubsub = node.register(PubSub())
    if config.testing:  # the load generator of bench/ (peer_ring.testing.loadgen)
        from peer_ring.testing.loadgen import bench_op

        node.add_peer_handler(wire.BENCH, bench_op(kv))
    http: HttpServer | None = None
    resp: Any = None
    resp_tls: Any = None
    grpc_server: Any = None
    await node.start()
    pacer = GcPacer() if pace_gc else None
    if pacer is not None:
        pacer.start(loop)
    try:
        ropts = dict(resp_options or {})
        http_tls = ropts.pop("http_tls", None)
        metrics_token = ropts.pop("metrics_token", None)
        ratelimit_token = ropts.pop("ratelimit_token", None)
        if config.http:  # first: /healthz and /metrics while bootstrapping, /readyz 503
            from peer_ring.server.ratelimit_http import ratelimit_routes

            auth = config.transport_config.auth
            http = HttpServer(
                node, config.http, admin_token=auth.admin_token if auth is not None else None,
                metrics_token=metrics_token,
                ssl_context=None if http_tls is None else _resp_ssl({**http_tls, "ca": None}),
                decommission=partial(_decommission, node, stop),
            )  # fmt: skip
            http.app.add_routes(ratelimit_routes(limiter, token=ratelimit_token))
            await http.start()
            http.collector.extra.append(partial(_resp_metrics, lambda: resp))
        # serve clients once this node has learned the cluster and synced the
        # partitions it owns (a restarted replica is empty; see bootstrap)
        await node.bootstrap.done.wait()
        resp_tls_address = ropts.pop("tls_address", None)
        resp_tls_files = ropts.pop("tls_files", None)
        if config.resp or resp_tls_address:
            from peer_ring.server.resp import RespConfig, RespServer

            rconfig = RespConfig(requirepass=requirepass, throttler=limiter, **ropts)
            for address, tls in ((config.resp, None), (resp_tls_address, resp_tls_files)):
                if not address:
                    continue
                host, port = parse_address(address)
                server = RespServer(
                    kv,
                    host=host,
                    port=port,
                    config=rconfig,
                    clock=node.clock,  # TTL arithmetic must use the store's (possibly offset) clock
                    apps={"streams": streams, "pubsub": pubsub},
                    ssl_context=None if tls is None else _resp_ssl(tls),
                )
                await server.start()
                if resp is None:
                    resp = server
                else:
                    resp_tls = server
                    resp_tls.acl = resp.acl  # one set of users: ACL SETUSER on either port
        if grpc_api:
            from peer_ring.server.grpc_api.server import RateLimitGrpcServer

            ghost, gport = parse_address(grpc_api)
            grpc_server = RateLimitGrpcServer(limiter, ghost, gport)
            await grpc_server.start()
        print(
            json.dumps(
                {
                    "event": "ready",
                    "id": node.id,
                    "address": node.address,
                    "resp": f"{resp.host}:{resp.port}" if resp else None,
                    "resp_tls": f"{resp_tls.host}:{resp_tls.port}" if resp_tls else None,
                    "http": f"{http.host}:{http.port}" if http else None,
                    "grpc": f"{grpc_server.host}:{grpc_server.port}" if grpc_server else None,
                    "pid": os.getpid(),
                }
            ),
            flush=True,
        )
        await stop.wait()
        log.info("node %s stopping", node.id)
    finally:
        if http is not None:
            http.stopping = True
        if resp is not None:
            await resp.close()
        if resp_tls is not None:
            await resp_tls.close()
        if grpc_server is not None:
            await grpc_server.close()
        await node.stop()
        if http is not None:
            await http.close()
        if pacer is not None:
            pacer.stop()
        print(json.dumps({"event": "stopped", "id": node.id}), flush=True)


def _resp_ssl(files: Mapping[str, str | None]) -> Any:
    """The RESP TLS context [Redis ``tls-cert-file``/``tls-key-file``/
    ``tls-ca-cert-file``]: with a CA, clients must present a certificate it
    signed (``tls-auth-clients yes``)."""
    import ssl

    from peer_ring.transport.base import TLSConfig
    from peer_ring.transport.tls import server_context

    cert, key, ca = files.get("cert"), files.get("key"), files.get("ca")
    if not cert or not key:
        raise ConfigError(
            "TLS needs a certificate and its key "
            "(--resp-tls-cert/--resp-tls-key, --http-tls-cert/--http-tls-key)"
        )
    ctx: ssl.SSLContext = server_context(TLSConfig(cert, key, ca, require_client_cert=bool(ca)))
    return ctx


def install_event_loop_policy() -> str:
    """Use uvloop when installed (20-50% faster channels); return the loop's name."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def die_with_parent() -> None:
    """With ``PEER_RING_PARENT_PID`` set (test harnesses), exit when that process dies.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere a no-op.
    """
    parent = os.environ.get("PEER_RING_PARENT_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != parent:  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


#: Collector thresholds of a node process (CPython's default is 700, 10, 10).
#: A node holds millions of small states in large dicts, which every full
#: collection traverses; with the defaults a loaded node ran a full
#: collection every ~0.25 s, each pausing the event loop for 90-220 ms at
#: 1M keys (measured with the ``bench`` op's ``gc`` figures). Our hot paths
#: create few reference cycles, so collecting less often costs little memory.
#: The young generation is also collected on a timer (:class:`GcPacer`): the
#: count behind the first threshold misses most of what a write leaves there.
GC_THRESHOLDS = (50_000, 50, 100)
#: :class:`GcPacer`: shortest and longest time between two paced collections
#: (seconds), and the share of time young collections may take.
GC_PACE_MIN = 0.005
GC_PACE_MAX = 0.1
GC_PACE_DUTY = 0.01
#: Share of a core the process must have used since the last collection for
#: a paced one: a nearly idle node is left alone (its young generation cannot
#: grow). A share, not an amount of CPU: at intervals of a few milliseconds a
#: loaded node waiting on its clients may use under 2 ms between two
#: collections, and was then taken for idle and left 100 ms alone (pauses of
#: 13-20 ms at one node).
GC_PACE_IDLE_SHARE = 0.02


def tune_gc() -> None:
    """Apply :data:`GC_THRESHOLDS` (the process's objects so far are frozen out
    of future collections: modules, classes, the configuration). A node
    process also runs a :class:`GcPacer` on its event loop."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class GcPacer:
    """Bound the young generation by time as well as by CPython's count.

    CPython starts a young (generation 0) collection when *allocations minus
    deallocations* of tracked objects pass the first threshold, but a tuple
    taken from (or returned to) its per-size free list is not counted at
    all. A write stores a new state tuple and frees the one it replaces,
    so a store under overwrites recycles tuples through the free list: the
    count hardly moves while every stored state is a new tracked tuple in the
    young generation. The young generation then grows to every key written
    since the last collection, and the collection that finally comes
    traverses all of them at once (a node at 1 M SET commands: young
    collections of 10, 16, 27, ... 214 ms, the p99 of the writes). The work
    itself is needed -- a young collection is what untracks a state tuple
    (all its items are atomic) -- so the pacer only spreads it: every
    ``interval`` it arms a collection.

    A young collection's pause is about ``a + b * T`` after an interval
    ``T``: ``a`` for what is merely in flight when it runs (at a 3-node
    coordinator under ``-P 16`` some 8,000 objects of pending rounds, about
    1.5-2 ms), which every collection traverses again, ``b * T`` for the
    states written meanwhile, which one collection must see anyway (at one
    node writing 250,000 states/s, ~0.08 ms per ms: 8 ms after 100 ms). Only
    ``a`` is a cost of collecting often, and only ``b * T`` grows with the
    interval: so the interval is ``a / duty`` (within ``[2 * min_interval,
    max_interval]``) -- collections of in-flight objects take about ``duty``
    of the time, and the written states add as little to a pause as that
    allows (one node: a collection every 5-10 ms, pauses under 1 ms, instead
    of 8-12 ms pauses every 100 ms that were the p99 of its SETs; three
    nodes: ``a / duty`` is above the longest interval). ``a`` and ``b`` are
    told apart by alternating the interval between ``T`` and ``T / 2``: two
    consecutive young collections (however started) whose intervals differ
    by half give a line through their pauses (CPU time of the collecting
    thread: a preempted collection tells no slope), whose value at 0 is
    ``a`` (smoothed). Until the first estimate, the interval is the last pause
    over ``duty``. Intervals count from the end of the last collection
    however started. A process that used less than
    :data:`GC_PACE_IDLE_SHARE` of a core since the last collection is idle: no
    collection is armed, the next look is ``max_interval`` later.

    Arming sets the first threshold to 1 until the next collection starts
    (then the thresholds in force before are put back): the next counted
    allocation runs CPython's own collection, which also decides whether an
    older generation is due (its generation 2 rule weighs objects promoted
    since the last full collection, which Python cannot read). A direct
    ``gc.collect(0)`` would reset that count on every tick and so starve the
    older generations.
    """

    def __init__(
        self,
        min_interval: float = GC_PACE_MIN,
        max_interval: float = GC_PACE_MAX,
        duty: float = GC_PACE_DUTY,
    ) -> None:
        if not 0 < min_interval <= max_interval or not 0 < duty < 1:
            raise ConfigError("GcPacer needs 0 < min_interval <= max_interval and 0 < duty < 1")
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.duty = duty
        self.interval = min_interval
        #: the estimated pause of a collection right after another (``a``,
        #: seconds; None until two intervals told it) and the interval the
        #: alternation is built on (``T``)
        self.fixed: float | None = None
        self.base = min_interval
        self._short = False  # the next interval is the short one, T / 2
        #: (interval, pause) of the last young collection
        self._sample: tuple[float, float] | None = None
        #: thresholds to restore while armed (None: not armed)
        self._saved: tuple[int, int, int] | None = None
        self._started = 0.0
        self._started_cpu = 0.0
        #: the last young collection's pause (wall seconds)
        self.pause = 0.0
        self._gap = 0.0  # the interval the collection in progress ended
        #: when the last collection ended (perf_counter, process_time)
        self._last = 0.0
        self._cpu_last = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: collections seen and armed (statistics, tests)
        self.young = 0
        self.armed = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not None:
            return
        self._loop = loop
        self._last = time.perf_counter()  # the idle rule's reference, until a collection
        self._cpu_last = time.process_time()
        gc.callbacks.append(self._on_gc)
        self._handle = loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._disarm()
        self._loop = None

    def _disarm(self) -> None:
        saved = self._saved
        if saved is not None:
            self._saved = None
            gc.set_threshold(*saved)

    def _tick(self) -> None:
        loop = self._loop
        if loop is None:
            return
        now = time.perf_counter()
        wait = self._last + self.interval - now
        if wait < self.min_interval / 2:  # due
            if time.process_time() - self._cpu_last < GC_PACE_IDLE_SHARE * (now - self._last):
                # idle since the last collection: nothing can have piled up
                wait = self.max_interval
            else:
                wait = self.interval
                if self._saved is None:
                    t = gc.get_threshold()
                    if t[0] > 1:  # 0: collection disabled, leave it so
                        # armed first, remembered second: a collection started
                        # in between (another thread) leaves it armed and
                        # remembered, which the next collection undoes
                        gc.set_threshold(1, t[1], t[2])
                        self._saved = (t[0], t[1], t[2])
                        self.armed += 1
        self._handle = loop.call_later(wait, self._tick)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # may run in any thread: touches no loop, only this object's numbers
        now = time.perf_counter()
        if phase == "start":
            self._disarm()
            self._started = now
            self._started_cpu = time.thread_time()
            self._gap = now - self._last if self.young else 0.0
            return
        self._last = now  # every collection empties the young generation
        self._cpu_last = time.process_time()
        if info["generation"] == 0:
            self.young += 1
            # the collection's CPU time, not its wall time: on a shared machine
            # a preempted collection would tell the line a slope it does not have
            self._learn(self._gap, time.thread_time() - self._started_cpu)
            self.pause = now - self._started

    def _learn(self, gap: float, pause: float) -> None:
        """A young collection paused ``pause`` seconds after an interval of
        ``gap`` (0: unknown, the first): update the estimate of ``a`` and
        choose the next interval."""
        last = self._sample
        self._sample = (gap, pause) if gap > 0.0 else None
        if last is not None and gap > 0.0:
            lo, hi = (last, (gap, pause)) if last[0] < gap else ((gap, pause), last)
            if hi[0] >= 1.5 * lo[0]:  # far enough apart to draw a line through
                slope = max(0.0, (hi[1] - lo[1]) / (hi[0] - lo[0]))
                a = max(0.0, lo[1] - slope * lo[0])
                fixed = self.fixed
                self.fixed = a if fixed is None else fixed + 0.3 * (a - fixed)
        base = (pause if self.fixed is None else self.fixed) / self.duty
        self.base = min(self.max_interval, max(2 * self.min_interval, base))
        self._short = not self._short
        self.interval = self.base / 2 if self._short else self.base


def run(config: NodeConfig, discovery: DiscoveryOptions | None = None, **kw: Any) -> int:
    """Blocking entry point used by the CLI; returns the process exit code."""
    die_with_parent()
    install_event_loop_policy()
    tune_gc()
    try:
        asyncio.run(serve(config, discovery, pace_gc=True, **kw))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
