"""RESP over TLS (redis-cli --tls, redis-py ssl=True) and RESP users with
read/write/admin permissions, against an in-process RespServer on 127.0.0.1
(run in a private network namespace)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ConnectionError, NoPermissionError

from peer_ring.apps.kv.local import LocalKV
from peer_ring.errors import ConfigError
from peer_ring.runner import _resp_ssl
from peer_ring.server.resp import RespConfig, RespServer
from peer_ring.server.resp._acl import Acl, User, hash_password
from peer_ring.testing.pki import TestPKI

pytestmark = pytest.mark.integration

USERS = f"""
# a users file in Redis's aclfile format
user reader on #{hash_password("r-pass-0123456789")} ~* +@read
user writer on >w-pass-0123456789 ~* +@read +@write
user ops on >o-pass-0123456789 ~* +@all
user gone off >g-pass-0123456789 +@all
"""


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    pki = TestPKI(tmp_path / "pki")
    pki.issue("resp.peer-ring", ips=("127.0.0.1",))
    pki.issue("app-client")
    return pki


async def _serve(tmp_path: Path, ssl_context: ssl.SSLContext | None = None) -> RespServer:
    users = tmp_path / "users.acl"
    users.write_text(USERS)
    server = RespServer(
        LocalKV(), host="127.0.0.1", port=0, ssl_context=ssl_context,
        config=RespConfig(requirepass="default-pass-0123", users_file=str(users)),
    )  # fmt: skip
    await server.start()
    return server


@pytest.fixture
async def plain(tmp_path: Path) -> AsyncIterator[RespServer]:
    server = await _serve(tmp_path)
    yield server
    await server.close()


def _client(server: RespServer, user: str | None, password: str | None) -> aioredis.Redis:
    return aioredis.Redis(host="127.0.0.1", port=server.port, username=user, password=password)


def test_acl_rules_and_files_are_parsed_and_hashes_shown(tmp_path: Path) -> None:
    acl = Acl()
    u = acl.setuser("alice", ["on", ">secret-password-1", "+@read", "+@write", "-@write"])
    assert u.perms == {"read"}
    assert u.check_password(b"secret-password-1")
    assert not u.check_password(b"nope")
    shown = u.describe()
    assert "secret-password-1" not in shown
    assert hash_password("secret-password-1") in shown
    with pytest.raises(ConfigError, match="unsupported ACL rule"):
        acl.setuser("alice", ["+get"])
    assert acl.users["alice"].perms == {"read"}  # a failed SETUSER changes nothing
    bad = tmp_path / "bad.acl"
    bad.write_text("user x on #abc\n")
    with pytest.raises(ConfigError, match=r"bad\.acl:1"):
        Acl().load(bad)
    assert not User("off", enabled=False, nopass=True).check_password(b"")


async def test_users_have_read_write_and_admin_permissions(plain: RespServer) -> None:
    anon = _client(plain, None, None)
    with pytest.raises(AuthenticationError, match="already authenticated"):
        await anon.get("k")  # redis-py opens with HELLO 3, refused with NOAUTH as by Redis
    ops = _client(plain, "ops", "o-pass-0123456789")
    writer = _client(plain, "writer", "w-pass-0123456789")
    reader = _client(plain, "reader", "r-pass-0123456789")
    try:
        assert await writer.set("k", "v")
        assert await reader.get("k") == b"v"
        with pytest.raises(NoPermissionError, match="has no permissions to run the 'set'"):
            await reader.set("k", "x")
        with pytest.raises(NoPermissionError, match="'flushall'"):
            await writer.flushall()
        with pytest.raises(NoPermissionError, match=r"'config\|get'"):
            await writer.config_get("maxclients")
        with pytest.raises(NoPermissionError):
            await writer.execute_command("ACL", "SETUSER", "writer", "+@admin")
        assert await reader.execute_command("ACL", "WHOAMI") == b"reader"
        listed = await ops.execute_command("ACL", "LIST")
        assert any(b"user reader on #" in line for line in listed)
        assert not any(b"o-pass" in line for line in listed)  # hashes, never passwords
        # an admin adds a user, who can log in at once
        await ops.execute_command("ACL", "SETUSER", "carol", "on", ">c-pass-0123456789",
                                  "+@read")  # fmt: skip
        carol = _client(plain, "carol", "c-pass-0123456789")
        assert await carol.get("k") == b"v"
        await carol.aclose()
        assert await ops.flushall()
        assert await writer.get("k") is None
        with pytest.raises(AuthenticationError):
            await _client(plain, "gone", "g-pass-0123456789").ping()
        with pytest.raises(AuthenticationError):
            await _client(plain, "reader", "wrong").ping()
        # CLIENT KILL is admin-only and closes the named connection
        with pytest.raises(NoPermissionError):
            await writer.execute_command("CLIENT", "KILL", "USER", "reader")
        assert await ops.execute_command("CLIENT", "KILL", "USER", "reader") >= 1
    finally:
        for c in (anon, ops, writer, reader):
            await c.aclose()


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_resp_over_tls_with_redis_cli_and_redis_py(tmp_path: Path, pki: TestPKI) -> None:
    files = {"cert": str(pki.dir / "resp.peer-ring.pem"),
             "key": str(pki.dir / "resp.peer-ring.key"), "ca": None}  # fmt: skip
    server = await _serve(tmp_path, _resp_ssl(files))
    try:
        cli = ["redis-cli", "--tls", "--cacert", pki.ca, "-h", "127.0.0.1", "-p",
               str(server.port), "--user", "writer", "--pass", "w-pass-0123456789",
               "--no-auth-warning"]  # fmt: skip
        assert await _run(*cli, "set", "tls-key", "over tls") == (0, "OK\n")
        assert await _run(*cli, "get", "tls-key") == (0, "over tls\n")
        client = aioredis.Redis(host="127.0.0.1", port=server.port, ssl=True,
                                ssl_ca_certs=pki.ca, username="reader",
                                password="r-pass-0123456789")  # fmt: skip
        try:
            assert await client.get("tls-key") == b"over tls"
        finally:
            await client.aclose()
        plaintext = _client(server, "reader", "r-pass-0123456789")
        with pytest.raises(ConnectionError):  # a plaintext client gets no answer it can read
            await asyncio.wait_for(plaintext.ping(), 10)
        await plaintext.aclose()
    finally:
        await server.close()


async def test_resp_tls_with_a_ca_requires_client_certificates(
    tmp_path: Path, pki: TestPKI
) -> None:
    files = {"cert": str(pki.dir / "resp.peer-ring.pem"),
             "key": str(pki.dir / "resp.peer-ring.key"), "ca": pki.ca}  # fmt: skip
    server = await _serve(tmp_path, _resp_ssl(files))
    base = ["redis-cli", "--tls", "--cacert", pki.ca, "-h", "127.0.0.1", "-p",
            str(server.port), "-a", "default-pass-0123", "--no-auth-warning"]  # fmt: skip
    try:
        _, out = await _run(*base, "ping")
        assert "PONG" not in out
        cert = ["--cert", str(pki.dir / "app-client.pem"), "--key", str(pki.dir / "app-client.key")]
        assert await _run(*base, *cert, "ping") == (0, "PONG\n")
    finally:
        await server.close()
