"""The reply kinds that plain ``bytes``/``str``/``frozenset`` cannot tell apart.

They live apart from the encoder in :mod:`._reply` because that module may be
compiled (mypyc, see ``setup.py``) and a compiled module cannot define
subclasses of ``str`` or ``frozenset``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RespSet", "Status", "Verbatim"]


class Status(str):
    """A simple string reply (``+...``), as opposed to a bulk string."""

    __slots__ = ()


class RespSet(frozenset[object]):
    """A set reply: RESP3 ``~``, an array in RESP2."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Verbatim:
    """A verbatim string reply (RESP3 ``=``, a bulk string in RESP2)."""

    text: bytes
    fmt: bytes = b"txt"
