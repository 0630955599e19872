"""The ``peer-ring`` command.

    peer-ring node --id n1 --listen 127.0.0.2:7400 --seeds 127.0.0.3:7400
    peer-ring cluster up -n 3
    peer-ring status --node 127.0.0.2:7400

Only the CLI reads environment variables (``PEER_RING_*``, via click's
``auto_envvar_prefix``) and config files.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from peer_ring import __version__, wire
from peer_ring.config import (
    DISCOVERY_KEYS,
    NodeConfig,
    ReplicationConfig,
    discovery_table,
    quorum_warning,
)
from peer_ring.errors import ConfigError, PeerRingError

if TYPE_CHECKING:
    from peer_ring.runner import DiscoveryOptions

console = Console()
err_console = Console(stderr=True)


@click.group(context_settings={"auto_envvar_prefix": "PEER_RING"})
@click.version_option(__version__, prog_name="peer-ring")
def main() -> None:
    """peer-ring: a framework for Dynamo-style distributed systems."""


@main.command()
@click.option("--id", "node_id", help="Node id (unique in the cluster).")
@click.option("--listen", help="Peer transport address HOST:PORT.")
@click.option("--advertise", help="Address peers dial, if not --listen.")
@click.option("--seeds", help="Comma-separated HOST:PORT contact points (static discovery).")
@click.option("--transport", type=click.Choice(["tcp", "grpc"]), help="Peer transport.")
@click.option("--replicas", type=int, help="N: replicas per key.")
@click.option("--partitions", type=int, help="Q: fixed partition count (same on every node).")
@click.option("--read-quorum", "-r", type=int, help="Default R.")
@click.option("--write-quorum", "-w", type=int, help="Default W.")
@click.option("--zone", help="Zone of this node (replicas spread over zones).")
@click.option("--resp", help="Serve the Redis protocol on HOST:PORT.")
@click.option(
    "--http", help="Serve the web console (/), /healthz, /readyz, /metrics, /status on HOST:PORT."
)
@click.option("--requirepass", help="Password for RESP clients (AUTH).")
@click.option("--resp-tls", help="Also serve RESP over TLS on HOST:PORT [Redis tls-port].")
@click.option("--resp-tls-cert", help="Certificate of --resp-tls (PEM).")
@click.option("--resp-tls-key", help="Key of --resp-tls-cert (PEM).")
@click.option(
    "--resp-tls-ca", help="CA of RESP clients: with it, client certificates are required."
)
@click.option(
    "--users-file",
    type=click.Path(dir_okay=False),
    help="RESP users: 'user NAME on #SHA256 +@read ...' lines [Redis aclfile].",
)
@click.option("--http-tls-cert", help="Serve --http over TLS with this certificate (PEM).")
@click.option("--http-tls-key", help="Key of --http-tls-cert.")
@click.option(
    "--metrics-token-file",
    type=click.Path(dir_okay=False),
    help="/metrics needs 'Authorization: Bearer TOKEN' with the token in this file.",
)
@click.option(
    "--ratelimit-token-file",
    type=click.Path(dir_okay=False),
    help="POST /v1/GetRateLimits needs 'Authorization: Bearer TOKEN' with the token in this "
    "file (default: open, like RESP without a password).",
)
@click.option("--resp-timeout", type=float, help="Close RESP clients idle this long [0: never].")
@click.option("--maxclients", type=int, help="Most RESP connections per port [10000].")
@click.option("--tls-cert", help="Peer TLS certificate (PEM; must name --id). Turns on mTLS.")
@click.option("--tls-key", help="Private key of --tls-cert (PEM).")
@click.option("--tls-ca", help="CA bundle that signs every peer's certificate (PEM).")
@click.option("--tls-reload", type=float, help="Seconds between checks for renewed TLS files [30].")
@click.option(
    "--cluster-secret-file",
    type=click.Path(dir_okay=False),
    help="File holding the shared cluster secret (peers prove it; the non-PKI alternative).",
)
@click.option(
    "--cluster-secret",
    envvar="PEER_RING_CLUSTER_SECRET",
    help="The shared cluster secret (prefer the file or the environment variable).",
)
@click.option(
    "--admin-token-file",
    type=click.Path(dir_okay=False),
    help="File holding the admin token (leave, kv, status details need it or an admin cert).",
)
@click.option(
    "--admin-token", envvar="PEER_RING_ADMIN_TOKEN", help="The admin token (prefer the file)."
)
@click.option(
    "--conflicts",
    type=click.Choice(["lww", "siblings"]),
    default="lww",
    show_default=True,
    help="KV conflict mode: last-writer-wins by hybrid logical clock, or siblings.",
)
@click.option(
    "--maxmemory",
    help="Bytes of data this node may hold (100mb, 1gb; 0: no limit) [Redis maxmemory].",
)
@click.option(
    "--maxmemory-policy",
    type=click.Choice(["noeviction", "allkeys-lru", "volatile-ttl"]),
    default="noeviction",
    show_default=True,
    help="At maxmemory: refuse writes with -OOM, or evict (least recently used / soonest TTL).",
)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML file.")
@click.option(
    "--preset", type=click.Choice(["local", "lan", "wan"]), default="lan", show_default=True
)
@click.option(
    "--discovery",
    type=click.Choice(["static", "etcd", "zookeeper", "kubernetes", "swim"]),
    help="Discovery backend [default: static, or backend in [node.discovery] of --config].",
)
@click.option("--etcd", help="etcd endpoints http://HOST:PORT[,...].")
@click.option("--etcd-prefix", help="etcd key prefix of this cluster.")
@click.option("--etcd-ca", help="CA of etcd's certificate (https:// endpoints).")
@click.option("--etcd-cert", help="Client certificate for etcd (--client-cert-auth).")
@click.option("--etcd-key", help="Key of --etcd-cert.")
@click.option("--etcd-user", help="etcd user (etcd authentication).")
@click.option("--etcd-password-file", help="File holding the etcd user's password.")
@click.option("--zookeeper", help="ZooKeeper servers HOST:PORT[,...].")
@click.option("--zk-path", help="ZooKeeper base path of this cluster.")
@click.option("--zk-ca", help="CA of ZooKeeper's certificate (TLS client port).")
@click.option("--zk-cert", help="Client certificate for ZooKeeper.")
@click.option("--zk-key", help="Key of --zk-cert.")
@click.option("--zk-digest-file", help="File holding USER:PASSWORD for ZooKeeper digest auth.")
@click.option("--k8s-namespace", help="Kubernetes namespace of the headless Service.")
@click.option("--k8s-service", help="Kubernetes headless Service name.")
@click.option("--gossip", help="SWIM gossip bind address HOST:PORT (--discovery swim).")
@click.option("--gossip-key", help="Hex AES keys for gossip, primary first (comma-separated).")
@click.option("--gossip-label", help="Cluster label: gossip with another label is ignored.")
@click.option("--dead-after", type=float, help="Seconds down before removal from the ring.")
@click.option("--testing", is_flag=True, help="Enable fault-injection admin endpoints.")
@click.option(
    "--clock-offset",
    type=float,
    default=0.0,
    help="Shift this node's wall clock by SECONDS (fault injection; needs --testing).",
)
@click.option(
    "--misbehave",
    metavar="MODE[:RATE]",
    help="Break a KV promise on purpose: drop-writes, stale-reads or duplicate-appends "
    "(proves the fault checkers can fail; needs --testing).",
)
@click.option(
    "--grpc",
    "grpc_api",
    help="Serve the rate limiter's gRPC APIs (gubernator V1, Envoy RLS) on HOST:PORT.",
)
@click.option(
    "--ratelimit-limits",
    type=click.Path(dir_okay=False, exists=True),
    help="Named rate limits: an Envoy-style descriptor file (YAML or JSON).",
)
@click.option(
    "--ratelimit-mode",
    type=click.Choice(["exact", "lease", "global"]),
    default="exact",
    show_default=True,
    help="Default mode of the rate limiter (docs/ratelimit.md).",
)
@click.option("--log-level", default="INFO", show_default=True)
def node(**opts: Any) -> None:
    """Run one node in the foreground (SIGTERM/SIGINT stop it gracefully)."""
    import logging

    from peer_ring.runner import run

    logging.basicConfig(
        level=opts["log_level"].upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = _node_config(opts)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        discovery = _discovery_options(opts)
        maxmemory = _maxmemory(opts.get("maxmemory"))
        resp_options = _resp_options(opts)  # reads the token files: a clear error
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    warning = quorum_warning(config.replication, sloppy=config.handoff.sloppy)
    if warning:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    sys.exit(
        run(
            config,
            discovery,
            requirepass=opts["requirepass"],
            resp_options=resp_options,
            conflicts=opts["conflicts"],
            maxmemory=maxmemory,
            maxmemory_policy=opts["maxmemory_policy"],
            clock_offset=opts["clock_offset"],
            misbehave=opts["misbehave"],
            ratelimit_limits=opts["ratelimit_limits"],
            ratelimit_mode=opts["ratelimit_mode"],
            grpc_api=opts["grpc_api"],
        )
    )


def _resp_options(opts: dict[str, Any]) -> dict[str, Any]:
    """RespConfig fields and the --resp-tls address and files from the flags."""
    out: dict[str, Any] = {}
    if opts.get("users_file"):
        out["users_file"] = opts["users_file"]
    if opts.get("resp_timeout") is not None:
        out["timeout"] = opts["resp_timeout"]
    if opts.get("maxclients") is not None:
        out["max_clients"] = opts["maxclients"]
    if opts.get("http_tls_cert") or opts.get("http_tls_key"):
        out["http_tls"] = {"cert": opts.get("http_tls_cert"), "key": opts.get("http_tls_key")}
    if opts.get("metrics_token_file"):
        from peer_ring.config import read_secret

        out["metrics_token"] = read_secret(opts["metrics_token_file"], "metrics token")
    if opts.get("ratelimit_token_file"):
        from peer_ring.config import read_secret

        out["ratelimit_token"] = read_secret(opts["ratelimit_token_file"], "rate limiter token")
    if opts.get("resp_tls"):
        out["tls_address"] = opts["resp_tls"]
        out["tls_files"] = {
            "cert": opts.get("resp_tls_cert"),
            "key": opts.get("resp_tls_key"),
            "ca": opts.get("resp_tls_ca"),
        }
    return out


def _maxmemory(text: str | None) -> int:
    if not text:
        return 0
    from peer_ring.apps.kv._memory import parse_size

    return parse_size(text)


def _discovery_options(opts: dict[str, Any]) -> DiscoveryOptions:
    """Backend and options: the config file's ``[node.discovery]``, flags win."""
    from peer_ring.runner import DiscoveryOptions

    table = discovery_table(opts["config_file"]) if opts.get("config_file") else {}
    backend = opts.get("discovery") or table.pop("backend", None) or "static"
    table.pop("backend", None)
    options: dict[str, Any] = {**table}
    options.update({k: opts[k] for k in DISCOVERY_KEYS if k != "backend" and opts.get(k)})
    options["preset"] = opts.get("preset") or "lan"
    return DiscoveryOptions(backend=backend, options=options)


def _node_config(opts: dict[str, Any]) -> NodeConfig:
    flags: dict[str, Any] = {}
    for name in ("listen", "advertise", "zone", "resp", "http", "dead_after", "transport"):
        if opts.get(name) is not None:
            flags[name] = opts[name]
    if opts.get("node_id"):
        flags["node_id"] = opts["node_id"]
    if opts.get("seeds"):
        flags["seeds"] = tuple(s.strip() for s in opts["seeds"].split(",") if s.strip())
    if opts.get("testing"):
        flags["testing"] = True
    rep = {
        k: opts[o]
        for k, o in (
            ("replicas", "replicas"),
            ("partitions", "partitions"),
            ("read_quorum", "read_quorum"),
            ("write_quorum", "write_quorum"),
        )
        if opts.get(o) is not None
    }
    if opts.get("config_file"):
        base = NodeConfig.from_file(opts["config_file"], **flags)
        if rep:
            base = _replace(base, replication=_replication(_asdict(base.replication), rep))
        return _with_security(base, opts)
    if "node_id" not in flags:
        raise ConfigError("--id is required (or node_id in --config)")
    if rep:
        flags["replication"] = _replication({}, rep)
    preset = opts.get("preset") or "lan"
    node_id = flags.pop("node_id")
    factory = {"local": NodeConfig.local, "lan": NodeConfig.lan, "wan": NodeConfig.wan}[preset]
    return _with_security(factory(node_id, **flags), opts)


def _with_security(config: NodeConfig, opts: dict[str, Any]) -> NodeConfig:
    """Apply --tls-* (mutual TLS) and the secret flags over the config file's tables."""
    from peer_ring.config import read_secret
    from peer_ring.transport.base import PeerAuthConfig, TLSConfig

    tc = config.transport_config
    given = [f for f in ("tls_cert", "tls_key", "tls_ca") if opts.get(f)]
    if given:
        if len(given) != 3:
            raise ConfigError("--tls-cert, --tls-key and --tls-ca go together")
        reload = opts.get("tls_reload")
        tc = _replace(
            tc,
            tls=TLSConfig.mutual(
                opts["tls_cert"], opts["tls_key"], opts["tls_ca"],
                reload_interval=30.0 if reload is None else (reload or None),
            ),
        )  # fmt: skip
    elif opts.get("tls_reload") is not None and tc.tls is not None:
        tc = _replace(tc, tls=_replace(tc.tls, reload_interval=opts["tls_reload"] or None))
    secrets: dict[str, Any] = {}
    for name in ("cluster_secret", "admin_token"):
        if opts.get(f"{name}_file"):
            secrets[name] = read_secret(opts[f"{name}_file"], name.replace("_", " "))
        elif opts.get(name):
            secrets[name] = opts[name]
    if secrets:
        tc = _replace(tc, auth=_replace(tc.auth or PeerAuthConfig(), **secrets))
    new: NodeConfig = _replace(config, transport_config=tc)
    return new


def _replication(base: dict[str, Any], flags: dict[str, Any]) -> ReplicationConfig:
    """N/R/W from the file (or defaults) and flags. A quorum not given as a flag
    follows N (at most 2); one given explicitly is validated, never adjusted."""
    values = {**base, **flags}
    n = values.get("replicas", 3)
    for quorum in ("read_quorum", "write_quorum"):
        if quorum not in flags:
            values[quorum] = min(values.get(quorum, 2), n)
    return ReplicationConfig(**values)


def _asdict(obj: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(obj)


def _replace(obj: Any, **kw: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **kw)


# -- status ------------------------------------------------------------------


async def _query(
    address: str, message: Any, transport: str, timeout: float, creds: dict[str, Any] | None = None
) -> Any:
    from peer_ring.transport import request_once

    return await request_once(
        address, message, transport=transport, timeout=timeout, **_client_credentials(creds or {})
    )


def _client_credentials(creds: dict[str, Any]) -> dict[str, Any]:
    """``request_once`` keywords from the client flags (--tls-*, --admin-token*)."""
    from peer_ring.config import read_secret
    from peer_ring.transport.base import PeerAuthConfig, TLSConfig

    out: dict[str, Any] = {}
    given = [f for f in ("tls_cert", "tls_key", "tls_ca") if creds.get(f)]
    if given and len(given) != 3:
        raise click.UsageError("--tls-cert, --tls-key and --tls-ca go together")
    if given:
        out["tls"] = TLSConfig(creds["tls_cert"], creds["tls_key"], creds["tls_ca"])
    token = creds.get("admin_token")
    if creds.get("admin_token_file"):
        try:
            token = read_secret(creds["admin_token_file"], "admin token")
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
    if token:
        try:
            out["auth"] = PeerAuthConfig(admin_token=token)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
    if creds.get("cluster"):
        out["cluster"] = creds["cluster"]
    return out


_CLIENT_CREDENTIALS = (
    "tls_cert",
    "tls_key",
    "tls_ca",
    "admin_token",
    "admin_token_file",
    "cluster",
)


def _credential_opts(f: Any) -> Any:
    """Flags (and environment variables) with which status, leave and kv
    authenticate: an admin client certificate, or the admin token."""
    for opt in reversed(
        [
            click.option("--tls-cert", envvar="PEER_RING_TLS_CERT",
                         help="Client certificate (PEM): an admin certificate, or any "
                         "certificate of the cluster CA together with --admin-token."),
            click.option("--tls-key", envvar="PEER_RING_TLS_KEY", help="Key of --tls-cert."),
            click.option("--tls-ca", envvar="PEER_RING_TLS_CA", help="CA of the nodes."),
            click.option("--admin-token", envvar="PEER_RING_ADMIN_TOKEN",
                         help="Admin token (better: the environment variable or the file)."),
            click.option("--admin-token-file", envvar="PEER_RING_ADMIN_TOKEN_FILE",
                         type=click.Path(dir_okay=False), help="File holding the admin token."),
            click.option("--cluster", envvar="PEER_RING_CLUSTER", default="peer-ring",
                         show_default=True, help="Cluster name of the nodes."),
        ]
    ):  # fmt: skip
        f = opt(f)
    return f


def _creds(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: kw.pop(k, None) for k in _CLIENT_CREDENTIALS}


@main.command()
@click.option("--node", "address", required=True, help="The node's --listen address.")
@click.option("--transport", type=click.Choice(["tcp", "grpc"]), default="tcp")
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
@click.option("--timeout", type=float, default=3.0, show_default=True)
@_credential_opts
def status(address: str, transport: str, as_json: bool, timeout: float, **kw: Any) -> None:
    """Show the members a node sees, their state and ownership, and the ring epoch."""
    creds = _creds(kw)
    try:
        st = asyncio.run(_query(address, wire.status_frame(), transport, timeout, creds))
    except PeerRingError as exc:
        err_console.print(f"[red]error:[/red] cannot query {address}: {exc}")
        sys.exit(1)
    try:  # the rate limiter's figures (None from a node without one); an admin op
        st["ratelimit"] = asyncio.run(
            _query(address, wire.ratelimit_frame("stats"), transport, timeout, creds)
        )
    except PeerRingError:
        st["ratelimit"] = None
    if as_json:
        click.echo(json.dumps(st, indent=2, sort_keys=True))
        return
    table = Table(
        title=f"node {st['node']} at {st['address']} - ring epoch {st['epoch']} "
        f"(Q={st['partitions']}, N={st['replicas']})"
    )
    gossip = any("gossip" in m for m in st["members"])
    columns = ["id", "address", "zone", "state", "incarnation"]
    if gossip:
        columns += ["gossip", "gossip inc."]
    columns += ["partitions", "primaries", "hints"]
    for col in columns:
        numeric = col in ("partitions", "primaries", "hints", "gossip inc.")
        table.add_column(col, justify="right" if numeric else "left")
    hints = st.get("hints", {})
    for m in st["members"]:
        state = m["state"]
        colour = {"up": "green", "down": "red", "suspect": "yellow"}.get(state, "white")
        row = [m["id"], m["address"], m.get("zone") or "-", f"[{colour}]{state}[/{colour}]",
               str(m["incarnation"])]  # fmt: skip
        if gossip:
            row += [m.get("gossip", "-"), str(m.get("gossip_incarnation", "-"))]
        row += [str(m["partitions"]), str(m["primaries"]), str(hints.get(m["id"], 0))]
        table.add_row(*row)
    console.print(table)
    rl = st.get("ratelimit")
    if rl:
        console.print(
            "rate limiter: {:,.0f} decisions ({:,.0f} over limit), {:,.0f} keys,"
            " {:,.0f} unreplicated; counters moved {:,.0f}, recovered {:,.0f},"
            " rebuilt {:,.0f}; leases granted {:,.0f} ({:,.0f} hits), returned {:,.0f} hits".format(
                rl.get("decisions", 0), rl.get("over_limit", 0), rl.get("keys", 0),
                rl.get("unreplicated", 0), rl.get("counters_moved", 0),
                rl.get("counters_recovered", 0), rl.get("counters_rebuilt", 0),
                rl.get("lease_grants", 0), rl.get("lease_granted_hits", 0),
                rl.get("lease_returned_hits", 0),
            )
        )  # fmt: skip
    transfers = st.get("transfers") or []
    if transfers:
        tt = Table(title="partition transfers in progress")
        for col in ("service", "partition", "from", "to", "records", "bytes", "records/s"):
            tt.add_column(col, justify="left" if col in ("service", "from", "to") else "right")
        for t in transfers:
            tt.add_row(
                str(t.get("namespace")), str(t.get("partition")), str(t.get("from")),
                str(t.get("to")), str(t.get("records")), str(t.get("bytes")),
                f"{t.get('records_per_second', 0):,.0f}",
            )  # fmt: skip
        console.print(tt)
    apps = st.get("apps") or {}
    streams = (apps.get("streams") or {}).get("streams") or []
    if streams:
        stt = Table(title="streams led by this node")
        for col in ("stream", "length", "group", "pending", "lag"):
            stt.add_column(col, justify="left" if col in ("stream", "group") else "right")
        for key, length, groups in streams:
            for name, pending, lag in groups or [["-", "-", "-"]]:
                stt.add_row(escape(key), str(length), escape(str(name)), str(pending), str(lag))
        console.print(stt)
    subs = (apps.get("pubsub") or {}).get("subscriptions") or []
    if subs:
        pt = Table(title="pub/sub subscriptions on this node")
        for col in ("kind", "name", "subscribers"):
            pt.add_column(col, justify="right" if col == "subscribers" else "left")
        for kind, name, n in subs:
            pt.add_row(kind, escape(name), str(n))  # user names are not rich markup
        console.print(pt)


# -- leave -------------------------------------------------------------------


@main.command()
@click.option("--node", "address", required=True, help="The leaving node's --listen address.")
@click.option("--transport", type=click.Choice(["tcp", "grpc"]), default="tcp")
@click.option("--timeout", type=float, default=600.0, show_default=True)
@_credential_opts
def leave(address: str, transport: str, timeout: float, **kw: Any) -> None:
    """Decommission a node: it hands its partitions over, leaves the ring, exits.

    (SIGTERM is not a leave: a stopped node keeps its place until --dead-after.)
    """
    with console.status(f"{address} is handing its partitions over..."):
        try:
            result = asyncio.run(
                _query(address, wire.leave_frame(), transport, timeout, _creds(kw))
            )
        except PeerRingError as exc:
            err_console.print(f"[red]error:[/red] leave of {address} failed: {exc}")
            sys.exit(1)
    console.print(
        f"node {result['node']} left the cluster after {result['transfers']} partition "
        f"transfers ({result['records']} records)"
    )


# -- kv ----------------------------------------------------------------------


@main.group()
def kv() -> None:
    """Read and write the key-value store through any node."""


def _kv_call(
    address: str, message: list[Any], transport: str, timeout: float, kw: dict[str, Any]
) -> Any:
    try:
        return asyncio.run(_query(address, message, transport, timeout, _creds(kw)))
    except PeerRingError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)


_node_opt = click.option("--node", "address", required=True, help="Any node's --listen address.")
_transport_opt = click.option("--transport", type=click.Choice(["tcp", "grpc"]), default="tcp")
_timeout_opt = click.option("--timeout", type=float, default=5.0, show_default=True)


@kv.command("get")
@click.argument("key")
@_node_opt
@_transport_opt
@_timeout_opt
@_credential_opts
def kv_get(key: str, address: str, transport: str, timeout: float, **kw: Any) -> None:
    """Print KEY's value (exit 1 with a message when it is missing)."""
    result = _kv_call(address, wire.kv_admin_frame("get", key.encode()), transport, timeout, kw)
    if result is None:
        err_console.print(f"(nil): {key!r} not found")
        sys.exit(1)
    value, expires_at = result
    click.echo(value.decode(errors="backslashreplace"))
    if expires_at is not None:
        err_console.print(f"expires in {max(0.0, expires_at - time.time()):.1f}s")


@kv.command("put")
@click.argument("key")
@click.argument("value")
@click.option("--ttl", type=float, help="Expire after this many seconds.")
@_node_opt
@_transport_opt
@_timeout_opt
@_credential_opts
def kv_put(
    key: str,
    value: str,
    ttl: float | None,
    address: str,
    transport: str,
    timeout: float,
    **kw: Any,
) -> None:
    """Store VALUE under KEY (acknowledged by a write quorum)."""
    if ttl is not None and ttl <= 0:
        raise click.UsageError("--ttl must be > 0 seconds")
    _kv_call(
        address,
        wire.kv_admin_frame("put", key.encode(), value.encode(), ttl),
        transport,
        timeout,
        kw,
    )
    click.echo("OK")


@kv.command("del")
@click.argument("key")
@_node_opt
@_transport_opt
@_timeout_opt
@_credential_opts
def kv_del(key: str, address: str, transport: str, timeout: float, **kw: Any) -> None:
    """Delete KEY; prints 1 if it existed, else 0."""
    existed = _kv_call(address, wire.kv_admin_frame("del", key.encode()), transport, timeout, kw)
    click.echo("1" if existed else "0")


# -- rate limiter -------------------------------------------------------------


@main.group()
def ratelimit() -> None:
    """Ask the cluster's rate limiter through any node."""


@ratelimit.command("hit")
@click.argument("key")
@click.option("--limit", type=int, required=True, help="Hits allowed per period.")
@click.option("--period", type=float, required=True, help="Period in seconds.")
@click.option("--hits", type=int, default=1, show_default=True, help="0 peeks, < 0 refunds.")
@click.option(
    "--algorithm",
    default="token_bucket",
    show_default=True,
    type=click.Choice(["token_bucket", "leaky_bucket", "gcra", "fixed_window", "sliding_window"]),
)
@click.option(
    "--node",
    "address",
    default="127.0.0.1:7400",
    show_default=True,
    help="Any node's --listen address.",
)
@_transport_opt
@_timeout_opt
@_credential_opts
def ratelimit_hit(
    key: str,
    limit: int,
    period: float,
    hits: int,
    algorithm: str,
    address: str,
    transport: str,
    timeout: float,
    **kw: Any,
) -> None:
    """Count HITS against KEY; prints the decision as JSON.

    Exit status: 0 allowed, 1 refused, 2 error (bad input, cluster unreachable).
    """
    message = wire.ratelimit_frame("hit", key, limit, period, hits, algorithm)
    try:
        d = asyncio.run(_query(address, message, transport, timeout, _creds(kw)))
    except PeerRingError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    click.echo(json.dumps(d))
    if not d["allowed"]:
        sys.exit(1)


# -- cluster up ----------------------------------------------------------------


@main.group()
def cluster() -> None:
    """Local clusters on loopback aliases, for development."""


@cluster.command("up")
@click.option("-n", "count", type=int, default=3, show_default=True, help="Number of nodes.")
@click.option("--first-ip", default="127.0.0.2", show_default=True)
@click.option("--port", type=int, default=7400, show_default=True, help="Peer port on each IP.")
@click.option("--resp-port", type=int, default=6379, show_default=True)
@click.option("--http-port", type=int, default=8080, show_default=True)
@click.option("--transport", type=click.Choice(["tcp", "grpc"]), default="tcp")
@click.option("--replicas", type=int, default=3, show_default=True)
@click.option("--partitions", type=int, default=1024, show_default=True)
@click.option("--log-dir", type=click.Path(file_okay=False), default=None)
def cluster_up(
    count: int,
    first_ip: str,
    port: int,
    resp_port: int,
    http_port: int,
    transport: str,
    replicas: int,
    partitions: int,
    log_dir: str | None,
) -> None:
    """Run COUNT nodes on 127.0.0.2, .3, ... in the foreground; Ctrl-C stops them."""
    from peer_ring.testing.cluster import LocalCluster, NodeStartError

    base = [int(x) for x in first_ip.split(".")]
    if base[0] != 127 or base[3] + count > 255:
        raise click.UsageError("--first-ip must be a loopback address with room for -n nodes")
    logs = Path(log_dir) if log_dir else Path.cwd() / ".peer-ring-cluster"
    if replicas < 1:
        raise click.UsageError("--replicas must be >= 1")
    warning = quorum_warning(_replication({}, {"replicas": min(replicas, count)}))
    if warning:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    cluster = LocalCluster(
        count,
        subnet=f"127.{base[1]}.{base[2]}",
        first_ip=base[3],
        port=port,
        resp_port=resp_port,
        http_port=http_port,
        replicas=replicas,
        partitions=partitions,
        seeds=min(3, count),
        transport=transport,
        artefacts=logs,
        start_timeout=30.0,
    )
    try:
        with console.status("starting nodes..."):
            cluster.start()
        from peer_ring.testing.control import write_state

        write_state(cluster)
        table = Table(title=f"peer-ring cluster: {count} nodes ({transport}), logs in {logs}")
        for col in ("node", "pid", "peer", "resp", "http"):
            table.add_column(col)
        for n in cluster.nodes.values():
            table.add_row(n.name, str(n.pid), n.address, n.resp or "-", n.http or "-")
        console.print(table)
        first = cluster["n1"]
        console.print(
            f"try: [bold]redis-cli -h {first.ip} -p {resp_port} set hello world[/bold]   "
            f"status: [bold]peer-ring status --node {first.address}[/bold]"
        )
        scale = "" if log_dir is None else f" --log-dir {logs}"
        console.print(
            f"scale: [bold]peer-ring cluster add{scale}[/bold], "
            f"[bold]peer-ring cluster remove NODE{scale}[/bold] (in another terminal)"
        )
        console.print("Ctrl-C stops the cluster.")
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        watch_nodes(cluster)
    except NodeStartError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        pass
    finally:
        cluster.close()
        console.print("cluster stopped")


def watch_nodes(cluster: Any, interval: float = 0.5) -> None:
    """Until every node has exited: report each node that exits, keep the others.

    A node exits after ``peer-ring leave`` or ``peer-ring cluster remove``
    (code 0) or when someone kills it to watch failover; the rest of the
    cluster keeps serving. Nodes that ``peer-ring cluster add`` asks for are
    started here (requests in the log directory, see
    :mod:`peer_ring.testing.control`), so they are this process's children
    like the first ones. Returns when none is left (Ctrl-C/SIGTERM
    interrupt it earlier).
    """
    from peer_ring.testing.control import serve_requests, write_state

    reported: set[str] = set()
    while True:
        changed = False
        for name in serve_requests(cluster):
            n = cluster[name]
            console.print(f"node {name} (pid {n.pid}) starting at {n.address}; it joins the ring")
            changed = True
        running = 0
        for n in list(cluster.nodes.values()):
            code = n.proc.poll() if n.proc is not None else None
            if code is None:
                running += 1
                if not n.ready and cluster.poll_ready(n):
                    console.print(
                        f"node {n.name} (pid {n.pid}) ready: peer {n.address}, "
                        f"resp {n.resp or '-'}, http {n.http or '-'}"
                    )
                    changed = True
                continue
            if n.name in reported:
                continue
            reported.add(n.name)
            changed = True
            how = "left the cluster" if code == 0 else f"exited with code {code}"
            if code < 0:
                how = f"was stopped by signal {-code}"
            console.print(
                f"node {n.name} (pid {n.pid}) {how}; "
                f"{sum(1 for m in cluster.nodes.values() if m.running)} node(s) keep running"
            )
        if changed:
            write_state(cluster)
        if not running:
            console.print("every node has exited")
            return
        time.sleep(interval)


# -- cluster add / remove -------------------------------------------------------

_log_dir_opt = click.option(
    "--log-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="The --log-dir of the running `peer-ring cluster up` [./.peer-ring-cluster].",
)


def _cluster_dir(log_dir: str | None) -> Path:
    return Path(log_dir) if log_dir else Path.cwd() / ".peer-ring-cluster"


@cluster.command("add")
@_log_dir_opt
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds to wait for the join and its transfers.")  # fmt: skip
def cluster_add(log_dir: str | None, timeout: float) -> None:
    """Add a node to the running local cluster and follow its join to the end.

    The new node takes the next loopback address; `peer-ring cluster up`
    starts it (it stays that command's child: Ctrl-C there stops it too).
    Shown: the partitions the new node owns arriving (by transfer from their
    old owners, or a sync with their co-owners), then the old owners
    finishing their handoffs.
    """
    from peer_ring.testing.control import ControlError, submit

    directory = _cluster_dir(log_dir)
    try:
        with console.status("asking the cluster for a new node..."):
            added = submit(directory, "add")
    except ControlError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(
        f"starting [bold]{added['name']}[/bold] at {added['address']} (pid {added['pid']})"
    )
    try:
        summary = asyncio.run(_follow_join(directory, added, timeout))
    except ControlError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(
        f"[green]{added['name']} joined[/green]: {summary['partitions']} partitions "
        f"({summary['by_transfer']} by transfer), {summary['received']:,} records received "
        f"in {summary['seconds']:.1f} s; {summary['members']} nodes. "
        f"resp {added['resp'] or '-'}, http {added['http'] or '-'}"
    )


@cluster.command("remove")
@click.argument("node")
@_log_dir_opt
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds to wait for the handover.")  # fmt: skip
def cluster_remove(node: str, log_dir: str | None, timeout: float) -> None:
    """Decommission NODE (a name like n4, or its peer address) of the local cluster.

    The node hands every partition it holds to the owners of the ring
    without it, leaves the ring, and exits (`peer-ring leave`), with the
    handover's progress shown. The cluster keeps at least its N nodes: a
    remove that would leave fewer is refused.
    """
    from peer_ring.testing.control import ControlError, find_node, read_state, running_nodes

    directory = _cluster_dir(log_dir)
    try:
        state = read_state(directory)
        name, info = find_node(state, node)
    except ControlError as exc:
        raise click.ClickException(str(exc)) from exc
    left = len(running_nodes(state)) - 1
    if left < state["replicas"]:
        raise click.ClickException(
            f"removing {name} would leave {left} node(s) for N={state['replicas']} replicas "
            "per key; add a node first"
        )
    try:
        summary = asyncio.run(_follow_leave(directory, name, info, timeout))
    except (ControlError, PeerRingError) as exc:
        raise click.ClickException(f"remove of {name} failed: {exc}") from exc
    console.print(
        f"[green]{name} left[/green] after handing over {summary['transfers']} partitions "
        f"({summary['records']:,} records) in {summary['seconds']:.1f} s; "
        f"{summary['members']} nodes remain"
    )


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    )


async def _status_or_none(address: str) -> dict[str, Any] | None:
    try:
        st: dict[str, Any] = await _query(address, wire.status_frame(), "tcp", 2.0)
    except PeerRingError:
        return None
    return st


async def _cluster_idle(addresses: list[str]) -> tuple[bool, int]:
    """(no transfer queued or running on any node, records sent by all of them)."""
    sts = await asyncio.gather(*(_status_or_none(a) for a in addresses))
    idle, sent = True, 0
    for st in sts:
        if st is None:
            idle = False
            continue
        c = st.get("counters", {})
        sent += int(c.get("records_sent", 0))
        idle = idle and not c.get("transfers_in_progress") and not c.get("transfers_queued")
    return idle, sent


async def _wait_handoffs(directory: Path, progress: Any, deadline: float) -> None:
    """The old owners' handoffs to their end (two idle samples in a row)."""
    from peer_ring.testing.control import read_state, running_nodes

    task = progress.add_task("old owners finishing handoffs", total=None, detail="")
    quiet = 0
    while quiet < 2:
        if time.monotonic() > deadline:
            raise PeerRingError("transfers still running at the deadline (see the node logs)")
        addresses = [n["address"] for n in running_nodes(read_state(directory)).values()]
        idle, sent = await _cluster_idle(addresses)
        quiet = quiet + 1 if idle else 0
        progress.update(task, detail=f"{sent:,} records sent by all nodes")
        await asyncio.sleep(0.3)
    progress.update(task, total=1, completed=1)


async def _follow_join(directory: Path, added: dict[str, Any], timeout: float) -> dict[str, Any]:
    from peer_ring.testing.control import ControlError, pid_alive, read_state, running_nodes

    t0 = time.monotonic()
    deadline = t0 + timeout
    name, address = added["name"], added["address"]
    owned = syncing = received = 0
    counters: dict[str, Any] = {}
    members = 0
    with _progress() as progress:
        task = progress.add_task(f"{name}: partitions arriving", total=None, detail="")
        while True:
            if time.monotonic() > deadline:
                raise ControlError(f"{name} not ready within {timeout:.0f}s; log: {added['log']}")
            state = read_state(directory)
            node = state["nodes"].get(name, {})
            if node.get("exit_code") is not None or not pid_alive(int(added["pid"])):
                raise ControlError(
                    f"{name} exited (code {node.get('exit_code')}); log: {added['log']}"
                )
            st = await _status_or_none(address)
            if st is not None:
                me = next((m for m in st["members"] if m["id"] == name), None)
                owned = me["partitions"] if me else 0
                counters = st.get("counters", {})
                syncing = int(counters.get("bootstrap_partitions_syncing", 0))
                received = int(counters.get("records_received", 0))
                members = len(st["members"])
                elapsed = max(time.monotonic() - t0, 1e-6)
                # syncing is 0 before the node's bootstrap counted its partitions too
                done = owned - syncing if syncing else (owned if node.get("ready") else 0)
                progress.update(
                    task, total=owned or None, completed=max(0, done),
                    detail=f"{received:,} records received ({received / elapsed:,.0f}/s), "
                    f"{members} members",
                )  # fmt: skip
            if node.get("ready"):
                progress.update(task, total=owned or 1, completed=owned or 1)
                break
            await asyncio.sleep(0.3)
        await _wait_handoffs(directory, progress, deadline)
    st = await _status_or_none(address)
    if st is not None:
        counters = st.get("counters", {})
        received = int(counters.get("records_received", 0))
    return {
        "partitions": owned,
        "by_transfer": int(counters.get("bootstrap_partitions_by_transfer", 0)),
        "received": received,
        "seconds": time.monotonic() - t0,
        "members": len(running_nodes(read_state(directory))),
    }


async def _follow_leave(
    directory: Path, name: str, info: dict[str, Any], timeout: float
) -> dict[str, Any]:
    from peer_ring.testing.control import pid_alive, read_state, running_nodes

    t0 = time.monotonic()
    address = info["address"]
    st = await _query(address, wire.status_frame(), "tcp", 5.0)
    me = next((m for m in st["members"] if m["id"] == name), None)
    holds = me["partitions"] if me else 0
    base = st.get("counters", {})
    leave = asyncio.ensure_future(_query(address, wire.leave_frame(), "tcp", timeout))
    with _progress() as progress:
        task = progress.add_task(f"{name}: handing partitions over", total=holds, detail="")
        while not leave.done():
            done = asyncio.ensure_future(asyncio.sleep(0.3))
            await asyncio.wait({leave, done}, return_when=asyncio.FIRST_COMPLETED)
            now = await _status_or_none(address) if not leave.done() else None
            if now is None:
                continue
            c = now.get("counters", {})
            moved = sum(int(c.get(k, 0)) - int(base.get(k, 0))
                        for k in ("transfers_completed", "transfers_failed"))  # fmt: skip
            records = int(c.get("records_sent", 0)) - int(base.get("records_sent", 0))
            elapsed = max(time.monotonic() - t0, 1e-6)
            progress.update(
                task, completed=min(moved, holds),
                detail=f"{records:,} records sent ({records / elapsed:,.0f}/s)",
            )  # fmt: skip
        result: dict[str, Any] = leave.result()
        progress.update(task, completed=holds, detail=f"{result['records']:,} records sent")
        exit_task = progress.add_task(f"{name}: leaving the ring and exiting", total=None,
                                      detail="")  # fmt: skip
        deadline = time.monotonic() + 60
        running = running_nodes(read_state(directory))
        others = [n["address"] for k, n in running.items() if k != name]
        while time.monotonic() < deadline:
            gone = not pid_alive(int(info["pid"]))
            views = await asyncio.gather(*(_status_or_none(a) for a in others[:1]))
            dropped = all(
                v is not None and name not in {m["id"] for m in v["members"]} for v in views
            )
            if gone and dropped:
                break
            await asyncio.sleep(0.2)
        else:
            raise PeerRingError(f"{name} handed its data over but did not leave within 60 s")
        progress.update(exit_task, total=1, completed=1)
    return {
        "transfers": result["transfers"],
        "records": result["records"],
        "seconds": time.monotonic() - t0,
        "members": len(others),
    }


if __name__ == "__main__":  # pragma: no cover
    main()
