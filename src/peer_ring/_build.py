"""Which build of the hot path is running: compiled (mypyc) or pure Python.

``setup.py`` compiles :data:`HOT_MODULES` when ``PEER_RING_COMPILE=1`` and
reads the list from this file, so this module imports nothing of the package.
"""

from __future__ import annotations

import functools
import importlib.util
from importlib.machinery import EXTENSION_SUFFIXES

__all__ = ["HOT_MODULES", "build"]

#: The modules every RESP command and peer request passes through (measured
#: with bench/profile_resp.py): the RESP parser, dispatch, commands (their
#: callback forms), command table (each request reads its spec) and reply
#: encoder, the KV store, its local state and its
#: memory accounting (two calls per stored state), the
#: quorum coordinator, the app context, the wire module, versions and
#: clocks, and the peer transport engine with every channel (a compiled class
#: cannot be subclassed by an interpreted one, so all ChannelTransports go
#: together); the test for a handler's deferred answer (``_awaitable``); the
#: rate limiter's service and its lease/global clients (every decision).
HOT_MODULES = (
    "peer_ring.server.resp._parser",
    "peer_ring.server.resp._reply",
    "peer_ring.server.resp._server",
    "peer_ring.server.resp._commands",
    "peer_ring.server.resp._table",
    "peer_ring.apps.kv.store",
    "peer_ring.apps.kv.replica",
    "peer_ring.apps.kv._state",
    "peer_ring.apps.kv._memory",
    "peer_ring.apps.kv.local",
    "peer_ring.replication.coordinator",
    "peer_ring.versions",
    "peer_ring.hlc",
    "peer_ring.transport._core",
    "peer_ring.transport.tcp",
    "peer_ring.transport.memory",
    "peer_ring.transport.grpc_transport",
    "peer_ring.node",
    "peer_ring.cluster",
    "peer_ring._appcontext",
    "peer_ring.wire",
    "peer_ring.membership.failure",
    "peer_ring._awaitable",
    "peer_ring._records",
    "peer_ring.apps.ratelimit.limiter",
    "peer_ring.apps.ratelimit._modes",
)


@functools.cache
def build() -> str:
    """``"compiled"`` when every hot module loads from a C extension,
    ``"pure"`` when none does, ``"mixed"`` otherwise (a broken install).

    Found without importing the modules (the gRPC one is imported lazily)."""
    compiled = 0
    for name in HOT_MODULES:
        spec = importlib.util.find_spec(name)
        origin = (spec.origin if spec is not None else None) or ""
        compiled += origin.endswith(tuple(EXTENSION_SUFFIXES))
    if compiled == len(HOT_MODULES):
        return "compiled"
    return "pure" if compiled == 0 else "mixed"
