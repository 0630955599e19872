"""Registries over TLS with authentication: a real etcd started with TLS and
client-certificate auth (then etcd's users enabled), and a real ZooKeeper
with a TLS client port and digest ACLs; certificates made by the test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from discovery_helpers import eventually, view_ids

from peer_ring.errors import DiscoveryError
from peer_ring.membership._etcd_tls import TlsEtcdClient
from peer_ring.membership.base import Member
from peer_ring.membership.etcd import EtcdConfig, EtcdDiscovery
from peer_ring.membership.zookeeper import ZooKeeperConfig, ZooKeeperDiscovery
from peer_ring.testing.pki import TestPKI
from peer_ring.testing.servers import (
    EtcdServer,
    ZooKeeperServer,
    etcd_missing,
    zookeeper_missing,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    pki = TestPKI(tmp_path_factory.mktemp("registry-pki"))
    pki.issue("etcd", ips=("127.0.0.1",))
    pki.issue("n1")
    return pki


@pytest.fixture(scope="module")
def etcd_tls(tmp_path_factory: pytest.TempPathFactory, pki: TestPKI) -> Iterator[EtcdServer]:
    reason = etcd_missing()
    if reason:
        pytest.skip(reason)
    tls = (str(pki.dir / "etcd.pem"), str(pki.dir / "etcd.key"), pki.ca)
    server = EtcdServer(tmp_path_factory.mktemp("etcd-tls"), tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.cleanup()


def _files(pki: TestPKI, name: str) -> dict[str, str]:
    return {"ca_file": pki.ca, "cert_file": str(pki.dir / f"{name}.pem"),
            "key_file": str(pki.dir / f"{name}.key")}  # fmt: skip


async def _enable_auth(server: EtcdServer, pki: TestPKI) -> None:
    """root (needed before auth can be enabled) and a peer-ring user and role."""
    from aetcd import rpc

    client = TlsEtcdClient("127.0.0.1", server.client_port, ca=pki.ca,
                           cert=str(pki.dir / "n1.pem"), key=str(pki.dir / "n1.key"))  # fmt: skip
    await client.connect()
    auth = rpc.AuthStub(client.channel)
    await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password="root-pass-0123"))
    await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
    await auth.RoleAdd(rpc.AuthRoleAddRequest(name="peer-ring"))
    perm = rpc.Permission(permType=rpc.Permission.READWRITE, key=b"/secure",
                          range_end=b"/securf")  # fmt: skip
    await auth.RoleGrantPermission(rpc.AuthRoleGrantPermissionRequest(name="peer-ring", perm=perm))
    await auth.UserAdd(rpc.AuthUserAddRequest(name="node", password="node-pass-0123"))
    await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="node", role="peer-ring"))
    await auth.AuthEnable(rpc.AuthEnableRequest())
    await client.close()


async def test_etcd_over_tls_with_authentication(etcd_tls: EtcdServer, pki: TestPKI) -> None:
    assert etcd_tls.endpoint.startswith("https://")
    base = dict(lease_ttl=2, retry_max=0.5, start_timeout=8.0, **_files(pki, "n1"))
    # TLS with client certificates: two members find each other
    a = EtcdDiscovery(EtcdConfig.from_options(etcd_tls.endpoint, "/secure/one", **base))
    b = EtcdDiscovery(EtcdConfig.from_options(etcd_tls.endpoint, "/secure/one", **base))
    await a.start(Member("a", "127.0.0.2:7100"))
    await b.start(Member("b", "127.0.0.3:7100"))
    try:
        await eventually(lambda: view_ids(a) == view_ids(b) == {"a", "b"}, "both over TLS")
    finally:
        await a.stop()
        await b.stop()
    # with authentication on, a node needs its user; a wrong password is refused
    await _enable_auth(etcd_tls, pki)
    user = {"username": "node", "password": "node-pass-0123"}
    node = EtcdDiscovery(EtcdConfig.from_options(etcd_tls.endpoint, "/secure/two", **user, **base))
    await node.start(Member("c", "127.0.0.4:7100"))
    try:
        assert view_ids(node) == {"c"}
    finally:
        await node.stop()
    bad = {"username": "node", "password": "wrong-0123"}
    wrong = EtcdDiscovery(
        EtcdConfig.from_options(etcd_tls.endpoint, "/secure/three", **bad, **base)
    )
    with pytest.raises(DiscoveryError):
        await wrong.start(Member("d", "127.0.0.5:7100"))
    await wrong.stop()
    # and a client without a certificate never gets through TLS
    no_cert = {**base, "cert_file": None, "key_file": None}
    anon = EtcdDiscovery(
        EtcdConfig.from_options(etcd_tls.endpoint, "/secure/four", **user, **no_cert)
    )
    with pytest.raises(DiscoveryError):
        await anon.start(Member("e", "127.0.0.6:7100"))
    await anon.stop()


def test_https_endpoints_need_a_ca(tmp_path: Path) -> None:
    from peer_ring.errors import ConfigError

    with pytest.raises(ConfigError, match="--etcd-ca"):
        EtcdConfig.from_options("https://127.0.0.1:2379")
    with pytest.raises(ConfigError, match="all http"):
        EtcdConfig.from_options("https://a:1,http://b:2", ca_file="x")


@pytest.fixture(scope="module")
def zk_tls(tmp_path_factory: pytest.TempPathFactory, pki: TestPKI) -> Iterator[ZooKeeperServer]:
    reason = zookeeper_missing()
    if reason:
        pytest.skip(reason)
    pki.issue("zookeeper", ips=("127.0.0.1",))
    tls = (str(pki.dir / "zookeeper.pem"), str(pki.dir / "zookeeper.key"), pki.ca)
    server = ZooKeeperServer(tmp_path_factory.mktemp("zk-tls"), tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.cleanup()


def _zk(server: ZooKeeperServer, pki: TestPKI, path: str, **kw: Any) -> ZooKeeperDiscovery:
    files = {"ca_file": pki.ca, "cert_file": str(pki.dir / "n1.pem"),
             "key_file": str(pki.dir / "n1.key")}  # fmt: skip
    files.update(kw)
    return ZooKeeperDiscovery(ZooKeeperConfig.from_options(
        server.secure_hosts, path, session_timeout=2.0, start_timeout=10.0, **files))  # fmt: skip


# kazoo drops the SSL socket of a refused TLS handshake without closing it
# (its retry loop, not ours): the ResourceWarnings it leaves are not this test's
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_zookeeper_over_tls_with_digest_acls(zk_tls: ZooKeeperServer, pki: TestPKI) -> None:
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoAuthError

    a = _zk(zk_tls, pki, "/secure-zk", digest="node:node-pass-0123")
    b = _zk(zk_tls, pki, "/secure-zk", digest="node:node-pass-0123")
    await a.start(Member("a", "127.0.0.2:7100"))
    await b.start(Member("b", "127.0.0.3:7100"))
    try:
        await eventually(lambda: view_ids(a) == view_ids(b) == {"a", "b"}, "both over TLS")

        def peek(auth: list[tuple[str, str]]) -> bytes:
            client = KazooClient(hosts=zk_tls.secure_hosts, use_ssl=True, ca=pki.ca,
                                 certfile=str(pki.dir / "n1.pem"),
                                 keyfile=str(pki.dir / "n1.key"), auth_data=auth)  # fmt: skip
            client.start(timeout=10)
            try:
                data, _ = client.get("/secure-zk/members/a")
                return bytes(data)
            finally:
                client.stop()
                client.close()

        # the member znodes carry a digest ACL: another identity cannot read them
        with pytest.raises(NoAuthError):
            await asyncio.to_thread(peek, [("digest", "intruder:guess-0123")])
        assert b"127.0.0.2:7100" in await asyncio.to_thread(
            peek, [("digest", "node:node-pass-0123")]
        )
    finally:
        await a.stop()
        await b.stop()
    # without a client certificate the TLS port refuses the session
    anon = _zk(zk_tls, pki, "/secure-zk2", cert_file=None, key_file=None)
    with pytest.raises(DiscoveryError):
        await anon.start(Member("c", "127.0.0.4:7100"))
    await anon.stop()
