"""Security settings from the config file and the CLI, the start-up warning,
and the HTTP surface's tokens (aiohttp on 127.0.0.1: run in a namespace)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from peer_ring.cli import _node_config
from peer_ring.config import NodeConfig, security_warnings
from peer_ring.errors import ConfigError
from peer_ring.node import Node
from peer_ring.server.http import HttpServer
from peer_ring.transport import MemoryNetwork, PeerAuthConfig, TLSConfig, TransportConfig

SECRET = "a-cluster-secret-of-some-length"


def _toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(body)
    return path


def test_tls_and_auth_tables_turn_on_mtls_and_secrets(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    path = _toml(
        tmp_path,
        f"""
[node]
node_id = "n1"
listen = "10.0.0.1:7400"
[node.tls]
cert = "/etc/peer-ring/tls/tls.crt"
key = "/etc/peer-ring/tls/tls.key"
ca = "/etc/peer-ring/tls/ca.crt"
reload_interval = 5
[node.auth]
cluster_secret_file = "{tmp_path / "secret"}"
admin_names = ["ops-admin"]
""",
    )
    cfg = NodeConfig.from_file(path)
    tls = cfg.transport_config.tls
    assert tls is not None
    assert tls.require_client_cert
    assert tls.reload_interval == 5.0
    assert tls.ca_file == "/etc/peer-ring/tls/ca.crt"
    auth = cfg.transport_config.auth
    assert auth is not None
    assert auth.cluster_secret == SECRET
    assert auth.admin_names == ("ops-admin",)
    assert security_warnings(cfg) == []


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('[node.tls]\ncert = "c"\nkey = "k"', "needs ca"),
        ('[node.tls]\ncert = "c"\nkey = "k"\nca = "a"\nverify = true', "unknown keys"),
        ('[node.auth]\ncluster_secret = "short"', "at least 16"),
        (f'[node.auth]\ncluster_secret_file = "/nonexistent/{SECRET}"', "cannot read"),
    ],
)
def test_bad_security_tables_are_clear_errors(tmp_path: Path, body: str, match: str) -> None:
    path = _toml(tmp_path, f'[node]\nnode_id = "n1"\n{body}\n')
    with pytest.raises(ConfigError, match=match):
        NodeConfig.from_file(path)


def test_a_non_loopback_peer_port_without_credentials_warns() -> None:
    assert security_warnings(NodeConfig(node_id="n", listen="127.0.0.2:7400")) == []
    [warning] = security_warnings(NodeConfig(node_id="n", listen="0.0.0.0:7400"))
    assert "not authenticated" in warning
    assert "--tls-cert" in warning
    server_tls_only = TransportConfig(tls=TLSConfig("c", "k", "a", reload_interval=None))
    assert security_warnings(
        NodeConfig(node_id="n", listen="10.1.2.3:7400", transport_config=server_tls_only)
    )
    secret = TransportConfig(auth=PeerAuthConfig(cluster_secret=SECRET))
    assert not security_warnings(
        NodeConfig(node_id="n", listen="10.1.2.3:7400", transport_config=secret)
    )


def _opts(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"node_id": "n1", "listen": "127.0.0.2:7400", "preset": "lan"}
    base.update(kw)
    return base


def test_cli_flags_turn_on_mtls_and_read_secret_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("an-admin-token-long-enough\n")
    cfg = _node_config(
        _opts(tls_cert="c.pem", tls_key="c.key", tls_ca="ca.pem", tls_reload=0.5,
              admin_token_file=str(tmp_path / "token"), cluster_secret=SECRET)
    )  # fmt: skip
    tls, auth = cfg.transport_config.tls, cfg.transport_config.auth
    assert tls == TLSConfig.mutual("c.pem", "c.key", "ca.pem", reload_interval=0.5)
    assert auth is not None
    assert auth.admin_token == "an-admin-token-long-enough"
    assert auth.cluster_secret == SECRET
    with pytest.raises(ConfigError, match="go together"):
        _node_config(_opts(tls_cert="c.pem", tls_key="c.key"))


async def test_http_admin_endpoints_need_the_token_and_probes_stay_open() -> None:
    node = Node(NodeConfig(node_id="n1", transport="memory"), network=MemoryNetwork())
    http = HttpServer(node, "127.0.0.1:0", admin_token="the-admin-token-0123")
    await http.start()
    base = f"http://127.0.0.1:{http.port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with session.get(f"{base}/metrics") as r:
                assert r.status == 200
            for path in ("/status", "/admin/faults"):
                async with session.get(base + path) as r:
                    assert r.status == 401
                    assert "Bearer" in (await r.json())["error"]
                bad = {"Authorization": "Bearer nope"}
                async with session.get(base + path, headers=bad) as r:
                    assert r.status == 401
            good = {"Authorization": "Bearer the-admin-token-0123"}
            async with session.get(f"{base}/admin/faults", headers=good) as r:
                assert r.status == 403  # authorised; fault injection itself is off
    finally:
        await http.close()


async def test_http_cuts_off_a_slowloris_and_refuses_clients_past_the_limit() -> None:
    node = Node(NodeConfig(node_id="n1", transport="memory"), network=MemoryNetwork())
    http = HttpServer(node, "127.0.0.1:0", max_clients=2, request_timeout=0.3)
    await http.start()
    writers = []
    try:
        slow_r, slow_w = await asyncio.open_connection("127.0.0.1", http.port)
        writers.append(slow_w)
        slow_w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        await slow_w.drain()
        ok_r, ok_w = await asyncio.open_connection("127.0.0.1", http.port)
        writers.append(ok_w)
        ok_w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await ok_r.readline()).startswith(b"HTTP/1.1 200")
        third_r, third_w = await asyncio.open_connection("127.0.0.1", http.port)
        writers.append(third_w)
        assert await asyncio.wait_for(third_r.read(), 5) == b""  # past max_clients: closed
        assert http.guard.rejected == 1
        # the slowloris is cut off by the deadline (a timer, not this test's sleep)
        assert await asyncio.wait_for(slow_r.read(), 5) == b""
        assert http.guard.timed_out == 1
    finally:
        for w in writers:
            w.close()
        await http.close()


async def test_http_over_tls_with_a_metrics_token(tmp_path: Path) -> None:
    import ssl

    from peer_ring.runner import _resp_ssl
    from peer_ring.testing.pki import TestPKI

    pki = TestPKI(tmp_path)
    pki.issue("http", ips=("127.0.0.1",))
    ctx = _resp_ssl({"cert": str(tmp_path / "http.pem"), "key": str(tmp_path / "http.key")})
    node = Node(NodeConfig(node_id="n1", transport="memory"), network=MemoryNetwork())
    http = HttpServer(node, "127.0.0.1:0", metrics_token="metrics-token-0123", ssl_context=ctx)
    await http.start()
    client_ctx = ssl.create_default_context(cafile=pki.ca)
    base = f"https://127.0.0.1:{http.port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/healthz", ssl=client_ctx) as r:
                assert r.status == 200
            async with session.get(f"{base}/metrics", ssl=client_ctx) as r:
                assert r.status == 401
            auth = {"Authorization": "Bearer metrics-token-0123"}
            async with session.get(f"{base}/metrics", ssl=client_ctx, headers=auth) as r:
                assert r.status == 200
                assert "peer_ring" in await r.text()
    finally:
        await http.close()
