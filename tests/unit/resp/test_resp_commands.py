"""Commands over a RespConnection (fake transport) backed by LocalKV."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from peer_ring._build import build
from peer_ring.errors import InvalidRequest, QuorumNotReached, RequestTimeout
from peer_ring.server.resp import ALL_SPECS, RespConfig

from .conftest import Client, Env, Err, Simple, encode_request, make_env

OK = Simple("OK")


async def test_ping_echo_and_nil_types_per_protocol(client: Client) -> None:
    assert await client.call("PING") == Simple("PONG")
    assert await client.call("ping", "hi") == b"hi"
    assert await client.call("ECHO", b"a\r\nb\x00") == b"a\r\nb\x00"
    await client.call("GET", "missing")
    assert client.transport.written.endswith(b"$-1\r\n")
    hello = await client.call("HELLO", "3")
    assert hello[b"proto"] == 3
    assert hello[b"server"] == b"redis"
    assert hello[b"version"] == b"7.2.0"
    assert hello[b"modules"] == []
    assert hello[b"id"] == client.conn.id
    await client.call("GET", "missing")
    assert client.transport.written.endswith(b"_\r\n")


async def test_hello_2_replies_with_a_flat_array(client: Client) -> None:
    reply = await client.call("HELLO", "2")
    assert isinstance(reply, list)
    assert dict(zip(reply[0::2], reply[1::2], strict=True))[b"proto"] == 2


async def test_hello_rejects_unknown_protocol_and_bad_options(client: Client) -> None:
    assert await client.call("HELLO", "4") == Err("NOPROTO unsupported protocol version")
    assert await client.call("HELLO", "x") == Err(
        "ERR Protocol version is not an integer or out of range"
    )
    assert await client.call("HELLO", "3", "FOO") == Err("ERR Syntax error in HELLO option 'FOO'")
    reply = await client.call("HELLO", "3", "SETNAME", "app")
    assert reply[b"mode"] == b"standalone"
    assert reply[b"role"] == b"master"
    assert await client.call("CLIENT", "GETNAME") == b"app"


async def test_set_get_and_options(env: Env, client: Client) -> None:
    assert await client.call("SET", "k", "v1") == OK
    assert await client.call("GET", "k") == b"v1"
    assert await client.call("SET", "k", "v2", "NX") is None
    assert await client.call("SET", "k", "v2", "XX", "GET") == b"v1"
    assert await client.call("SET", "new", "x", "XX") is None
    assert await client.call("SET", "new", "x", "NX", "GET") is None
    assert await client.call("GET", "new") == b"x"
    assert await client.call("SET", "k", "v", "NX", "XX") == Err("ERR syntax error")
    assert await client.call("SET", "k", "v", "EX", "10", "PX", "5") == Err("ERR syntax error")
    assert await client.call("SET", "k", "v", "EX") == Err("ERR syntax error")
    assert await client.call("SET", "k", "v", "EX", "0") == Err(
        "ERR invalid expire time in 'set' command"
    )
    assert await client.call("SET", "k", "v", "EX", "abc") == Err(
        "ERR value is not an integer or out of range"
    )


async def test_set_expiry_options_and_ttl(env: Env, client: Client) -> None:
    assert await client.call("SET", "k", "v", "EX", "100") == OK
    assert await client.call("TTL", "k") == 100
    assert await client.call("PTTL", "k") == 100_000
    assert await client.call("SET", "k", "v2", "KEEPTTL") == OK
    assert await client.call("TTL", "k") == 100
    assert await client.call("SET", "k", "v3") == OK
    assert await client.call("TTL", "k") == -1
    assert await client.call("TTL", "nope") == -2
    now_ms = int(env.clock.time() * 1000)
    assert await client.call("SET", "a", "v", "PXAT", now_ms + 1500) == OK
    assert await client.call("PTTL", "a") == 1500
    assert await client.call("SET", "b", "v", "EXAT", now_ms // 1000 + 20) == OK
    assert 19 <= await client.call("TTL", "b") <= 20
    assert await client.call("SET", "c", "v", "PX", "250") == OK
    await env.clock.advance(0.3)
    assert await client.call("GET", "c") is None
    assert await client.call("EXISTS", "c") == 0


async def test_expire_family_with_conditions(env: Env, client: Client) -> None:
    await client.call("SET", "k", "v")
    assert await client.call("EXPIRE", "nope", "10") == 0
    assert await client.call("EXPIRE", "k", "10", "XX") == 0
    assert await client.call("EXPIRE", "k", "10", "NX") == 1
    assert await client.call("EXPIRE", "k", "20", "NX") == 0
    assert await client.call("EXPIRE", "k", "5", "GT") == 0
    assert await client.call("EXPIRE", "k", "50", "GT") == 1
    assert await client.call("EXPIRE", "k", "30", "LT") == 1
    assert await client.call("TTL", "k") == 30
    assert await client.call("PEXPIRE", "k", "1500") == 1
    assert await client.call("PTTL", "k") == 1500
    now = int(env.clock.time())
    assert await client.call("EXPIREAT", "k", now + 40) == 1
    assert await client.call("TTL", "k") == 40
    assert await client.call("PEXPIREAT", "k", (now + 7) * 1000) == 1
    assert await client.call("TTL", "k") == 7
    assert await client.call("PERSIST", "k") == 1
    assert await client.call("PERSIST", "k") == 0
    assert await client.call("TTL", "k") == -1
    assert await client.call("EXPIRE", "k", "1", "NX", "XX") == Err(
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    )
    assert await client.call("EXPIRE", "k", "1", "GT", "LT") == Err(
        "ERR GT and LT options at the same time are not compatible"
    )
    assert await client.call("EXPIRE", "k", "1", "FOO") == Err("ERR Unsupported option FOO")
    assert await client.call("EXPIRE", "k", str(2**62)) == Err(
        "ERR invalid expire time in 'expire' command"
    )
    # A non-positive TTL deletes the key, like Redis.
    assert await client.call("EXPIRE", "k", "-1") == 1
    assert await client.call("EXISTS", "k") == 0


async def test_del_exists_mget_mset(client: Client) -> None:
    assert await client.call("MSET", "a", "1", "b", "2") == OK
    assert await client.call("MSET", "a", "1", "b") == Err(
        "ERR wrong number of arguments for 'mset' command"
    )
    assert await client.call("MGET", "a", "x", "b") == [b"1", None, b"2"]
    assert await client.call("EXISTS", "a", "a", "x") == 2
    assert await client.call("DEL", "a", "a", "x") == 1
    assert await client.call("UNLINK", "b") == 1
    assert await client.call("DBSIZE") == 0
    assert await client.call("TYPE", "a") == Simple("none")


async def test_incr_family(client: Client) -> None:
    assert await client.call("INCR", "n") == 1
    assert await client.call("INCRBY", "n", "41") == 42
    assert await client.call("DECR", "n") == 41
    assert await client.call("DECRBY", "n", "-9") == 50
    assert await client.call("GET", "n") == b"50"
    await client.call("SET", "s", "abc")
    assert await client.call("INCR", "s") == Err("ERR value is not an integer or out of range")
    assert await client.call("INCRBY", "n", "1.5") == Err(
        "ERR value is not an integer or out of range"
    )
    await client.call("SET", "big", str(2**63 - 1))
    assert await client.call("INCR", "big") == Err("ERR increment or decrement would overflow")
    assert await client.call("DECRBY", "n", str(-(2**63))) == Err("ERR decrement would overflow")
    await client.call("SET", "lead", "007")
    assert await client.call("INCR", "lead") == Err("ERR value is not an integer or out of range")


async def test_incr_keeps_the_ttl(client: Client) -> None:
    await client.call("SET", "n", "1", "EX", "60")
    assert await client.call("INCR", "n") == 2
    assert await client.call("TTL", "n") == 60


async def test_string_extras(client: Client) -> None:
    assert await client.call("SETNX", "k", "a") == 1
    assert await client.call("SETNX", "k", "b") == 0
    assert await client.call("APPEND", "k", "bc") == 3
    assert await client.call("STRLEN", "k") == 3
    assert await client.call("GETSET", "k", "z") == b"abc"
    assert await client.call("GETDEL", "k") == b"z"
    assert await client.call("GETDEL", "k") is None
    assert await client.call("SETEX", "t", "10", "v") == OK
    assert await client.call("TTL", "t") == 10
    assert await client.call("PSETEX", "t", "0", "v") == Err(
        "ERR invalid expire time in 'psetex' command"
    )


async def test_keys_and_scan_cover_every_key(client: Client) -> None:
    for i in range(30):
        await client.call("SET", f"user:{i}", "x")
    await client.call("SET", "other", "y")
    assert sorted(await client.call("KEYS", "user:*")) == sorted(
        f"user:{i}".encode() for i in range(30)
    )
    assert sorted(await client.call("KEYS", "user:[12]?")) == [
        f"user:{i}".encode() for i in range(10, 30)
    ]
    assert await client.call("KEYS", "nomatch*") == []
    assert sorted(await client.call("KEYS", "user:[12]")) == [b"user:1", b"user:2"]
    seen: set[bytes] = set()
    cursor = b"0"
    rounds = 0
    while True:
        cursor, keys = await client.call("SCAN", cursor, "MATCH", "user:*", "COUNT", "7")
        seen.update(keys)
        rounds += 1
        if cursor == b"0":
            break
    assert rounds > 1
    assert seen == {f"user:{i}".encode() for i in range(30)}
    assert await client.call("SCAN", "abc") == Err("ERR invalid cursor")
    assert await client.call("SCAN", "0", "COUNT", "0") == Err("ERR syntax error")
    cursor, keys = await client.call("SCAN", "0", "COUNT", "1000", "TYPE", "hash")
    assert (cursor, keys) == (b"0", [])
    assert await client.call("DBSIZE") == 31


async def test_flush_and_its_switch() -> None:
    env = make_env(RespConfig(allow_flush=False))
    c = env.client()
    await c.call("SET", "a", "1")
    assert await c.call("FLUSHALL") == Err(
        "ERR FLUSHALL is disabled on this server (RespConfig.allow_flush)"
    )
    await env.server.close()
    env = make_env()
    c = env.client()
    await c.call("SET", "a", "1")
    assert await c.call("FLUSHDB", "ASYNC") == OK
    assert await c.call("DBSIZE") == 0
    assert await c.call("FLUSHDB", "LATER") == Err("ERR syntax error")
    await env.server.close()


async def test_unknown_command_and_arity_errors_match_redis(env: Env, client: Client) -> None:
    assert await client.call("foo", "a", "b") == Err(
        "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    )
    assert await client.call("FOO") == Err("ERR unknown command 'FOO', with args beginning with: ")
    assert await client.call("GET") == Err("ERR wrong number of arguments for 'get' command")
    assert await client.call("get", "a", "b") == Err(
        "ERR wrong number of arguments for 'get' command"
    )
    assert await client.call("CLIENT", "SETNAME") == Err(
        "ERR wrong number of arguments for 'client|setname' command"
    )
    assert await client.call("CLIENT", "NOPE") == Err(
        "ERR unknown subcommand 'NOPE'. Try CLIENT HELP."
    )
    assert await client.call("PING") == Simple("PONG")  # still usable
    assert env.server.stats.error_replies == 6
    assert env.server.stats.commands_processed == 7


async def test_select_client_and_config(client: Client) -> None:
    assert await client.call("SELECT", "0") == OK
    assert await client.call("SELECT", "1") == Err("ERR DB index is out of range")
    assert await client.call("SELECT", "x") == Err("ERR value is not an integer or out of range")
    assert await client.call("CLIENT", "ID") == client.conn.id
    assert await client.call("CLIENT", "GETNAME") is None
    assert await client.call("CLIENT", "SETNAME", "worker-1") == OK
    assert await client.call("CLIENT", "SETNAME", "bad name") == Err(
        "ERR Client names cannot contain spaces, newlines or special characters."
    )
    assert await client.call("client", "getname") == b"worker-1"
    assert await client.call("CLIENT", "SETINFO", "LIB-NAME", "redis-py") == OK
    assert await client.call("CLIENT", "SETINFO", "LIB-VER", "8.1.0") == OK
    assert await client.call("CLIENT", "SETINFO", "COLOR", "x") == Err(
        "ERR Unrecognized option 'COLOR'"
    )
    listing = (await client.call("CLIENT", "LIST")).decode()
    assert "name=worker-1" in listing
    assert "lib-name=redis-py" in listing
    assert await client.call("CONFIG", "GET", "save") == [b"save", b""]
    assert await client.call("CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]
    assert await client.call("CONFIG", "SET", "save", "") == Err(
        "ERR CONFIG SET is not supported; configure peer-ring with RespConfig"
    )


async def test_info_sections(env: Env, client: Client) -> None:
    await client.call("SET", "k", "v")
    text = (await client.call("INFO")).decode()
    for needle in (
        "redis_version:7.2.0",
        "peer_ring_version:",
        f"peer_ring_build:{build()}\r\n",
        "arch_bits:64",
        "cluster_enabled:0",
        "connected_clients:1",
        "role:master",
        "db0:keys=1",
        "used_memory:",
        "total_commands_processed:",
    ):
        assert needle in text, needle
    only = (await client.call("INFO", "keyspace")).decode()
    assert "# Keyspace" in only
    assert "redis_version" not in only


async def test_command_table_drives_command_replies(client: Client) -> None:
    assert await client.call("COMMAND", "COUNT") == len(ALL_SPECS)
    infos = await client.call("COMMAND", "INFO", "get", "nosuch", "set")
    assert infos[0][0] == b"get"
    assert infos[0][1] == 2
    assert Simple("readonly") in infos[0][2]
    assert infos[1] is None
    assert infos[2][1] == -3
    assert infos[2][3:6] == [1, 1, 1]
    docs = await client.call("COMMAND", "DOCS", "get")
    assert isinstance(docs, list)
    assert docs[0] == b"get"
    everything = await client.call("COMMAND")
    names = {entry[0] for entry in everything}
    assert {b"get", b"set", b"hello", b"client", b"scan"} <= names
    assert len(everything) == len(ALL_SPECS)


async def test_requirepass_gates_commands_until_auth() -> None:
    env = make_env(RespConfig(requirepass="s3cret"))
    c = env.client()
    assert await c.call("GET", "k") == Err("NOAUTH Authentication required.")
    assert await c.call("PING") == Err("NOAUTH Authentication required.")
    assert (await c.call("HELLO", "3")).message.startswith("NOAUTH HELLO must be called")
    assert await c.call("AUTH", "wrong") == Err(
        "WRONGPASS invalid username-password pair or user is disabled."
    )
    assert await c.call("AUTH", "s3cret") == OK
    assert await c.call("PING") == Simple("PONG")
    c2 = env.client()
    reply = await c2.call("HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "x")
    assert reply[b"proto"] == 3
    assert await c2.call("GET", "k") is None
    assert await c2.call("RESET") == Simple("RESET")
    assert await c2.call("GET", "k") == Err("NOAUTH Authentication required.")
    await env.server.close()


async def test_auth_without_requirepass_is_an_error(client: Client) -> None:
    reply = await client.call("AUTH", "x")
    assert reply.message.startswith("ERR AUTH <password> called without any password")


async def test_multi_exec_runs_queued_commands_in_order(client: Client) -> None:
    assert await client.call("MULTI") == OK
    assert await client.call("SET", "a", "1") == Simple("QUEUED")
    assert await client.call("INCR", "a") == Simple("QUEUED")
    assert await client.call("GET", "a") == Simple("QUEUED")
    assert await client.call("EXEC") == [OK, 2, b"2"]
    assert await client.call("EXEC") == Err("ERR EXEC without MULTI")
    await client.call("MULTI")
    assert await client.call("GET") == Err("ERR wrong number of arguments for 'get' command")
    assert await client.call("EXEC") == Err(
        "EXECABORT Transaction discarded because of previous errors."
    )
    await client.call("MULTI")
    await client.call("SET", "a", "9")
    assert await client.call("DISCARD") == OK
    assert await client.call("GET", "a") == b"2"


async def test_pipelined_requests_get_one_coalesced_write(client: Client) -> None:
    writes = 0
    original = client.transport.write

    def counting(data: bytes | bytearray | memoryview) -> None:
        nonlocal writes
        writes += 1
        original(data)

    client.transport.write = counting  # type: ignore[method-assign]
    client.send(b"".join(encode_request("SET", f"k{i}", i) for i in range(20)) + b"PING\r\n")
    replies = [await client.read() for _ in range(21)]
    assert replies == [OK] * 20 + [Simple("PONG")]
    assert writes == 1


async def test_protocol_error_answers_earlier_requests_then_closes(env: Env) -> None:
    c = env.client()
    c.send(encode_request("SET", "a", "1") + b"*1\r\n$zz\r\n")
    assert await c.read() == OK
    assert await c.read() == Err("ERR Protocol error: invalid bulk length")
    await c.wait_closed()
    assert env.server.stats.protocol_errors == 1
    other = env.client()  # the server keeps serving
    assert await other.call("GET", "a") == b"1"


async def test_value_over_the_kv_limit_closes_with_protocol_error(env: Env) -> None:
    c = env.client()
    limit = env.kv.limits.max_value_size
    c.send(encode_request("SET", "k", b"x" * (limit + 1)))
    assert await c.read() == Err("ERR Protocol error: invalid bulk length")
    await c.wait_closed()


async def test_key_over_the_kv_limit_is_an_error_reply(env: Env, client: Client) -> None:
    big_key = b"k" * (env.kv.limits.max_key_size + 1)
    reply = await client.call("SET", big_key, "v")
    assert isinstance(reply, Err)
    assert reply.message.startswith("ERR key too large")
    assert await client.call("SET", "k", b"v" * env.kv.limits.max_value_size) == OK


async def test_quit_replies_then_closes(client: Client) -> None:
    client.send(encode_request("QUIT") + encode_request("PING"))
    assert await client.read() == OK
    await client.wait_closed()
    assert client.unread() == b""


async def test_pipeline_pauses_reading_over_the_buffer_limit() -> None:
    env = make_env(RespConfig(max_pipeline_bytes=64))
    c = env.client()
    c.send(b"".join(encode_request("PING") for _ in range(20)))
    assert not c.transport.is_reading()
    replies = [await c.read() for _ in range(20)]
    assert replies == [Simple("PONG")] * 20
    assert c.transport.is_reading()
    await env.server.close()


class FailingKV:
    """A KV whose every call fails with the error given: its coroutines raise
    it, its callback forms (``KVCallbacks``) complete with it."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.limits = make_env().kv.limits

    def start_get(
        self, key: bytes, done: Callable[[bytes | None, BaseException | None], None]
    ) -> None:
        done(None, self.exc)

    def start_put(
        self, key: bytes, value: bytes, done: Callable[[None, BaseException | None], None]
    ) -> None:
        done(None, self.exc)

    def __getattr__(self, name: str) -> object:
        async def fail(*args: object, **kwargs: object) -> None:
            raise self.exc

        return fail


@pytest.mark.parametrize(
    ("exc", "prefix"),
    [
        (QuorumNotReached(2, 1), "TRYAGAIN quorum not reached: 1 of 2"),
        (RequestTimeout("no answer in 1.0s"), "TRYAGAIN RequestTimeout: no answer"),
        (InvalidRequest("value too large"), "ERR value too large"),
        (RuntimeError("boom"), "ERR internal error: RuntimeError"),
    ],
)
async def test_kv_errors_map_to_error_replies_and_keep_the_connection(
    exc: Exception, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    from peer_ring.clock import ManualClock
    from peer_ring.server.resp import RespServer

    from .conftest import Client as C

    server = RespServer(FailingKV(exc), clock=ManualClock())  # type: ignore[arg-type]
    assert server.callbacks is not None
    c = C(server)
    # GET and SET in callback form, STRLEN and SET with options as coroutines
    for request in (("GET", "k"), ("SET", "k", "v"), ("STRLEN", "k"), ("SET", "k", "v", "EX", 9)):
        reply = await c.call(*request)
        assert isinstance(reply, Err), (request, reply)
        assert reply.message.startswith(prefix), (request, reply)
    assert await c.call("PING") == Simple("PONG")
    assert server.stats.error_replies == 4
    await server.close()
