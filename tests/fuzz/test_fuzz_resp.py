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


#: header texts around the parser's fast path (ASCII digits then CRLF): signs,
#: spaces, underscores, leading zeros, very long numbers
_HEADERS = st.one_of(
    st.from_regex(rb"\A[-+ _0-9]{0,24}\Z"),
    st.from_regex(rb"\A0*[0-9]{1,22}\Z"),
    st.binary(max_size=24),
).filter(lambda h: b"\r\n" not in h)


def _parse(data: bytes, cuts: list[int]) -> tuple[list[list[bytes]], str | None, int]:
    """The requests parsed, the protocol error's message (or None) and the
    bytes left buffered."""
    parser = RespParser(**LIMITS)
    got: list[list[bytes]] = []
    try:
        for chunk in _chunks(data, cuts):
            got += parser.feed(chunk)
    except RespProtocolError as exc:
        return got, str(exc), parser.buffered
    return got, None, parser.buffered


def _int_or_none(header: bytes) -> int | None:
    try:
        return int(header)
    except ValueError:
        return None


@FUZZ
@given(_HEADERS, st.lists(st.integers(0, 64), max_size=4))
@example(b"3", [])
@example(b"03", [])
@example(b"+3", [])
@example(b" 3", [])
@example(b"3_0", [])
@example(b"9" * 19, [])
@example(b"3\r", [])
def test_bulk_length_headers_read_as_int_does(header: bytes, cuts: list[int]) -> None:
    """A bulk length is what ``int()`` makes of the header line (the fast
    path for plain digits gives the same length or error as the general one)."""
    payload = b"x" * 40
    got, error, buffered = _parse(b"*1\r\n$" + header + b"\r\n" + payload + b"\r\n", cuts)
    length = _int_or_none(header)
    if length is None or not 0 <= length <= LIMITS["max_bulk_len"]:
        assert error == "invalid bulk length"
    elif length < len(payload):
        assert error == "expected CRLF after bulk string"
    elif length == len(payload):
        assert (got, error, buffered) == ([[payload]], None, 0)
    else:  # waits for the rest of the bulk
        assert (got, error) == ([], None)


@FUZZ
@given(_HEADERS, st.lists(st.integers(0, 64), max_size=4))
@example(b"2", [])
@example(b"-1", [])
@example(b"+2", [])
@example(b"002", [])
@example(b"9" * 19, [])
def test_multibulk_count_headers_read_as_int_does(header: bytes, cuts: list[int]) -> None:
    """A multibulk count is what ``int()`` makes of the header line; a count
    of zero or less is an empty request, skipped (as Redis does)."""
    count = _int_or_none(header)
    n = count if count is not None and 0 < count <= LIMITS["max_multibulk_len"] else 0
    data = b"*" + header + b"\r\n" + b"$1\r\na\r\n" * n + b"*1\r\n$4\r\nPING\r\n"
    got, error, _ = _parse(data, cuts)
    if count is None or count > LIMITS["max_multibulk_len"]:
        assert error == "invalid multibulk length"
    else:
        assert (got, error) == (([[b"a"] * n] if n else []) + [[b"PING"]], None)
