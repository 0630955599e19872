"""TLS and mutual TLS on the ``tcp`` and ``grpc`` transports.

Certificates are made here with ``cryptography``: two unrelated CAs, node
certificates (node id ``node``: CN ``node.peer-ring``, whose first label names
it) with the IP SAN 127.0.0.1 signed by the cluster CA, and an
intruder's certificate signed by the other CA. With mTLS the server must
refuse clients without a certificate or with one from the other CA -- the
request fails with a TransportError -- and keep serving good clients.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from peer_ring.errors import ConfigError, PeerUnavailable
from peer_ring.transport import TLSConfig, TransportConfig, create_transport
from peer_ring.transport._core import ChannelTransport
from peer_ring.transport.base import PeerInfo
from peer_ring.transport.grpc_transport import METHOD

KINDS = ["tcp", "grpc"]


@dataclass(frozen=True)
class Pki:
    ca: str
    node_cert: str
    node_key: str
    other_ca: str
    intruder_cert: str
    intruder_key: str


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> str:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(path)


def _write_cert(path: Path, cert: x509.Certificate) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    cn: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName(cn)]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _ca("peer-ring test CA")
    node, node_key = _leaf("node.peer-ring", ca, ca_key)
    other, other_key = _ca("some other CA")
    intruder, intruder_key = _leaf("intruder", other, other_key)
    return Pki(
        ca=_write_cert(d / "ca.pem", ca),
        node_cert=_write_cert(d / "node.pem", node),
        node_key=_write_key(d / "node.key", node_key),
        other_ca=_write_cert(d / "other-ca.pem", other),
        intruder_cert=_write_cert(d / "intruder.pem", intruder),
        intruder_key=_write_key(d / "intruder.key", intruder_key),
    )


Make = Callable[..., ChannelTransport]


@pytest.fixture(params=KINDS)
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    made: list[ChannelTransport] = []

    def factory(tls: TLSConfig | None, node_id: str = "n") -> ChannelTransport:
        cfg = TransportConfig(tls=tls, request_timeout=10.0, connect_timeout=5.0)
        t = create_transport(request.param, node_id, "127.0.0.1:0", cfg)
        made.append(t)
        return t

    yield factory
    for t in made:
        await t.close()


def echo(message: Any, peer: PeerInfo) -> Any:
    return [message, peer.node_id]


def _node_tls(pki: Pki, mutual: bool) -> TLSConfig:
    return TLSConfig(pki.node_cert, pki.node_key, pki.ca, require_client_cert=mutual)


async def _server(make: Make, tls: TLSConfig) -> ChannelTransport:
    srv = make(tls, "node")
    srv.set_handler(echo)
    await srv.start()
    return srv


async def _ask(make: Make, tls: TLSConfig | None, address: str, node_id: str) -> Any:
    client = make(tls, node_id)
    await client.start()
    return await client.request(address, "hi")


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
async def test_requests_work_over_tls(make: Make, pki: Pki, mutual: bool) -> None:
    srv = await _server(make, _node_tls(pki, mutual))
    assert await _ask(make, _node_tls(pki, mutual), srv.address, "node") == ["hi", "node"]


async def test_mtls_refuses_certificate_from_another_ca(make: Make, pki: Pki) -> None:
    srv = await _server(make, _node_tls(pki, True))
    # trusts the right CA for the server, but presents the intruder's cert
    intruder = TLSConfig(pki.intruder_cert, pki.intruder_key, pki.ca)
    with pytest.raises(PeerUnavailable):
        await _ask(make, intruder, srv.address, "intruder")
    assert await _ask(make, _node_tls(pki, True), srv.address, "node") == ["hi", "node"]


async def test_tls_server_refuses_plaintext_peer(make: Make, pki: Pki) -> None:
    srv = await _server(make, _node_tls(pki, True))
    with pytest.raises(PeerUnavailable):
        await _ask(make, None, srv.address, "plain")
    assert await _ask(make, _node_tls(pki, True), srv.address, "node") == ["hi", "node"]


async def test_client_refuses_server_from_another_ca(make: Make, pki: Pki) -> None:
    rogue = TLSConfig(pki.intruder_cert, pki.intruder_key, pki.other_ca)
    srv = await _server(make, rogue)
    with pytest.raises(PeerUnavailable):
        await _ask(make, _node_tls(pki, False), srv.address, "victim")


async def _tls_exchange_without_certificate(address: str, ca: str) -> None:
    host, port = address.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
    try:
        writer.write(b"\x00\x00\x00\x01\xc0")
        await writer.drain()
        # TLS 1.3: the refusal arrives as an alert after the client's handshake
        await asyncio.wait_for(reader.readexactly(1), 5.0)
    finally:
        writer.close()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


async def _grpc_exchange_without_certificate(address: str, ca: str) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=_read(ca))
    async with grpc.aio.secure_channel(address, creds) as channel:
        call = channel.stream_stream(METHOD, request_serializer=None, response_deserializer=None)(
            timeout=5.0
        )
        await call.write(b"")
        await call.read()


async def test_mtls_tcp_refuses_tls_client_without_certificate(pki: Pki) -> None:
    srv = create_transport("tcp", "node", "127.0.0.1:0", TransportConfig(tls=_node_tls(pki, True)))
    srv.set_handler(echo)
    await srv.start()
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await _tls_exchange_without_certificate(srv.address, pki.ca)
        good = create_transport(
            "tcp", "node", "127.0.0.1:0", TransportConfig(tls=_node_tls(pki, True))
        )
        await good.start()
        try:
            assert await good.request(srv.address, "hi") == ["hi", "node"]
        finally:
            await good.close()
    finally:
        await srv.close()


async def test_mtls_grpc_refuses_tls_client_without_certificate(pki: Pki) -> None:
    tls = _node_tls(pki, True)
    srv = create_transport("grpc", "node", "127.0.0.1:0", TransportConfig(tls=tls))
    srv.set_handler(echo)
    await srv.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _grpc_exchange_without_certificate(srv.address, pki.ca)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        good = create_transport("grpc", "node", "127.0.0.1:0", TransportConfig(tls=tls))
        await good.start()
        try:
            assert await good.request(srv.address, "hi") == ["hi", "node"]
        finally:
            await good.close()
    finally:
        await srv.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_unreadable_tls_material_is_a_config_error(kind: str, tmp_path: Path) -> None:
    missing = TLSConfig(str(tmp_path / "nope.pem"), str(tmp_path / "nope.key"), None)
    with pytest.raises(ConfigError, match="TLS"):
        create_transport(kind, "x", "127.0.0.1:0", TransportConfig(tls=missing))


async def test_grpc_tls_needs_a_ca(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="ca_file"):
        create_transport(
            "grpc", "x", "127.0.0.1:0", TransportConfig(tls=TLSConfig(pki.node_cert, pki.node_key))
        )
