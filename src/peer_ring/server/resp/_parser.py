"""Incremental, bounded parser for client requests in the Redis protocol.

Requests are either *multibulk* (``*<n>\\r\\n`` followed by ``n`` bulk strings
``$<len>\\r\\n<bytes>\\r\\n``, what every client library sends) or *inline*
(one line of space-separated words, what a human types into telnet; quotes
follow the rules of Redis's ``sdssplitargs``). See the RESP specification,
https://redis.io/docs/latest/develop/reference/protocol-spec/ .

Invariants:

* Memory is bounded: a bulk string longer than ``max_bulk_len``, a multibulk
  count above ``max_multibulk_len``, an inline line or header longer than
  ``max_inline_len`` or a request whose bulk payload totals more than
  ``max_request_size`` raise :class:`RespProtocolError` *before* the bytes
  are buffered, so a connection never holds much more than one request plus
  one network read.
* Feeding a stream in any split (byte by byte, or many requests per read)
  yields exactly the same requests in the same order. Partial multibulk state
  (the arguments read so far) is kept across feeds, so a request is scanned
  once, never re-parsed from its start; bytes of an incomplete large bulk are
  collected in a list and joined once when the bulk is complete.
* After a :class:`RespProtocolError` the parser is dead: the connection must
  be closed (the stream position is unknowable). Requests completed before
  the error in the same feed are returned on the exception's ``parsed``.
"""

from __future__ import annotations

from typing import Final

from mypy_extensions import i64

from peer_ring.errors import ProtocolError

__all__ = ["RespParser", "RespProtocolError", "split_inline"]

# ``Final``: compiled, these are constants, not a module-dict lookup per use.
_CRLF: Final = b"\r\n"
_STAR: Final = 42  # ord("*")
_DOLLAR: Final = 36  # ord("$")
_CR: Final = 13
_LF: Final = 10
_ZERO: Final = 48  # ord("0")
_NINE: Final = 57  # ord("9")
# Longest "*<count>" or "$<len>" header line Redis accepts before erroring.
_MAX_HEADER: Final = 64 * 1024
# Most digits of a header the fast path reads (any longer one takes the
# general path, which errors on it as before).
_FAST_DIGITS: Final = 18


def _fast_header(data: bytes, pos: i64, n: i64) -> tuple[i64, i64]:
    """The fast path of a ``*<count>`` or ``$<len>`` header at ``pos``: its
    value and the index of its CR, when digits then CRLF lie within
    ``data[:n]`` -- no ``find``, slice or ``int()`` per header, which were
    most of a small command's parsing cost. ``(0, -1)`` for anything else (a
    sign, no digit, more than ``_FAST_DIGITS``, a partial line): the caller
    then parses the header the general way, with its errors. Compiled, the
    pair is an unboxed tuple (nothing allocated) and the arithmetic is on
    native 64-bit integers (``i64``: no tag checks), the digits counted
    before they could overflow."""
    value: i64 = 0
    nl: i64 = pos + 1
    end: i64 = pos + 1 + _FAST_DIGITS  # a digit here is one too many
    while nl < n:
        c: i64 = data[nl]
        if _ZERO <= c <= _NINE:
            if nl >= end:
                return 0, -1
            value = value * 10 + (c - _ZERO)
            nl += 1
            continue
        if (
            c != _CR
            or nl == pos + 1
            or nl + 1 >= n
            or data[nl + 1] != _LF
            or nl - pos > _FAST_DIGITS
        ):
            return 0, -1
        return value, nl
    return 0, -1


class RespProtocolError(ProtocolError):
    """A client sent bytes that are not a valid (or allowed) RESP request.

    The message is what the client is told after ``-ERR Protocol error: ``;
    the connection is then closed. The server keeps serving other clients.
    ``parsed`` holds the requests completed before the bad bytes, which are
    still executed and answered first (like Redis).
    """

    code = "RESP_PROTOCOL"

    def __init__(self, message: str, parsed: list[list[bytes]] | None = None) -> None:
        super().__init__(message)
        self.parsed: list[list[bytes]] = parsed if parsed is not None else []


class RespParser:
    """Turns a byte stream into requests (lists of byte-string arguments).

    ``max_bulk_len``: longest bulk string (bytes). ``max_multibulk_len``: most
    arguments in one request. ``max_inline_len``: longest inline request or
    header line (bytes). ``max_request_size``: most bulk payload bytes in one
    request.
    """

    __slots__ = (
        "_args",
        "_chunks",
        "_dead",
        "_have",
        "_need",
        "_remaining",
        "_req_bytes",
        "max_bulk_len",
        "max_inline_len",
        "max_multibulk_len",
        "max_request_size",
    )

    def __init__(
        self,
        *,
        max_bulk_len: int = 512 * 1024 * 1024,
        max_multibulk_len: int = 1024 * 1024,
        max_inline_len: int = 64 * 1024,
        max_request_size: int = 256 * 1024 * 1024,
    ) -> None:
        self.max_bulk_len = max_bulk_len
        self.max_multibulk_len = max_multibulk_len
        self.max_inline_len = max_inline_len
        self.max_request_size = max_request_size
        self._chunks: list[bytes] = []  # unparsed bytes, in arrival order
        self._have = 0  # total length of _chunks
        self._need = 1  # bytes _chunks must hold before parsing can progress
        self._args: list[bytes] = []  # arguments of the request being read
        self._remaining = 0  # arguments still to read for that request
        self._req_bytes = 0  # bulk payload bytes of that request so far
        self._dead = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a complete request."""
        return self._have + self._req_bytes

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Add ``data``; return the requests it completed (possibly none).

        Raises :class:`RespProtocolError` on malformed or oversized input.
        """
        if self._dead:
            raise RespProtocolError("connection already failed")
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._have = 0
        elif len(data) < self._need:
            if data:
                self._chunks.append(data)
                self._have = len(data)
            return []
        try:
            return self._parse(data)
        except RespProtocolError:
            self._dead = True
            self._chunks.clear()
            self._have = 0
            raise

    def _keep(self, data: bytes, pos: int, need: int) -> None:
        """Keep ``data[pos:]`` for the next feed; progress needs ``need`` bytes of it."""
        if pos < len(data):
            rest = data[pos:] if pos else data
            self._chunks.append(rest)
            self._have = len(rest)
        self._need = need

    def _parse(self, data: bytes) -> list[list[bytes]]:
        out: list[list[bytes]] = []
        n = len(data)
        pos = 0
        find = data.find
        args = self._args
        remaining = self._remaining
        # plain ints, not the fast scan's i64: a header past 64 bits read by
        # the general path (int()) must keep its value, as uncompiled
        count: int
        blen: int
        try:
            while pos < n:
                if not remaining:
                    if data[pos] == _STAR:
                        count, nl = _fast_header(data, pos, n)
                        if nl < 0:  # the general path (a sign, bad or partial input)
                            nl = find(_CRLF, pos)
                            if nl < 0:
                                if n - pos > _MAX_HEADER:
                                    raise RespProtocolError("too big mbulk count string")
                                self._keep(data, pos, n - pos + 1)
                                return out
                            try:
                                count = int(data[pos + 1 : nl])
                            except ValueError:
                                raise RespProtocolError("invalid multibulk length") from None
                        if count > self.max_multibulk_len:
                            raise RespProtocolError("invalid multibulk length")
                        pos = nl + 2
                        if count <= 0:  # Redis ignores empty multibulk requests
                            continue
                        remaining = count
                        args = []
                        self._req_bytes = 0
                    else:
                        nl = find(b"\n", pos)
                        if nl < 0:
                            if n - pos > self.max_inline_len:
                                raise RespProtocolError("too big inline request")
                            self._keep(data, pos, n - pos + 1)
                            return out
                        if nl - pos > self.max_inline_len:
                            raise RespProtocolError("too big inline request")
                        line = data[pos:nl]
                        pos = nl + 1
                        words = split_inline(line)
                        if words:
                            out.append(words)
                        continue
                # Reading the arguments of a multibulk request.
                while remaining:
                    if pos >= n:
                        self._keep(data, pos, 1)
                        return out
                    if data[pos] != _DOLLAR:
                        raise RespProtocolError(f"expected '$', got {chr(data[pos])!r}")
                    blen, nl = _fast_header(data, pos, n)
                    if nl < 0:  # the general path (a sign, bad or partial input)
                        nl = find(_CRLF, pos)
                        if nl < 0:
                            if n - pos > _MAX_HEADER:
                                raise RespProtocolError("too big bulk count string")
                            self._keep(data, pos, n - pos + 1)
                            return out
                        try:
                            blen = int(data[pos + 1 : nl])
                        except ValueError:
                            raise RespProtocolError("invalid bulk length") from None
                    if blen < 0 or blen > self.max_bulk_len:
                        raise RespProtocolError("invalid bulk length")
                    start = nl + 2
                    end = start + blen
                    if end + 2 > n:
                        if self._req_bytes + blen > self.max_request_size:
                            raise RespProtocolError("request exceeds the query buffer limit")
                        self._keep(data, pos, end + 2 - pos)
                        return out
                    if data[end] != _CR or data[end + 1] != _LF:
                        raise RespProtocolError("expected CRLF after bulk string")
                    self._req_bytes += blen
                    if self._req_bytes > self.max_request_size:
                        raise RespProtocolError("request exceeds the query buffer limit")
                    args.append(data[start:end])
                    pos = end + 2
                    remaining -= 1
                out.append(args)
                self._req_bytes = 0
            self._need = 1
            return out
        except RespProtocolError as exc:
            exc.parsed = out
            raise
        finally:
            self._args = args
            self._remaining = remaining


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline request line into arguments, like Redis's ``sdssplitargs``.

    Words are separated by spaces/tabs; ``"..."`` strings understand the
    escapes ``\\n \\r \\t \\b \\a \\\\ \\" \\xHH``; ``'...'`` strings only ``\\'``.
    A closing quote must be followed by a space or the end of the line.
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    if b'"' not in line and b"'" not in line:
        return line.split()
    out: list[bytes] = []
    i = 0
    n = len(line)
    while True:
        while i < n and line[i] in b" \t\n\r\v\f":
            i += 1
        if i >= n:
            return out
        cur = bytearray()
        inq = False  # inside "double quotes"
        insq = False  # inside 'single quotes'
        while True:
            if inq:
                if i >= n:
                    raise RespProtocolError("unbalanced quotes in request")
                c = line[i]
                if c == 0x5C and i + 3 < n and line[i + 1] == 0x78 and _is_hex(line[i + 2 : i + 4]):
                    cur.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 0x5C and i + 1 < n:
                    i += 1
                    cur.append(_ESCAPES.get(line[i], line[i]))
                elif c == 0x22:
                    if i + 1 < n and line[i + 1] not in b" \t\n\r\v\f":
                        raise RespProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                else:
                    cur.append(c)
            elif insq:
                if i >= n:
                    raise RespProtocolError("unbalanced quotes in request")
                c = line[i]
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    i += 1
                    cur.append(0x27)
                elif c == 0x27:
                    if i + 1 < n and line[i + 1] not in b" \t\n\r\v\f":
                        raise RespProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                else:
                    cur.append(c)
            else:
                if i >= n:
                    break
                c = line[i]
                if c in b" \t\n\r\v\f":
                    break
                if c == 0x22:
                    inq = True
                elif c == 0x27:
                    insq = True
                else:
                    cur.append(c)
            i += 1
        out.append(bytes(cur))


_ESCAPES = {0x6E: 0x0A, 0x72: 0x0D, 0x74: 0x09, 0x62: 0x08, 0x61: 0x07}


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)
