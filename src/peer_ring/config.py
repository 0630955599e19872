"""Node configuration: one frozen dataclass per subsystem, combined in :class:`NodeConfig`.

Durations are float seconds, sizes bytes. Every config is validated when it
is built; an inconsistent value raises :class:`~peer_ring.errors.ConfigError`.
Presets start from the defaults and change a few fields:

* :meth:`NodeConfig.local` -- a cluster of processes on one machine (tests,
  demos): fast failure detection, short timeouts.
* :meth:`NodeConfig.lan` -- the default: one data centre.
* :meth:`NodeConfig.wan` -- nodes across regions: patient timeouts.

Only the CLI reads environment variables and files; library users build
configs in code.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from peer_ring.errors import ConfigError
from peer_ring.membership.base import parse_address
from peer_ring.membership.failure import FailureDetectorConfig
from peer_ring.transport.base import PeerAuthConfig, TLSConfig, TransportConfig

TRANSPORTS = ("tcp", "grpc", "memory")


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    """Placement and quorum defaults.

    ``replicas`` is N, the number of nodes that hold each key; ``read_quorum``
    (R) and ``write_quorum`` (W) are how many of them must answer. R + W > N
    gives read-your-writes under a strict quorum. ``partitions`` (Q) is fixed
    for the life of a cluster: every node must use the same value.
    """

    #: Q, the fixed number of partitions keys are hashed into: a power of two
    #: in [1, 65536]. The same on every node for the life of the cluster. More
    #: partitions spread load more evenly and move data in smaller pieces, at
    #: the cost of more per-partition bookkeeping (anti-entropy trees, transfers).
    partitions: int = 1024
    #: N, the number of nodes that hold each key. More replicas survive more
    #: failures and cost N copies of memory and N-fold write traffic.
    replicas: int = 3
    #: R, the default number of replicas a read waits for (1..N). Higher reads
    #: are fresher (R + W > N sees the last acknowledged write) and fail sooner
    #: when replicas are down.
    read_quorum: int = 2
    #: W, the default number of home replicas a write waits for (1..N). A write
    #: is sent to all N either way; W only decides when it is acknowledged.
    write_quorum: int = 2

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigError("replicas (N) must be >= 1")
        for name in ("read_quorum", "write_quorum"):
            value = getattr(self, name)
            if not 1 <= value <= self.replicas:
                raise ConfigError(f"{name} must be between 1 and replicas ({self.replicas})")


def quorum_warning(replication: ReplicationConfig, *, sloppy: bool = False) -> str | None:
    """What the quorums of ``replication`` cannot survive, or ``None`` when they
    tolerate at least one replica down for reads and for writes.

    Reads need R of the N home replicas (they never use fallbacks), so R = N
    fails a read as soon as one replica of the key is down. Strict writes
    need W home replicas, so W = N fails a write likewise; ``sloppy`` writes
    count fallbacks and stay available. N=2 with the default quorums (R and
    W follow N, at most 2) is the common trap: R = W = N = 2.
    """
    n, r, w = replication.replicas, replication.read_quorum, replication.write_quorum
    broken = []
    if r >= n:
        broken.append("reads")
    if w >= n and not sloppy:
        broken.append("writes")
    if not broken:
        return None
    return (
        f"N={n}, R={r}, W={w}: {' and '.join(broken)} of a key fail as soon as one of its "
        f"{n} replica(s) is down (the quorums tolerate no failure); use N=3 with R=W=2 "
        "(the default) to tolerate one node down"
        + ("" if "writes" not in broken else ", or sloppy quorums for writes")
    )


@dataclass(frozen=True, slots=True)
class HandoffConfig:
    """Settings of transfer, hinted handoff, anti-entropy and bootstrap.

    Durations are float seconds, rates per second. Each field says its unit
    and trade-off; docs/handoff.md explains the mechanisms.
    """

    #: Partitions a node streams at once (handoff, re-replication). More
    #: finishes a rebalance sooner and takes more CPU and bandwidth from
    #: foreground requests.
    max_concurrent: int = 4
    #: Records per stream chunk (and per anti-entropy repair slice). Larger
    #: chunks mean fewer round trips and longer event-loop stalls per chunk.
    chunk_records: int = 512
    #: Cap on the records per second this node sends in transfers, all streams
    #: together; None: only flow control limits it. Lower protects foreground
    #: latency, higher finishes a rebalance sooner.
    max_records_per_second: float | None = None
    #: Cap on the bytes per second (packed chunk sizes) this node sends in
    #: transfers; None: no byte limit.
    max_bytes_per_second: float | None = None
    #: Seconds before the first retry of a failed stream; doubles per attempt.
    retry_min: float = 0.2
    #: Upper bound, in seconds, of the retry delay.
    retry_max: float = 5.0
    #: Attempts per stream before giving up (the sweep and anti-entropy then
    #: take over). A retry resumes after the chunks the receiver imported.
    max_attempts: int = 8
    #: Seconds between sweeps that hand off partitions this node holds but no
    #: longer owns; also the quiet time after an import before such data
    #: counts as stray.
    sweep_interval: float = 30.0
    #: The coordinator's default quorum mode. False (strict): only home
    #: replicas count towards W, so R + W > N means read-your-writes; down
    #: owners still get hinted copies on fallbacks. True (Dynamo's sloppy
    #: quorum): fallbacks count, writes stay available in a minority
    #: partition, and R + W > N no longer guarantees that a read sees the last
    #: acknowledged write.
    sloppy: bool = False
    #: Hinted handoff: a write for a down owner leaves a copy on a live
    #: fallback, delivered when the owner is back.
    hints: bool = True
    #: Most hints (records) one fallback node keeps; beyond it a hinted
    #: command fails with Overloaded. Bounds the memory a long outage costs.
    hint_max_records: int = 100_000
    #: Seconds between attempts to deliver stored hints to their owners.
    hint_interval: float = 1.0
    #: Hints (records) delivered per message.
    hint_batch: int = 256
    #: Partitions per second anti-entropy compares with one co-owner each
    #: (0 disables it). Higher repairs divergence sooner and costs CPU and
    #: traffic all the time.
    ae_partitions_per_second: float = 2.0
    #: Anti-entropy Merkle trees have 2**ae_depth leaves (0..16). Deeper trees
    #: pinpoint differences in big partitions with less data sent, and cost
    #: more to exchange when little differs.
    ae_depth: int = 8
    #: Seconds between checks for members down longer than
    #: ``NodeConfig.dead_after`` (they are then removed from the ring).
    reap_interval: float = 5.0
    #: After a start, a node refuses replica reads of the partitions it owns
    #: until it has synced them with their live co-owners, for at most this
    #: many seconds (then it serves anyway, with a warning). See
    #: ``peer_ring.replication.bootstrap``.
    bootstrap_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_concurrent < 1 or self.chunk_records < 1 or self.hint_batch < 1:
            raise ConfigError("max_concurrent, chunk_records and hint_batch must be >= 1")
        if self.max_records_per_second is not None and self.max_records_per_second <= 0:
            raise ConfigError("max_records_per_second must be > 0 (or None)")
        if self.max_bytes_per_second is not None and self.max_bytes_per_second <= 0:
            raise ConfigError("max_bytes_per_second must be > 0 (or None)")
        for name in ("retry_min", "retry_max", "sweep_interval", "hint_interval", "reap_interval"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"handoff.{name} must be > 0")
        if self.max_attempts < 1 or self.hint_max_records < 0:
            raise ConfigError("max_attempts must be >= 1 and hint_max_records >= 0")
        if self.ae_partitions_per_second < 0 or not 0 <= self.ae_depth <= 16:
            raise ConfigError("ae_partitions_per_second must be >= 0, ae_depth in [0, 16]")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node needs. See the module docstring for presets.

    ``listen`` is the peer transport's bind address; ``advertise`` the address
    peers should dial (defaults to ``listen``). ``seeds`` are contact points
    for static discovery. ``member_sync_interval`` is how often static
    discovery exchanges member lists with a random peer. ``dead_after`` is how
    long a member may be down before it is removed from the ring (None: never
    automatically). ``testing`` enables the fault-injection admin endpoints --
    never set it in production.
    """

    #: This node's id, unique in the cluster and stable across restarts (the
    #: ring places partitions by id, so a restarted node keeps its partitions).
    node_id: str
    #: Address ``HOST:PORT`` the peer transport binds.
    listen: str = "127.0.0.1:7400"
    #: Address ``HOST:PORT`` peers dial, when it differs from ``listen`` (NAT,
    #: containers); None: ``listen``.
    advertise: str | None = None
    #: Contact points ``HOST:PORT`` for static discovery; any one reachable
    #: seed is enough to join. Ignored by the other discovery backends.
    seeds: tuple[str, ...] = ()
    #: Failure zone (rack, availability zone). Replicas of a partition go to
    #: distinct zones when there are enough of them. None: no zone.
    zone: str | None = None
    #: Relative capacity: a node of weight 2 holds about twice the partitions
    #: of a node of weight 1.
    weight: float = 1.0
    #: Free-form labels announced with the member record.
    meta: Mapping[str, str] = field(default_factory=dict)
    #: Cluster name, checked in every peer handshake: nodes of another
    #: cluster are refused even when they can reach this one.
    cluster: str = "peer-ring"
    #: Peer transport: ``tcp`` (the default), ``grpc``, or ``memory``
    #: (in-process, for tests).
    transport: str = "tcp"
    #: N, R, W and Q.
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    #: Deadlines, queue bounds and reconnects of the peer transport.
    transport_config: TransportConfig = field(default_factory=TransportConfig)
    #: How fast a silent member is marked down.
    failure: FailureDetectorConfig = field(default_factory=FailureDetectorConfig)
    #: Transfer, hinted handoff, anti-entropy and bootstrap.
    handoff: HandoffConfig = field(default_factory=HandoffConfig)
    #: Seconds between member-list exchanges with a random peer (static
    #: discovery). Lower spreads joins and leaves sooner, with more messages.
    member_sync_interval: float = 1.0
    #: Seconds discovery may take to find the initial member set before the
    #: node's start fails.
    discovery_start_timeout: float = 5.0
    #: Seconds a member may be down before any node removes it from the ring
    #: and its partitions are re-replicated; None: never automatically. Long
    #: enough for a restart or a rolling upgrade, short enough that a lost
    #: machine does not leave partitions at N-1 copies for long.
    dead_after: float | None = 300.0
    #: Address ``HOST:PORT`` of the Redis protocol server (node processes
    #: only); None: no RESP server.
    resp: str | None = None
    #: Address ``HOST:PORT`` of the web console (``/``), ``/healthz``,
    #: ``/readyz``, ``/metrics`` and ``/status`` (node processes only); None:
    #: no HTTP server.
    http: str | None = None
    #: Seconds a stop may take before remaining work is cancelled.
    stop_timeout: float = 5.0
    #: Enables the fault-injection admin endpoints and test-only peer
    #: operations. Never set it in production.
    testing: bool = False

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"transport must be one of {', '.join(TRANSPORTS)}")
        if self.transport != "memory":
            parse_address(self.listen)
        for seed in self.seeds:
            parse_address(seed)
        for name in ("resp", "http", "advertise"):
            value = getattr(self, name)
            if value is not None:
                parse_address(value)
        if self.member_sync_interval <= 0 or self.stop_timeout <= 0:
            raise ConfigError("member_sync_interval and stop_timeout must be > 0")
        if self.dead_after is not None and self.dead_after <= 0:
            raise ConfigError("dead_after must be > 0 seconds")
        if self.transport_config.cluster != self.cluster:
            object.__setattr__(
                self, "transport_config", replace(self.transport_config, cluster=self.cluster)
            )

    @property
    def peer_address(self) -> str:
        return self.advertise or self.listen

    # -- presets -----------------------------------------------------------
    @classmethod
    def lan(cls, node_id: str, **overrides: Any) -> NodeConfig:
        """One data centre: the defaults."""
        return cls(node_id=node_id, **overrides)

    @classmethod
    def local(cls, node_id: str, **overrides: Any) -> NodeConfig:
        """Processes on one machine: detect failures in about a second."""
        base: dict[str, Any] = {
            "failure": FailureDetectorConfig(
                ping_interval=0.25, ping_timeout=0.5, failures_to_down=2
            ),
            "transport_config": TransportConfig(request_timeout=2.0, connect_timeout=1.0),
            "member_sync_interval": 0.5,
            "discovery_start_timeout": 3.0,
        }
        base.update(overrides)
        return cls(node_id=node_id, **base)

    @classmethod
    def wan(cls, node_id: str, **overrides: Any) -> NodeConfig:
        """Regions apart: round trips of 100+ ms; be patient before accusing."""
        base: dict[str, Any] = {
            "failure": FailureDetectorConfig(
                ping_interval=2.0, ping_timeout=2.0, failures_to_down=3
            ),
            "transport_config": TransportConfig(request_timeout=10.0, connect_timeout=5.0),
            "member_sync_interval": 3.0,
            "discovery_start_timeout": 15.0,
        }
        base.update(overrides)
        return cls(node_id=node_id, **base)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], **overrides: Any) -> NodeConfig:
        """Build from a mapping shaped like the TOML config file (see docs)."""
        known = {f.name for f in fields(cls)}
        flat: dict[str, Any] = {}
        security: dict[str, Any] = {}
        for key, value in data.items():
            key = key.replace("-", "_")
            if key == "tls":
                security["tls"] = tls_from_table(value)
            elif key == "auth":
                security["auth"] = auth_from_table(value)
            elif key == "replication":
                flat[key] = ReplicationConfig(**_sub(value, ReplicationConfig, key))
            elif key == "transport_config":
                flat[key] = TransportConfig(**_sub(value, TransportConfig, key))
            elif key == "failure":
                flat[key] = FailureDetectorConfig(**_sub(value, FailureDetectorConfig, key))
            elif key == "handoff":
                flat[key] = HandoffConfig(**_sub(value, HandoffConfig, key))
            elif key == "discovery":
                continue  # the backend and its options: see discovery_table()
            elif key == "seeds":
                flat[key] = tuple(value.split(",") if isinstance(value, str) else value)
            elif key in known:
                flat[key] = value
            else:
                raise ConfigError(f"unknown config key {key!r}")
        flat.update({k: v for k, v in overrides.items() if v is not None})
        if "node_id" not in flat:
            raise ConfigError("node_id is required")
        if security:
            tc = flat.get("transport_config", TransportConfig())
            flat["transport_config"] = replace(tc, **security)
        return cls(**flat)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> NodeConfig:
        """Read a TOML config file; ``overrides`` (e.g. CLI flags) win."""
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        node = data.get("node", data)
        return cls.from_mapping(node, **overrides)


#: Keys of the ``[node.tls]`` table.
TLS_KEYS = ("cert", "key", "ca", "require_client_cert", "check_hostname", "reload_interval")
#: Keys of the ``[node.auth]`` table (``*_file``: read the secret from a file).
AUTH_KEYS = (
    "cluster_secret", "cluster_secret_file", "admin_token", "admin_token_file", "admin_names",
)  # fmt: skip


def _table(value: Any, name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"config section {name!r} must be a table")
    table = {k.replace("-", "_"): v for k, v in value.items()}
    unknown = set(table) - set(keys)
    if unknown:
        raise ConfigError(f"unknown keys in [{name}]: {', '.join(sorted(unknown))}")
    return table


def tls_from_table(value: Any) -> TLSConfig:
    """``[node.tls]``: ``cert``, ``key``, ``ca`` (paths), ``reload_interval``
    (seconds, 0 for never), and ``require_client_cert`` (default true: peers
    authenticate each other by certificate, mutual TLS)."""
    t = _table(value, "tls", TLS_KEYS)
    missing = [k for k in ("cert", "key", "ca") if not t.get(k)]
    if missing:
        raise ConfigError(f"[tls] needs {', '.join(missing)} (file paths)")
    reload_interval = t.get("reload_interval", 30.0)
    return TLSConfig(
        cert_file=str(t["cert"]),
        key_file=str(t["key"]),
        ca_file=str(t["ca"]),
        require_client_cert=bool(t.get("require_client_cert", True)),
        check_hostname=bool(t.get("check_hostname", False)),
        reload_interval=float(reload_interval) if reload_interval else None,
    )


def read_secret(path: str | Path, what: str) -> str:
    """A secret kept in a file (a mounted Kubernetes Secret): its first line."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc}") from exc
    secret = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ConfigError(f"the {what} file {path} is empty")
    return secret


def auth_from_table(value: Any) -> PeerAuthConfig:
    """``[node.auth]``: ``cluster_secret`` and ``admin_token`` (or their
    ``*_file`` forms, preferred: the config file then holds no secret) and
    ``admin_names`` (certificate names that are admins)."""
    t = _table(value, "auth", AUTH_KEYS)
    out: dict[str, Any] = {}
    for name in ("cluster_secret", "admin_token"):
        if t.get(f"{name}_file"):
            out[name] = read_secret(t[f"{name}_file"], name.replace("_", " "))
        elif t.get(name):
            out[name] = str(t[name])
    if "admin_names" in t:
        names = t["admin_names"]
        out["admin_names"] = tuple(names.split(",") if isinstance(names, str) else names)
    return PeerAuthConfig(**out)


_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def security_warnings(config: NodeConfig) -> list[str]:
    """What a node should warn about at start: a peer port reachable beyond
    this machine with neither mutual TLS nor a cluster secret."""
    host, _ = parse_address(config.listen) if config.transport != "memory" else ("", 0)
    if not host or host.startswith(_LOOPBACK):
        return []
    tc = config.transport_config
    mtls = tc.tls is not None and tc.tls.require_client_cert
    secret = tc.auth is not None and bool(tc.auth.cluster_secret)
    if mtls or secret:
        return []
    return [
        f"the peer port {config.listen} is not on loopback and peers are not "
        "authenticated: anyone who reaches it can read and write every key and "
        "change the cluster. Configure mutual TLS (--tls-cert/--tls-key/--tls-ca "
        "or [node.tls]) or a cluster secret (--cluster-secret-file or [node.auth])."
    ]


#: Keys of the ``[node.discovery]`` table (the same names as the CLI flags).
DISCOVERY_KEYS = (
    "backend", "etcd", "etcd_prefix", "zookeeper", "zk_path", "k8s_namespace",
    "k8s_service", "gossip", "gossip_key", "gossip_label",
    "etcd_ca", "etcd_cert", "etcd_key", "etcd_user", "etcd_password_file",
    "zk_ca", "zk_cert", "zk_key", "zk_digest_file",
)  # fmt: skip


def discovery_table(path: str | Path) -> dict[str, str]:
    """The ``[node.discovery]`` table of a config file: ``backend`` (static, etcd,
    zookeeper, kubernetes, swim) and that backend's options, as strings (lists
    are joined with commas, as on the command line)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    table = data.get("node", data).get("discovery", {})
    if not isinstance(table, Mapping):
        raise ConfigError("config section 'discovery' must be a table")
    unknown = set(table) - set(DISCOVERY_KEYS)
    if unknown:
        raise ConfigError(f"unknown keys in [discovery]: {', '.join(sorted(unknown))}")
    return {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in table.items()}


def _sub(value: Any, cls: type, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"config section {name!r} must be a table")
    allowed = {f.name for f in fields(cls)}
    unknown = set(value) - allowed
    if unknown:
        raise ConfigError(f"unknown keys in [{name}]: {', '.join(sorted(unknown))}")
    return dict(value)
