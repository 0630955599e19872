"""A Redis-protocol (RESP2/RESP3) server over the key-value store.

Any Redis client (redis-py, redis-cli, redis-benchmark, Jedis, go-redis...)
can talk to a :class:`RespServer` serving any
:class:`~peer_ring.apps.kv.api.KVApi` -- the replicated ``KVStore`` or the
single-process :class:`~peer_ring.apps.kv.local.LocalKV`. Supported commands
and their semantics in a distributed store: ``docs/resp.md``.

    kv = LocalKV()
    async with RespServer(kv, host="127.0.0.1", port=6379) as server:
        ...  # redis-cli -p 6379 set hello world

The protocol is the Redis Serialization Protocol (RESP2, and RESP3 after
``HELLO 3``): https://redis.io/docs/latest/develop/reference/protocol-spec/
"""

# Public API
# Importing the handlers fills the command table.
from peer_ring.server.resp import _pubsub, _streams  # noqa: F401 - register their commands
from peer_ring.server.resp._commands import REDIS_VERSION, parse_int
from peer_ring.server.resp._config import RespConfig
from peer_ring.server.resp._parser import RespParser, RespProtocolError, split_inline
from peer_ring.server.resp._server import RespConnection, RespServer, RespStats, map_error
from peer_ring.server.resp._table import ALL_SPECS, CommandError, CommandSpec, lookup

__all__ = [
    "ALL_SPECS",
    "REDIS_VERSION",
    "CommandError",
    "CommandSpec",
    "RespConfig",
    "RespConnection",
    "RespParser",
    "RespProtocolError",
    "RespServer",
    "RespStats",
    "lookup",
    "map_error",
    "parse_int",
    "split_inline",
]
