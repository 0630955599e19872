"""The RESP surface over a one-node KVStore (N=1): pipelined plain SETs and
GETs go through the store's own batch and write path called natively
(``_commands.start_set``/``start_get``, ``KVStore._solo_write``'s direct
flat write); every SET option, errors and the per-command counts stay exact."""

from __future__ import annotations

from peer_ring.apps.kv.store import KVConfig
from peer_ring.server.resp import RespConfig, RespServer
from tests.unit.kv.conftest import ClusterFactory
from tests.unit.resp.conftest import Client, Err, Simple, encode_request


async def test_pipelined_sets_with_and_without_options_on_one_node(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(1, KVConfig(conflicts="lww"))
    (store,) = cluster.stores
    server = RespServer(store, config=RespConfig(), clock=cluster.clock)
    client = Client(server)
    requests = [
        ("SET", "a", "1"), ("SET", "b", "2"), ("SET", "a", "3"),  # plain: the group
        ("SET", "a", "4", "EX", "100"), ("SET", "c", "5", "NX"), ("SET", "c", "6", "NX"),
        ("SET", "a", "7", "XX", "GET"), ("SET", "d", "8", "XX"), ("SET", "b", "9", "KEEPTTL"),
        ("SET", "e", "10", "PX", "5000"), ("SET", "f", "1", "EX", "0"),
        ("SET", "f", "1", "NX", "XX"),
        ("SET", "g", "11"), ("SET", "g", "12"),  # a repeated key splits the group
        ("GET", "a"), ("GET", "b"), ("GET", "c"), ("GET", "d"), ("GET", "e"), ("GET", "g"),
    ]  # fmt: skip
    client.send(b"".join(encode_request(*r) for r in requests))
    replies = [await client.read() for _ in requests]
    ok = Simple("OK")
    assert replies == [
        ok, ok, ok, ok, ok, None, b"4", None, ok, ok,
        Err("ERR invalid expire time in 'set' command"), Err("ERR syntax error"), ok, ok,
        b"7", b"9", b"5", None, b"10", b"12",
    ]  # fmt: skip
    assert await client.call("PTTL", "e") == 5000
    assert await client.call("TTL", "a") == -1  # SET ... XX GET without EX cleared it
    assert await client.call("TTL", "b") == -1
    await cluster.clock.advance(6)
    assert await client.call("GET", "e") is None
    assert server.stats.per_command()["set"] == 14
    assert server.stats.per_command()["get"] == 7
    # a lone plain SET and GET: the store's callback forms, called natively
    assert await client.call("SET", "h", "x") == ok
    assert await client.call("GET", "h") == b"x"
    assert await store.get(b"h") == b"x"
    await server.close()
