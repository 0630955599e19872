"""Encoding of replies in RESP2 and RESP3.

Hot-path replies (``+OK``, bulk strings, integers, nulls) are built by the
small functions and constants here; structured replies (HELLO, INFO, COMMAND,
CONFIG GET) go through :func:`encode`, which picks the RESP3 type when the
connection negotiated protocol 3 and the RESP2 equivalent otherwise (a map
becomes a flat array, a set an array, a null ``$-1``/``*-1``, a verbatim
string a bulk string), the same downgrade rules Redis applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from peer_ring.server.resp._kinds import RespSet, Status, Verbatim

__all__ = [
    "EMPTY_ARRAY",
    "NIL2",
    "NIL3",
    "NIL_ARRAY2",
    "OK",
    "ONE",
    "PONG",
    "ZERO",
    "RespSet",
    "Status",
    "Verbatim",
    "bulk",
    "encode",
    "error",
    "integer",
]

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NIL2 = b"$-1\r\n"
NIL3 = b"_\r\n"
NIL_ARRAY2 = b"*-1\r\n"
EMPTY_ARRAY = b"*0\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"
_SMALL_INTS = [b":%d\r\n" % i for i in range(-2, 1024)]
#: the header of a bulk string of each length below 1024 (no formatting per reply)
_BULK_HEADS: Final = [b"$%d\r\n" % i for i in range(1024)]


def bulk(value: bytes) -> bytes:
    """Encode a bulk string."""
    n = len(value)
    if n < 1024:
        return _BULK_HEADS[n] + value + b"\r\n"
    return b"$%d\r\n%b\r\n" % (n, value)


def integer(value: int) -> bytes:
    """Encode an integer reply."""
    if -2 <= value < 1022:
        return _SMALL_INTS[value + 2]
    return b":%d\r\n" % value


def error(message: str) -> bytes:
    """Encode an error reply; ``message`` starts with its code (``ERR ...``).

    CR and LF inside the message would break the framing: they become spaces.
    """
    if "\r" in message or "\n" in message:
        message = message.replace("\r", " ").replace("\n", " ")
    return b"-" + message.encode("utf-8", "replace") + b"\r\n"


def encode(value: object, resp3: bool) -> bytes:
    """Encode a structured value (see module docstring for the type mapping)."""
    parts: list[bytes] = []
    _encode_into(value, resp3, parts)
    return b"".join(parts)


def _encode_into(value: object, resp3: bool, out: list[bytes]) -> None:
    if value is None:
        out.append(NIL3 if resp3 else NIL2)
    elif isinstance(value, bool):
        out.append((b"#t\r\n" if value else b"#f\r\n") if resp3 else (ONE if value else ZERO))
    elif isinstance(value, int):
        out.append(integer(value))
    elif isinstance(value, bytes):
        out.append(bulk(value))
    elif isinstance(value, Status):
        out.append(b"+%b\r\n" % value.encode())
    elif isinstance(value, str):
        out.append(bulk(value.encode()))
    elif isinstance(value, Verbatim):
        if resp3:
            out.append(b"=%d\r\n%b:%b\r\n" % (len(value.text) + 4, value.fmt, value.text))
        else:
            out.append(bulk(value.text))
    elif isinstance(value, Mapping):
        out.append(b"%%%d\r\n" % len(value) if resp3 else b"*%d\r\n" % (2 * len(value)))
        for k, v in value.items():
            _encode_into(k, resp3, out)
            _encode_into(v, resp3, out)
    elif isinstance(value, RespSet):
        out.append(b"~%d\r\n" % len(value) if resp3 else b"*%d\r\n" % len(value))
        for item in sorted(value, key=str):
            _encode_into(item, resp3, out)
    elif isinstance(value, list | tuple):
        out.append(b"*%d\r\n" % len(value))
        for item in value:
            _encode_into(item, resp3, out)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as RESP")
