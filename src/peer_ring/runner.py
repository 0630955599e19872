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
import importlib
import json
import logging
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from peer_ring.config import NodeConfig
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
        return EtcdDiscovery(EtcdConfig.from_options(o["etcd"], o.get("etcd_prefix")))
    if backend == "zookeeper":
        from peer_ring.membership.zookeeper import ZooKeeperConfig, ZooKeeperDiscovery

        if not o.get("zookeeper"):
            raise ConfigError("--discovery zookeeper needs --zookeeper HOST:PORT[,...]")
        hosts = tuple(h.strip() for h in str(o["zookeeper"]).split(",") if h.strip())
        zk_kwargs: dict[str, Any] = {"hosts": hosts}
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


def _kv_store(config: NodeConfig, conflicts: str) -> Any:
    """The replicated KV store service of a node process.

    Served over RESP, whose SET is a blind write: ``conflicts="lww"`` (the
    process default) keeps one value per key, resolved by hybrid logical
    clock timestamps, which is what Redis clients expect; ``"siblings"``
    keeps concurrent blind writes as siblings (reads still return the newest).
    """
    from peer_ring.apps.kv.store import KVConfig, KVStore

    return KVStore(config=KVConfig(conflicts=conflicts))


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


async def serve(
    config: NodeConfig,
    discovery: DiscoveryOptions | None = None,
    *,
    requirepass: str | None = None,
    conflicts: str = "lww",
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
    node = Node(config, discovery=build_discovery(config, discovery))
    kv = _kv_store(config, conflicts)
    if kv is not None:
        node.register(kv)
        node.add_peer_handler("kv", _kv_admin(kv))
    http: HttpServer | None = None
    resp: Any = None
    await node.start()
    try:
        if config.http:
            http = HttpServer(node, config.http)
            await http.start()
        if config.resp and kv is not None:
            from peer_ring.server.resp import RespConfig, RespServer

            host, port = parse_address(config.resp)
            resp = RespServer(kv, host=host, port=port, config=RespConfig(requirepass=requirepass))
            await resp.start()
        elif config.resp:
            raise ConfigError("--resp needs the KV store, which this build lacks")
        print(
            json.dumps(
                {
                    "event": "ready",
                    "id": node.id,
                    "address": node.address,
                    "resp": config.resp,
                    "http": f"{http.host}:{http.port}" if http else None,
                    "pid": _pid(),
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
        await node.stop()
        if http is not None:
            await http.close()
        print(json.dumps({"event": "stopped", "id": node.id}), flush=True)


def _pid() -> int:
    import os

    return os.getpid()


def install_event_loop_policy() -> str:
    """Use uvloop when installed (20-50% faster channels); return the loop's name."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def run(config: NodeConfig, discovery: DiscoveryOptions | None = None, **kw: Any) -> int:
    """Blocking entry point used by the CLI; returns the process exit code."""
    install_event_loop_policy()
    try:
        asyncio.run(serve(config, discovery, **kw))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
