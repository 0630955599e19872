"""Fuzz the SWIM gossip packet decoder and the HTTP fault-spec JSON body."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgpack
from hypothesis import example, given
from hypothesis import strategies as st

from peer_ring.membership.swim.keyring import Keyring
from peer_ring.membership.swim.wire import Dropped, decode_envelope
from peer_ring.server.http import parse_fault_spec
from tests.fuzz._settings import FUZZ

KEYRING = Keyring.from_hex(["00" * 32])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip


def _plain(body: bytes, label: bytes = b"") -> bytes:
    return bytes((0, len(label))) + label + body


@FUZZ
@given(st.binary(max_size=1500), st.booleans())
@example(b"\x00\x00" + msgpack.packb([1, 2, 3, "x"]) + b"\xc1", False)
@example(b"\x00\x05abc", False)  # label length beyond the packet
def test_gossip_packets_decode_or_drop(data: bytes, sealed: bool) -> None:
    try:
        header, messages = decode_envelope(
            data, label="", keyring=KEYRING if sealed else None, max_size=1400
        )
    except Dropped:
        return
    assert isinstance(messages, list)
    assert header is not None


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=30), json_values), max_size=5))
def test_gossip_bodies_of_msgpack_values_decode_or_drop(objs: list[Any]) -> None:
    body = b"".join(o if isinstance(o, bytes) else msgpack.packb(o) for o in objs)
    with contextlib.suppress(Dropped):
        decode_envelope(_plain(body), label="", keyring=None, max_size=1 << 16)


@FUZZ
@given(json_values)
@example({"drop": {"a": float("nan")}})
@example({"delay": {"a": True}})
@example({"drop": []})
def test_fault_spec_bodies_parse_or_fail_with_value_error(body: Any) -> None:
    json.dumps(body)  # it is a JSON value
    try:
        drop, delay = parse_fault_spec(body)
    except ValueError:
        return
    assert all(0.0 <= p <= 1.0 for p in drop.values())
    assert all(0.0 <= s <= 60.0 for s in delay.values())
