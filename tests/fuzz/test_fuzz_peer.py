"""Fuzz what a node reads from the peer port: the frame splitter, the frame
decoder, the handshake/session state machine and the node's dispatch."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import msgpack
from hypothesis import example, given
from hypothesis import strategies as st

from peer_ring import NodeConfig
from peer_ring.errors import PeerRingError, ProtocolError
from peer_ring.node import Node
from peer_ring.transport import MemoryNetwork, PeerAuthConfig, TransportConfig, create_transport
from peer_ring.transport._core import FrameConn, FrameReceiver, decode_frame
from peer_ring.transport.base import PeerInfo
from tests.fuzz._settings import FUZZ

#: msgpack values a hostile peer can send
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=4),
    max_leaves=20,
)  # fmt: skip
OPS = ["p", "m", "st", "s", "sd", "cv", "h", "hd", "ae", "ae_get", "xf_done", "xf_fail",
       "xf_plan", "xf_at", "leave", "kv", "bench", "nope"]  # fmt: skip
messages = st.one_of(values, st.builds(lambda op, rest: [op, *rest], st.sampled_from(OPS),
                                       st.lists(values, max_size=8)))  # fmt: skip


@FUZZ
@given(st.binary(max_size=512))
@example(b"\xdd\xff\xff\xff\xff")  # an array header claiming 4 G elements
@example(msgpack.packb([4, 3]))  # a short HELLO
def test_decode_frame_returns_a_typed_array_or_protocol_error(data: bytes) -> None:
    try:
        frame = decode_frame(data)
    except ProtocolError:
        return
    assert type(frame) is list
    assert type(frame[0]) is int


class _Conn(FrameConn):
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False

    def write(self, frame: bytes) -> None:
        self.out.append(frame)

    def buffered(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


def _session(auth: PeerAuthConfig | None) -> tuple[Any, FrameReceiver, _Conn, list[Any]]:
    t = create_transport("memory", "me", "me:1", TransportConfig(auth=auth),
                         network=MemoryNetwork())  # fmt: skip
    seen: list[Any] = []
    t.set_handler(lambda message, peer: seen.append((message, peer)))
    conn = _Conn()
    return t, t._accept(conn), conn, seen


#: fields that get a frame past the first checks: version, cluster, a nonce
plausible = st.one_of(values, st.sampled_from([3, "peer-ring", b"n" * 16, "n2", "n2:1", 0, 1]))
typed_frames = st.builds(
    lambda kind, rest: msgpack.packb([kind, *rest], use_bin_type=True),
    st.integers(0, 9), st.lists(plausible, max_size=6),
)  # fmt: skip


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=64), values.map(msgpack.packb), typed_frames),
                max_size=6), st.booleans())  # fmt: skip
@example([b"\x91\x04"], False)  # found by this target: a one-field HELLO raised ValueError
async def test_a_session_never_raises_and_serves_nobody_before_the_handshake(
    frames: list[bytes], secret: bool
) -> None:
    auth = PeerAuthConfig(cluster_secret="s" * 20) if secret else None
    _t, session, _conn, seen = _session(auth)
    for data in frames:
        session.frame(data)  # must not raise, whatever arrives
    # without a valid HELLO (and, with a secret, a valid AUTH) nothing reaches the handler
    hello = [f for f in frames if _is_hello(f)]
    if not hello or secret:
        assert seen == []
    for _message, peer in seen:  # whoever got through announced themselves in a HELLO
        assert isinstance(peer, PeerInfo)


def _is_hello(data: bytes) -> bool:
    try:
        f = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:
        return False
    return type(f) is list and len(f) >= 5 and f[0] == 4


@FUZZ
@given(messages, st.booleans(), st.booleans())
@example(["m", [{"id": 1}]], True, True)
@example(["s", "kv", "get", b"k", 10**30, None, "x", "e"], True, True)
@example(["cv", "kv", "scan", [1, -1], None, "x", "e"], True, True)
async def test_node_dispatch_answers_or_raises_a_peer_ring_error(
    message: Any, member: bool, admin: bool
) -> None:
    node = Node(NodeConfig(node_id="n1", transport="memory"), network=MemoryNetwork())
    try:
        result = node._dispatch(message, PeerInfo("n2", "n2:1", member, admin))
        if inspect.isawaitable(result):
            await asyncio.wait_for(result, 5)
    except PeerRingError:
        pass
    finally:
        await node.stop()
