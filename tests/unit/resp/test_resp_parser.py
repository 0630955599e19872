"""The incremental RESP request parser: splits, pipelining, inline, limits."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer_ring.errors import ProtocolError
from peer_ring.server.resp import RespParser, RespProtocolError, split_inline

from .conftest import encode_request


def feed_all(parser: RespParser, chunks: list[bytes]) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


def test_single_multibulk_request() -> None:
    assert RespParser().feed(b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n") == [[b"GET", b"foo"]]


def test_pipelined_requests_in_one_read_come_out_in_order() -> None:
    data = b"".join(encode_request("SET", f"k{i}", f"v{i}") for i in range(50))
    out = RespParser().feed(data)
    assert out == [[b"SET", f"k{i}".encode(), f"v{i}".encode()] for i in range(50)]


def test_byte_by_byte_feeding_gives_the_same_requests() -> None:
    data = (
        encode_request("SET", "key", b"va\r\nl\x00ue")
        + b"PING\r\n"
        + encode_request("MGET", "a", "b", "")
        + b"ECHO 'hi there'\n"
    )
    parser = RespParser()
    out = feed_all(parser, [data[i : i + 1] for i in range(len(data))])
    assert out == [
        [b"SET", b"key", b"va\r\nl\x00ue"],
        [b"PING"],
        [b"MGET", b"a", b"b", b""],
        [b"ECHO", b"hi there"],
    ]
    assert parser.buffered == 0


@settings(max_examples=60, deadline=None)
@given(
    requests=st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=5), max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_split_of_a_stream_parses_identically(
    requests: list[list[bytes]], cuts: list[int]
) -> None:
    data = b"".join(encode_request(*r) for r in requests)
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert feed_all(RespParser(), chunks) == requests


def test_large_bulk_split_across_reads_is_joined_once() -> None:
    value = bytes(range(256)) * 400
    data = encode_request("SET", "big", value)
    parser = RespParser()
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    out = feed_all(parser, chunks)
    assert out == [[b"SET", b"big", value]]


def test_inline_commands_split_on_whitespace_and_understand_quotes() -> None:
    parser = RespParser()
    out = parser.feed(b'SET k "a b\\r\\n\\x41"\r\nGET\tk\r\n\r\nPING\n')
    assert out == [[b"SET", b"k", b"a b\r\nA"], [b"GET", b"k"], [b"PING"]]


def test_split_inline_single_quotes_and_errors() -> None:
    assert split_inline(b"SET 'it\\'s' x") == [b"SET", b"it's", b"x"]
    with pytest.raises(RespProtocolError, match="unbalanced quotes"):
        split_inline(b'SET "abc')
    with pytest.raises(RespProtocolError, match="unbalanced quotes"):
        split_inline(b'SET "abc"def')


def test_empty_multibulk_is_ignored() -> None:
    assert RespParser().feed(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n") == [[b"PING"]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*2\r\n:3\r\nGET\r\n", "expected '\\$', got ':'"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n$abc\r\n", "invalid bulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$3\r\nGETXX", "expected CRLF after bulk string"),
        # headers past 64-bit integers (the fast scan's i64 arithmetic hands
        # them to the general path, whose errors they get)
        (b"*99999999999999999999999\r\n", "invalid multibulk length"),
        (b"*1\r\n$99999999999999999999999\r\n", "invalid bulk length"),
        (b"*1\r\n$-99999999999999999999999\r\n", "invalid bulk length"),
        (b"*1\r\n$999999999999999999\r\n", "invalid bulk length"),  # 18 digits
    ],
)
def test_malformed_input_raises_protocol_error(data: bytes, message: str) -> None:
    with pytest.raises(RespProtocolError, match=message) as info:
        RespParser().feed(data)
    assert isinstance(info.value, ProtocolError)


def test_a_huge_negative_multibulk_count_is_ignored_like_any_below_one() -> None:
    # past 64 bits, read by the general path: the same as the build without i64
    assert RespParser().feed(b"*-99999999999999999999999\r\n*1\r\n$4\r\nPING\r\n") == [[b"PING"]]


def test_headers_of_up_to_eighteen_digits_and_signs_parse_exactly() -> None:
    # 17 digits: the fast scan; 18 or a sign: the general path (same values)
    data = b"*+1\r\n$00000000000000005\r\nhello\r\n*1\r\n$000000000000000003\r\nabc\r\n"
    assert RespParser().feed(data) == [[b"hello"], [b"abc"]]


def test_oversized_bulk_is_rejected_from_its_header_alone() -> None:
    parser = RespParser(max_bulk_len=100)
    assert parser.feed(b"*2\r\n$3\r\nSET\r\n") == []
    with pytest.raises(RespProtocolError, match="invalid bulk length"):
        parser.feed(b"$101\r\n")  # no payload sent: nothing buffered before the check


def test_too_many_arguments_is_rejected() -> None:
    with pytest.raises(RespProtocolError, match="invalid multibulk length"):
        RespParser(max_multibulk_len=3).feed(b"*4\r\n")


def test_request_size_limit_counts_all_bulks_of_a_request() -> None:
    parser = RespParser(max_request_size=10)
    with pytest.raises(RespProtocolError, match="query buffer limit"):
        parser.feed(encode_request("SET", "kkkk", "vvvvvv"))


def test_too_big_inline_request_is_rejected_without_newline() -> None:
    parser = RespParser(max_inline_len=16)
    assert parser.feed(b"PING aaaaaaa") == []
    with pytest.raises(RespProtocolError, match="too big inline request"):
        parser.feed(b"b" * 20)


def test_requests_before_the_error_are_kept_on_the_exception() -> None:
    parser = RespParser()
    with pytest.raises(RespProtocolError) as info:
        parser.feed(encode_request("PING") + b"*1\r\n$x\r\n")
    assert info.value.parsed == [[b"PING"]]
    with pytest.raises(RespProtocolError, match="already failed"):
        parser.feed(encode_request("PING"))
