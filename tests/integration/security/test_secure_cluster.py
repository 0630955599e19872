"""Issue 17's transcript against real node processes with mTLS and an admin token.

Three nodes with ``--requirepass s3cret``, mutual TLS from ``--tls-cert``/
``--tls-key``/``--tls-ca`` (certificates made here, one per node id) and an
admin token file. Every step of the transcript -- an unauthenticated RESP
read, ``peer-ring kv put`` and ``peer-ring leave`` with no credentials -- is
refused with a clear error; so are a stolen member certificate without the
admin token, a certificate for another id, and an expired one. The CLI with
the admin certificate or the token works. A node's certificate is rotated on
disk and served without a restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from peer_ring.errors import AuthenticationFailed, NotAuthorized, PeerUnavailable
from peer_ring.testing.cluster import LocalCluster
from peer_ring.testing.pki import TestPKI
from peer_ring.transport import PeerAuthConfig, TLSConfig, request_once
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

TOKEN = "admin-token-for-the-test-0123456789"


@dataclass
class Secure:
    cluster: LocalCluster
    pki: TestPKI
    token_file: str
    transport: str

    def tls(self, name: str) -> TLSConfig:
        return TLSConfig(str(self.pki.dir / f"{name}.pem"), str(self.pki.dir / f"{name}.key"),
                         self.pki.ca)  # fmt: skip

    def cli(self, *args: str, creds: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEER_RING_")}
        return subprocess.run(
            [sys.executable, "-m", "peer_ring", *args, "--transport", self.transport, *creds],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip

    def cert_flags(self, name: str) -> tuple[str, ...]:
        t = self.tls(name)
        assert t.ca_file is not None
        return ("--tls-cert", t.cert_file, "--tls-key", t.key_file, "--tls-ca", t.ca_file)


@pytest.fixture(params=["tcp", "grpc"], scope="module")
def secure(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secure]:
    transport = request.param
    third = 20 if transport == "tcp" else 21
    d = tmp_path_factory.mktemp(f"secure-{transport}")
    pki = TestPKI(d / "pki")
    ips = {f"n{i}": f"127.0.{third}.{i + 1}" for i in (1, 2, 3)}
    for name, ip in ips.items():
        pki.issue(name, ips=(ip,))
    pki.issue("peer-ring-admin")
    pki.issue("ops", ips=())  # any cluster certificate, for use with the token
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    pki.issue("n9", valid_from=past, valid_until=past + dt.timedelta(days=1))
    token_file = d / "admin-token"
    token_file.write_text(TOKEN + "\n")
    per_node = {
        name: ["--tls-cert", str(pki.dir / f"{name}.pem"),
               "--tls-key", str(pki.dir / f"{name}.key"), "--tls-ca", pki.ca, "--tls-reload", "0.2",
               "--resp-tls", f"{ips[name]}:6380", "--resp-tls-cert", str(pki.dir / f"{name}.pem"),
               "--resp-tls-key", str(pki.dir / f"{name}.key")]
        for name in ips
    }  # fmt: skip
    cluster = LocalCluster(
        3,
        subnet=f"127.0.{third}",
        port=7000,
        resp_port=6379,
        transport=transport,
        extra_args=["--requirepass", "s3cret", "--admin-token-file", str(token_file)],
        per_node_args=per_node,
        artefacts=d / "logs",
        start_timeout=60.0,
    )
    with cluster:
        yield Secure(cluster, pki, str(token_file), transport)


def _redis_cli(host: str, *args: str) -> str:
    port = () if "-p" in args else ("-p", "6379")
    out = subprocess.run(
        ["redis-cli", "-h", host, *port, *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return out.stdout + out.stderr


async def _members_up(s: Secure) -> None:
    async def three() -> bool:
        try:
            st = await request_once(
                s.cluster["n1"].address, ["st"], transport=s.transport, timeout=3.0,
                tls=s.tls("peer-ring-admin"),
            )  # fmt: skip
        except PeerUnavailable:
            return False
        return len(st["members"]) == 3 and {m["state"] for m in st["members"]} == {"up"}

    await wait_for(three, timeout=30, interval=0.3, message="three members up over mTLS")


async def test_the_transcript_is_refused_at_every_step(secure: Secure) -> None:
    s, c = secure, secure.cluster
    await _members_up(s)
    # 1. RESP without the password
    assert "NOAUTH Authentication required" in _redis_cli(c["n1"].ip, "get", "x")
    # 2. kv put over the peer port with no credentials at all
    put = s.cli("kv", "put", "secret-key", "hacked", "--node", c["n1"].address)
    assert put.returncode == 1
    assert "error" in put.stderr
    # ... with a member's certificate (stolen from a node) but no admin credential
    put = s.cli("kv", "put", "secret-key", "hacked", "--node", c["n1"].address,
                creds=s.cert_flags("n2"))  # fmt: skip
    assert put.returncode == 1
    assert "needs an admin credential" in put.stderr
    # ... with the token but no client certificate: mTLS refuses the channel
    put = s.cli("kv", "put", "secret-key", "hacked", "--node", c["n1"].address,
                creds=("--admin-token-file", s.token_file))  # fmt: skip
    assert put.returncode == 1
    # 3. nothing was written (read over RESP with TLS, as Redis's tls-port)
    tls = ("--tls", "--cacert", s.pki.ca, "-p", "6380")
    assert (
        _redis_cli(c["n2"].ip, *tls, "-a", "s3cret", "--no-auth-warning", "get", "secret-key")
        == "\n"
    )
    assert "NOAUTH" in _redis_cli(c["n2"].ip, *tls, "get", "secret-key")
    # 4. leave with no credentials, and with a member certificate only
    left = s.cli("leave", "--node", c["n3"].address, "--timeout", "10")
    assert left.returncode == 1
    left = s.cli("leave", "--node", c["n3"].address, "--timeout", "10", creds=s.cert_flags("n1"))
    assert left.returncode == 1
    assert "needs an admin credential" in left.stderr
    status = s.cli("status", "--node", c["n3"].address, "--json", creds=s.cert_flags("n1"))
    assert status.returncode == 1
    assert c["n3"].running
    # the admin certificate, or a cluster certificate with the token, may
    admin = s.cli("kv", "put", "k", "by-admin", "--node", c["n1"].address,
                  creds=s.cert_flags("peer-ring-admin"))  # fmt: skip
    assert admin.returncode == 0, admin.stderr
    got = s.cli("kv", "get", "k", "--node", c["n2"].address,
                creds=(*s.cert_flags("ops"), "--admin-token-file", s.token_file))  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert got.stdout == "by-admin\n"
    env_token = s.cli("status", "--node", c["n2"].address, "--json",
                      creds=(*s.cert_flags("ops"), "--admin-token", TOKEN))  # fmt: skip
    assert env_token.returncode == 0, env_token.stderr
    assert '"node": "n2"' in env_token.stdout


async def test_posing_as_another_node_or_with_an_expired_certificate_is_refused(
    secure: Secure,
) -> None:
    s, c = secure, secure.cluster
    await _members_up(s)
    with pytest.raises(AuthenticationFailed, match="not the node id 'n1'"):
        await request_once(c["n3"].address, ["p"], transport=s.transport, timeout=5.0,
                           name="n1", tls=s.tls("n2"))  # fmt: skip
    with pytest.raises(PeerUnavailable):  # the TLS handshake itself fails
        await request_once(c["n3"].address, ["p"], transport=s.transport, timeout=5.0,
                           name="n9", tls=s.tls("n9"))  # fmt: skip
    with pytest.raises(NotAuthorized):  # a real member may not ask for admin things
        await request_once(c["n3"].address, ["kv", "get", b"k"], transport=s.transport,
                           timeout=5.0, tls=s.tls("n2"))  # fmt: skip
    token = PeerAuthConfig(admin_token=TOKEN)
    assert await request_once(c["n3"].address, ["p"], transport=s.transport, timeout=5.0,
                              tls=s.tls("ops"), auth=token) == ["n3", await _epoch(s)]  # fmt: skip


async def _epoch(s: Secure) -> str:
    st = await request_once(s.cluster["n3"].address, ["st"], transport=s.transport, timeout=5.0,
                            tls=s.tls("peer-ring-admin"))  # fmt: skip
    return str(st["epoch"])


def _served_serial(host: str, port: int, s: Secure) -> int:
    ctx = ssl.create_default_context(cafile=s.pki.ca)
    ctx.check_hostname = False
    admin = s.tls("peer-ring-admin")
    ctx.load_cert_chain(admin.cert_file, admin.key_file)
    ctx.set_alpn_protocols(["h2"])  # what a gRPC server expects; tcp ignores it
    import socket

    from cryptography import x509

    with socket.create_connection((host, port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


async def test_a_renewed_certificate_is_served_without_restart(secure: Secure) -> None:
    s, c = secure, secure.cluster
    n2 = c["n2"]
    pid = n2.pid
    old = await asyncio.to_thread(_served_serial, n2.ip, n2.port, s)
    new = s.pki.issue("n2", ips=(n2.ip,)).serial
    assert new != old

    async def renewed() -> bool:
        return await asyncio.to_thread(_served_serial, n2.ip, n2.port, s) == new

    await wait_for(renewed, timeout=15, interval=0.2, message="the renewed certificate served")
    assert n2.pid == pid
    await _members_up(s)


@pytest.fixture(scope="module")
def secret_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Path]]:
    """Three tcp nodes with a cluster secret and an admin token, no PKI."""
    d = tmp_path_factory.mktemp("secret")
    (d / "cluster-secret").write_text("a-cluster-secret-for-the-test-0123\n")
    (d / "admin-token").write_text(TOKEN + "\n")
    cluster = LocalCluster(
        3,
        subnet="127.0.22",
        port=7000,
        extra_args=[
            "--cluster-secret-file",
            str(d / "cluster-secret"),
            "--admin-token-file",
            str(d / "admin-token"),
        ],
        artefacts=d / "logs",
        start_timeout=60.0,
    )
    with cluster:
        yield cluster, d


async def test_a_cluster_secret_without_pki_admits_members_and_refuses_strangers(
    secret_cluster: tuple[LocalCluster, Path],
) -> None:
    c, d = secret_cluster
    token = PeerAuthConfig(admin_token=TOKEN)

    async def three() -> bool:
        st = await request_once(c["n1"].address, ["st"], timeout=3.0, auth=token)
        return len(st["members"]) == 3 and {m["state"] for m in st["members"]} == {"up"}

    await wait_for(three, timeout=30, interval=0.3, message="three members with the secret")
    # a stranger without the secret, or with a wrong one, gets nothing
    with pytest.raises(AuthenticationFailed):
        await request_once(c["n2"].address, ["p"], timeout=3.0)
    wrong = PeerAuthConfig(cluster_secret="not-the-cluster-secret-0123")
    with pytest.raises(AuthenticationFailed):
        await request_once(c["n2"].address, ["p"], timeout=3.0, auth=wrong)
    # the token makes an admin: the CLI's kv works with it, not without
    base = ["kv", "put", "k", "v", "--node", c["n3"].address]
    assert _peer_ring(*base).returncode == 1
    ok = _peer_ring(*base, "--admin-token-file", str(d / "admin-token"))
    assert ok.returncode == 0, ok.stderr


def _peer_ring(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEER_RING_")}
    return subprocess.run([sys.executable, "-m", "peer_ring", *args], capture_output=True,
                          text=True, timeout=60, env=env, check=False)  # fmt: skip
