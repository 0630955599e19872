"""Fuzz the RESP parser: bytes from the network, in any chunking."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from peer_ring.server.resp._parser import RespParser, RespProtocolError
from tests.fuzz._settings import FUZZ

LIMITS = {"max_bulk_len": 4096, "max_multibulk_len": 64, "max_inline_len": 1024,
          "max_request_size": 16 * 1024}  # fmt: skip


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


def _encode(args: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


@FUZZ
@given(st.binary(max_size=2048), st.lists(st.integers(0, 4096), max_size=8))
@example(b"*2147483648\r\n", [])  # a huge multibulk count: refused, nothing allocated
@example(b"$-5\r\n", [])
@example(b"*1\r\n$999999999999\r\n", [3])
@example(b"\r\n\r\n\r\n", [1, 2])
def test_arbitrary_bytes_parse_or_fail_cleanly(data: bytes, cuts: list[int]) -> None:
    parser = RespParser(**LIMITS)
    try:
        for chunk in _chunks(data, cuts):
            for request in parser.feed(chunk):
                assert isinstance(request, list)
                assert all(type(a) is bytes for a in request)
                assert len(request) <= LIMITS["max_multibulk_len"]
            # bounded memory: never more than one request's worth is held
            assert parser.buffered <= LIMITS["max_request_size"] + LIMITS["max_inline_len"] + 64
    except RespProtocolError:
        pass


@FUZZ
@given(
    st.lists(st.lists(st.binary(max_size=64), min_size=1, max_size=8), min_size=1, max_size=8),
    st.lists(st.integers(0, 4096), max_size=16),
)
def test_well_formed_pipelines_round_trip_in_any_chunking(
    requests: list[list[bytes]], cuts: list[int]
) -> None:
    data = b"".join(_encode(r) for r in requests)
    parser = RespParser(**LIMITS)
    got: list[list[bytes]] = []
    for chunk in _chunks(data, cuts):
        got += parser.feed(chunk)
    assert got == requests
    assert parser.buffered == 0
