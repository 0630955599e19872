"""Run one node as a process: node + KV store + RESP + HTTP, until a signal.

This is what ``peer-ring node`` runs. It builds the discovery backend named by
``--discovery``, registers the key-value store, starts the optional network
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
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from peer_ring.apps.kv.store import KVConfig, KVStore
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


def _swim(config: NodeConfig, o: dict[str, Any]) -> Discovery:
    """SWIM gossip; gated by a registry when one is configured too.

    ``--seeds`` name other nodes' *gossip* addresses; ``--gossip`` is this
    node's (default: the peer host, port 7946). With ``--etcd``,
    ``--zookeeper`` or ``--k8s-service`` as well, the registry supplies seeds
    and who may join, SWIM supplies liveness (view = registry ∩ alive).
    """
    from peer_ring.membership.swim import Keyring, RegistryGatedSwim, SwimConfig, SwimDiscovery

    bind = gossip_bind(config, o)
    keys = [k.strip() for k in str(o.get("gossip_key") or "").split(",") if k.strip()]
    swim = SwimDiscovery(
        SwimConfig.preset(str(o.get("preset") or "lan")),
        bind=bind,
        seeds=config.seeds,
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
        before = node.metrics()
        await node.leave()
        after = node.metrics()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        return {
            "node": node.id,
            "transfers": after["transfers_completed"] - before["transfers_completed"],
            "records": after["records_sent"] - before["records_sent"],
        }

    return handle


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


#: Upper bounds of one ``bench`` peer op (it runs inside a node process).
BENCH_MAX_SECONDS = 120.0
BENCH_MAX_OPS = 5_000_000
BENCH_MAX_CONCURRENCY = 4096
BENCH_MAX_SAMPLES = 200_000


def _bench_spec(raw: Any) -> dict[str, Any]:
    """Validate a ``bench`` spec; bad input raises :class:`InvalidRequest`."""
    if type(raw) is not dict:
        raise InvalidRequest("bench: expected [bench, {spec}]")
    spec: dict[str, Any] = {
        "seconds": 3.0, "warmup": 0.5, "ops": 1_000_000, "concurrency": 64,
        "value_size": 100, "read_ratio": 0.5, "keyspace": 10_000, "prefix": b"k",
        "preload": [0, 0], "profile": None, "seed": 0,
    }  # fmt: skip
    unknown = set(raw) - set(spec)
    if unknown:
        raise InvalidRequest(f"bench: unknown spec fields {sorted(unknown)}")
    spec.update(raw)
    for name, lo, hi in (
        ("seconds", 0.0, BENCH_MAX_SECONDS),
        ("warmup", 0.0, BENCH_MAX_SECONDS),
        ("read_ratio", 0.0, 1.0),
    ):
        v = spec[name]
        if type(v) not in (int, float) or not lo <= v <= hi:
            raise InvalidRequest(f"bench: {name} must be a number in [{lo}, {hi}]")
    for name, lo, hi in (
        ("ops", 0, BENCH_MAX_OPS),
        ("concurrency", 1, BENCH_MAX_CONCURRENCY),
        ("value_size", 0, 16 * 1024 * 1024),
        ("keyspace", 1, 100_000_000),
        ("seed", 0, 2**32),
    ):
        v = spec[name]
        if type(v) is not int or not lo <= v <= hi:
            raise InvalidRequest(f"bench: {name} must be an integer in [{lo}, {hi}]")
    pre = spec["preload"]
    if (
        type(pre) is not list
        or len(pre) != 2
        or any(type(x) is not int for x in pre)
        or not 0 <= pre[0] <= pre[1] <= 100_000_000
    ):
        raise InvalidRequest("bench: preload must be [start, stop) key indexes")
    if type(spec["prefix"]) is not bytes or len(spec["prefix"]) > 64:
        raise InvalidRequest("bench: prefix must be at most 64 bytes")
    if spec["profile"] is not None and type(spec["profile"]) is not str:
        raise InvalidRequest("bench: profile must be a file path or nil")
    return spec


def _kv_bench(kv: Any) -> Any:
    """Peer op ``["bench", spec]``, registered only with ``--testing``.

    A bounded load generator inside the node process, against this node's
    embedded :class:`~peer_ring.apps.kv.store.KVStore` API (every operation
    is a full quorum read or write, as from an application): first writes
    keys ``preload = [start, stop)`` (unmeasured), then ``concurrency``
    closed-loop workers issue gets (probability ``read_ratio``) and puts of
    ``value_size`` bytes on uniformly random keys of ``keyspace`` for
    ``warmup`` + ``seconds`` seconds or until ``ops`` operations finished,
    whichever comes first. Answers the measured window's counts, latency
    percentiles (µs), up to 200,000 latency samples (µs, ``array('I')``
    bytes, evenly strided), a histogram of *every* measured latency
    (``hist``: ``{"per_decade": k, "first": i, "counts": [...]}``, where
    ``counts[j]`` is the number of operations with a latency in
    ``[10**((i+j)/k), 10**((i+j+1)/k))`` µs and bucket 0 also holds 0 µs;
    log-spaced, ~12 % wide at k=20), the garbage collector's pauses in the
    window (``gc``: per generation ``[count, total s, max s]``), the process
    CPU seconds used (``cpu``: user+system; ``cpu_sys``: system) and the
    wall time. With ``profile`` (a path), cProfile
    runs over the window and dumps its stats there.
    """
    import array
    import gc
    import math
    import random
    import time

    async def handle(message: list[Any], peer: Any) -> Any:
        if len(message) != 2:
            raise InvalidRequest("bench: expected [bench, {spec}]")
        spec = _bench_spec(message[1])
        rng = random.Random(spec["seed"] or None)
        prefix: bytes = spec["prefix"]
        value = b"v" * spec["value_size"]
        conc: int = spec["concurrency"]
        start, stop = spec["preload"]
        next_key = iter(range(start, stop))

        async def preload() -> None:
            for n, i in enumerate(next_key, 1):
                await kv.put(prefix + b"%010d" % i, value)
                if n % 64 == 0:
                    await asyncio.sleep(0)  # W=1 puts can finish without yielding

        t0 = time.perf_counter()
        await asyncio.gather(*(preload() for _ in range(min(conc, max(1, stop - start)))))
        preload_s = time.perf_counter() - t0

        keyspace: int = spec["keyspace"]
        read_ratio: float = spec["read_ratio"]
        max_ops: int = spec["ops"]
        lat: list[int] = []
        errors: dict[str, int] = {}
        counts = {"get": 0, "put": 0, "hit": 0}
        measuring = False
        issued = 0
        begin_at = time.monotonic() + spec["warmup"]
        end = begin_at + spec["seconds"]

        async def worker() -> None:
            nonlocal issued
            clock = time.perf_counter_ns
            get, put = kv.get, kv.put
            rand = rng.random
            randrange = rng.randrange
            n = 0
            while issued < max_ops and time.monotonic() < end:
                if not measuring and time.monotonic() >= begin_at:
                    begin()  # checked inline: a loop whose ops finish locally never yields
                n += 1
                if n % 64 == 0:
                    await asyncio.sleep(0)  # let the other workers and the node run
                key = prefix + b"%010d" % randrange(keyspace)
                read = rand() < read_ratio
                if measuring:
                    issued += 1
                t = clock()
                try:
                    if read:
                        got = await get(key)
                    else:
                        await put(key, value)
                except Exception as exc:  # counted and reported, never fatal
                    name = type(exc).__name__
                    errors[name] = errors.get(name, 0) + 1
                    continue
                if measuring:
                    lat.append((clock() - t) // 1000)
                    if read:
                        counts["get"] += 1
                        counts["hit"] += got is not None
                    else:
                        counts["put"] += 1

        profiler: Any = None
        window: dict[str, float] = {}

        def begin() -> None:
            nonlocal measuring, profiler
            measuring = True
            errors.clear()
            if spec["profile"]:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            window["cpu"] = time.process_time()
            window["sys"] = os.times().system
            window["wall"] = time.perf_counter()
            gc.callbacks.append(on_gc)

        # garbage-collector pauses in the window, per generation: [count, total s, max s]
        gc_pauses = [[0, 0.0, 0.0] for _ in range(3)]
        gc_started = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_started[0] = time.perf_counter()
                return
            took = time.perf_counter() - gc_started[0]
            g = gc_pauses[info["generation"]]
            g[0] += 1
            g[1] += took
            g[2] = max(g[2], took)

        try:
            await asyncio.gather(*(worker() for _ in range(conc)))
            if not measuring:
                begin()
        finally:
            if on_gc in gc.callbacks:
                gc.callbacks.remove(on_gc)
        cpu = time.process_time() - window["cpu"]
        cpu_sys = os.times().system - window["sys"]
        wall = time.perf_counter() - window["wall"]
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(spec["profile"])
        done = len(lat)
        ordered = sorted(lat)

        def pct(p: float) -> int:
            if not ordered:
                return 0
            return ordered[min(done - 1, max(0, int(p / 100.0 * done + 0.999999) - 1))]

        # log-spaced histogram of all latencies, built after the window (no per-op cost)
        per_decade = 20
        buckets: dict[int, int] = {}
        run_start = 0
        for i in range(1, done + 1):  # one log10 per distinct latency
            if i == done or ordered[i] != ordered[run_start]:
                us = ordered[run_start]
                b = int(per_decade * math.log10(us) + 1e-9) if us > 1 else 0
                buckets[b] = buckets.get(b, 0) + i - run_start
                run_start = i
        first = min(buckets, default=0)
        hist = {
            "per_decade": per_decade,
            "first": first,
            "counts": [buckets.get(b, 0) for b in range(first, max(buckets, default=-1) + 1)],
        }
        step = max(1, done // BENCH_MAX_SAMPLES)
        return {
            "ops": done,
            **counts,
            "errors": errors,
            "wall": wall,
            "cpu": cpu,
            "cpu_sys": cpu_sys,
            "preload_s": preload_s,
            "p50_us": pct(50),
            "p99_us": pct(99),
            "p999_us": pct(99.9),
            "samples": array.array("I", lat[::step]).tobytes(),
            "hist": hist,
            "gc": gc_pauses,
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
    stop: asyncio.Event | None = None,
) -> None:
    """Run a node until ``stop`` is set or SIGTERM/SIGINT arrives."""
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
    for warning in security_warnings(config):
        log.warning(warning)
    node = Node(
        config,
        discovery=build_discovery(config, discovery),
        clock=SystemClock(offset=clock_offset) if clock_offset else None,
    )
    node.add_peer_handler("leave", _leave_op(node, stop))
    kv = _kv_store(config, conflicts, maxmemory, maxmemory_policy)
    node.register(kv)
    node.add_peer_handler("kv", _kv_admin(kv))
    if config.testing:
        node.add_peer_handler("bench", _kv_bench(kv))
    http: HttpServer | None = None
    resp: Any = None
    resp_tls: Any = None
    await node.start()
    try:
        ropts = dict(resp_options or {})
        http_tls = ropts.pop("http_tls", None)
        metrics_token = ropts.pop("metrics_token", None)
        if config.http:  # first: /healthz and /metrics while bootstrapping, /readyz 503
            auth = config.transport_config.auth
            http = HttpServer(
                node, config.http, admin_token=auth.admin_token if auth is not None else None,
                metrics_token=metrics_token,
                ssl_context=None if http_tls is None else _resp_ssl({**http_tls, "ca": None}),
            )  # fmt: skip
            await http.start()
            http.collector.extra.append(partial(_resp_metrics, lambda: resp))
        # serve clients once this node has learned the cluster and synced the
        # partitions it owns (a restarted replica is empty; see bootstrap)
        await node.bootstrap.done.wait()
        resp_tls_address = ropts.pop("tls_address", None)
        resp_tls_files = ropts.pop("tls_files", None)
        if config.resp or resp_tls_address:
            from peer_ring.server.resp import RespConfig, RespServer

            rconfig = RespConfig(requirepass=requirepass, **ropts)
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
                    ssl_context=None if tls is None else _resp_ssl(tls),
                )
                await server.start()
                if resp is None:
                    resp = server
                else:
                    resp_tls = server
                    resp_tls.acl = resp.acl  # one set of users: ACL SETUSER on either port
        print(
            json.dumps(
                {
                    "event": "ready",
                    "id": node.id,
                    "address": node.address,
                    "resp": f"{resp.host}:{resp.port}" if resp else None,
                    "resp_tls": f"{resp_tls.host}:{resp_tls.port}" if resp_tls else None,
                    "http": f"{http.host}:{http.port}" if http else None,
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
        await node.stop()
        if http is not None:
            await http.close()
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
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Apply :data:`GC_THRESHOLDS` (the process's objects so far are frozen out
    of future collections: modules, classes, the configuration)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(config: NodeConfig, discovery: DiscoveryOptions | None = None, **kw: Any) -> int:
    """Blocking entry point used by the CLI; returns the process exit code."""
    die_with_parent()
    install_event_loop_policy()
    tune_gc()
    try:
        asyncio.run(serve(config, discovery, **kw))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
