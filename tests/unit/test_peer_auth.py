"""Peer authentication: certificates that must name the claimed node id, the
cluster-secret challenge, admin credentials, rotation, and the node's
authorisation of operations by what a peer proved.

Certificates come from :class:`peer_ring.testing.pki.TestPKI` (made per
test module). The ``tcp`` and ``grpc`` tests bind 127.0.0.1: run them in a
private network namespace (see HELPERS.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from peer_ring import NodeConfig, wire
from peer_ring.errors import AuthenticationFailed, NotAuthorized, PeerUnavailable
from peer_ring.node import Node
from peer_ring.testing.pki import TestPKI
from peer_ring.transport import (
    MemoryNetwork,
    PeerAuthConfig,
    TLSConfig,
    TransportConfig,
    create_transport,
)
from peer_ring.transport._core import ChannelTransport
from peer_ring.transport.auth import cert_names, names_match
from peer_ring.transport.base import PeerInfo

SECRET = "cluster-secret-0123456789"
TOKEN = "admin-token-0123456789abcdef"


def who(message: Any, peer: PeerInfo) -> Any:
    return [message, peer.node_id, peer.member, peer.admin]


# -- names ----------------------------------------------------------------------


def test_a_certificate_names_an_id_by_cn_san_or_first_dns_label() -> None:
    names = cert_names(
        {
            "subject": ((("organizationName", "x"),), (("commonName", "n1"),)),
            "subjectAltName": (("DNS", "n2.peer-ring.default.svc"), ("IP Address", "10.0.0.1")),
        }
    )
    assert names == {"n1", "n2.peer-ring.default.svc"}
    assert names_match("n1", names)
    assert names_match("n2", names)
    assert names_match("n2.peer-ring.default.svc", names)
    assert not names_match("n3", names)
    assert not names_match("n2.peer-ring", names)  # a prefix is not a label
    assert not names_match("10.0.0.1", names)  # IP SANs name addresses, not nodes
    assert cert_names(None) == frozenset()


def test_secrets_are_checked_and_never_printed() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        PeerAuthConfig(cluster_secret="short")
    assert SECRET not in repr(TransportConfig(auth=PeerAuthConfig(cluster_secret=SECRET)))


# -- the cluster-secret challenge (memory transport: no sockets) -----------------


@pytest.fixture
async def mem() -> AsyncIterator[Callable[..., Any]]:
    network = MemoryNetwork()
    made: list[ChannelTransport] = []

    async def factory(node_id: str, auth: PeerAuthConfig | None) -> ChannelTransport:
        cfg = TransportConfig(auth=auth, request_timeout=2.0, connect_timeout=1.0)
        t = create_transport("memory", node_id, f"{node_id}:1", cfg, network=network)
        t.set_handler(who)
        await t.start()
        made.append(t)
        return t

    yield factory
    for t in made:
        await t.close()


async def test_members_with_the_cluster_secret_talk_as_members_not_admins(mem: Any) -> None:
    auth = PeerAuthConfig(cluster_secret=SECRET)
    a, b = await mem("a", auth), await mem("b", auth)
    assert await a.request(b.address, "hi") == ["hi", "a", True, False]
    assert await b.request(a.address, "hi") == ["hi", "b", True, False]


@pytest.mark.parametrize(
    "client_auth",
    [None, PeerAuthConfig(cluster_secret="wrong-secret-0123456789")],
    ids=["no-secret", "wrong-secret"],
)
async def test_a_node_refuses_a_peer_without_the_cluster_secret(
    mem: Any, client_auth: PeerAuthConfig | None
) -> None:
    server = await mem("server", PeerAuthConfig(cluster_secret=SECRET))
    intruder = await mem("intruder", client_auth)
    with pytest.raises(AuthenticationFailed):
        await intruder.request(server.address, "hi")
    # without a secret the node refuses it; with a wrong one the intruder
    # already fails the node's own proof and gives up first
    assert server.stats["auth_failures"] == (1 if client_auth is None else 0)
    assert server.stats["requests_in"] == 0


async def test_a_member_refuses_a_node_that_skips_or_fails_the_challenge(mem: Any) -> None:
    """An impostor listening where a member should be cannot feed it answers."""
    member = await mem("member", PeerAuthConfig(cluster_secret=SECRET))
    open_node = await mem("open", None)
    with pytest.raises(AuthenticationFailed, match="did not ask for the cluster secret"):
        await member.request(open_node.address, "hi")
    impostor = await mem("impostor", PeerAuthConfig(cluster_secret="other-secret-0123456789"))
    with pytest.raises(AuthenticationFailed, match="does not know the cluster secret"):
        await member.request(impostor.address, "hi")


async def test_the_admin_token_makes_an_admin_but_not_a_member(mem: Any) -> None:
    node = await mem("node", PeerAuthConfig(cluster_secret=SECRET, admin_token=TOKEN))
    cli = await mem("cli", PeerAuthConfig(admin_token=TOKEN))
    assert await cli.request(node.address, "hi") == ["hi", "cli", False, True]
    wrong = await mem("wrong", PeerAuthConfig(admin_token="not-the-token-0123456789"))
    with pytest.raises(AuthenticationFailed):
        await wrong.request(node.address, "hi")


async def test_an_admin_token_alone_leaves_members_open_and_admin_closed(mem: Any) -> None:
    node = await mem("node", PeerAuthConfig(admin_token=TOKEN))
    anyone = await mem("anyone", None)
    assert await anyone.request(node.address, "hi") == ["hi", "anyone", True, False]


async def test_without_any_credential_configured_every_peer_may_do_everything(mem: Any) -> None:
    a, b = await mem("a", None), await mem("b", None)
    assert await a.request(b.address, "hi") == ["hi", "a", True, True]


# -- authorisation in the node ---------------------------------------------------


def _bare_node() -> Node:
    return Node(NodeConfig(node_id="n1", transport="memory"), network=MemoryNetwork())


@pytest.mark.parametrize("op", ["leave", "kv", "bench", "ratelimit", "st"])
async def test_admin_operations_need_an_admin(op: str) -> None:
    # "ratelimit": the rate limiter's admin op (peer-ring ratelimit, status figures)
    assert op in wire.ADMIN_REQUIRED
    node = _bare_node()
    member = PeerInfo("n2", "n2:1", member=True, admin=False)
    with pytest.raises(NotAuthorized, match="admin credential"):
        node._dispatch([op, "x"], member)


@pytest.mark.parametrize("op", ["s", "sd", "cv", "m", "h", "hd", "ae", "xf_done"])
async def test_member_operations_need_a_member(op: str) -> None:
    node = _bare_node()
    admin = PeerInfo("cli", "cli:1", member=False, admin=True)
    with pytest.raises(NotAuthorized, match="not an authenticated member"):
        node._dispatch([op, "x"], admin)


async def test_ping_is_open_to_any_authenticated_peer_and_status_to_admins() -> None:
    node = _bare_node()
    admin = PeerInfo("cli", "cli:1", member=False, admin=True)
    member = PeerInfo("n2", "n2:1", member=True, admin=False)
    assert node._dispatch(["p"], admin)[0] == "n1"
    assert node._dispatch(["p"], member)[0] == "n1"
    assert node._dispatch(["st"], admin)["node"] == "n1"


async def test_streams_need_a_member() -> None:
    node = _bare_node()
    with pytest.raises(NotAuthorized):
        await node._dispatch_stream(["xf", "kv", 0, "n2"], PeerInfo("cli", "c:1", False, True))


# -- certificates on real sockets (tcp and grpc) -----------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    pki = TestPKI(tmp_path_factory.mktemp("pki"))
    for name in ("n1", "n2", "peer-ring-admin"):
        pki.issue(name)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    pki.issue("n3", valid_from=past, valid_until=past + dt.timedelta(days=1))
    return pki


def _mtls(pki: TestPKI, name: str, **kw: Any) -> TLSConfig:
    return TLSConfig.mutual(
        str(pki.dir / f"{name}.pem"), str(pki.dir / f"{name}.key"), pki.ca, **kw
    )


@pytest.fixture(params=["tcp", "grpc"])
async def net(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    made: list[ChannelTransport] = []

    async def factory(
        node_id: str, tls: TLSConfig | None, auth: PeerAuthConfig | None = None
    ) -> ChannelTransport:
        cfg = TransportConfig(tls=tls, auth=auth, request_timeout=5.0, connect_timeout=3.0)
        t = create_transport(request.param, node_id, "127.0.0.1:0", cfg)
        t.set_handler(who)
        await t.start()
        made.append(t)
        return t

    yield factory
    for t in made:
        await t.close()


async def test_mtls_members_are_the_ids_their_certificates_name(net: Any, pki: TestPKI) -> None:
    n1 = await net("n1", _mtls(pki, "n1"))
    n2 = await net("n2", _mtls(pki, "n2"))
    assert await n2.request(n1.address, "hi") == ["hi", "n2", True, False]


async def test_a_node_with_a_certificate_for_another_id_is_refused(net: Any, pki: TestPKI) -> None:
    n1 = await net("n1", _mtls(pki, "n1"))
    poser = await net("n9", _mtls(pki, "n2"))  # n2's valid certificate, claiming n9
    with pytest.raises(AuthenticationFailed, match="not the node id 'n9'"):
        await poser.request(n1.address, "hi")
    assert n1.stats["requests_in"] == 0


async def test_an_expired_certificate_is_refused(net: Any, pki: TestPKI) -> None:
    n1 = await net("n1", _mtls(pki, "n1"))
    n3 = await net("n3", _mtls(pki, "n3"))
    with pytest.raises(PeerUnavailable):
        await n3.request(n1.address, "hi")


async def test_an_admin_certificate_makes_an_admin(net: Any, pki: TestPKI) -> None:
    n1 = await net("n1", _mtls(pki, "n1"))
    cli = await net("cli-1", _mtls(pki, "peer-ring-admin"))
    assert await cli.request(n1.address, "hi") == ["hi", "cli-1", False, True]
    # claiming the admin name itself (what the CLI announces) is no membership either
    named = await net("peer-ring-admin", _mtls(pki, "peer-ring-admin"))
    assert await named.request(n1.address, "hi") == ["hi", "peer-ring-admin", False, True]


async def test_mtls_and_cluster_secret_together_need_both(net: Any, pki: TestPKI) -> None:
    auth = PeerAuthConfig(cluster_secret=SECRET)
    n1 = await net("n1", _mtls(pki, "n1"), auth)
    n2 = await net("n2", _mtls(pki, "n2"), auth)
    assert await n2.request(n1.address, "hi") == ["hi", "n2", True, False]
    no_secret = await net("n2", _mtls(pki, "n2"))
    with pytest.raises(AuthenticationFailed):
        await no_secret.request(n1.address, "hi")


async def test_a_rotated_certificate_is_served_after_reload(
    net: Any, pki: TestPKI, tmp_path: Path
) -> None:
    """The node starts with an expired certificate (clients refuse it); the
    files are replaced the way cert-manager renews a Secret; after the reload
    new connections succeed without a restart."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    pki.issue("n1", valid_from=past, valid_until=past + dt.timedelta(days=1), file_stem="rot")
    rot = TLSConfig.mutual(str(pki.dir / "rot.pem"), str(pki.dir / "rot.key"), pki.ca)
    n1 = await net("n1", rot)
    n2 = await net("n2", _mtls(pki, "n2"))
    with pytest.raises(PeerUnavailable):
        await n2.request(n1.address, "hi")
    assert not n1.reload_tls()  # nothing changed yet
    pki.issue("n1", file_stem="rot")
    assert n1.reload_tls()
    fresh = await net("n2", _mtls(pki, "n2"))  # a new client: no backoff from the failure
    assert await fresh.request(n1.address, "hi") == ["hi", "n2", True, False]
    assert n1.tls_material is not None
    assert n1.tls_material.reloads == 1
