"""The records built once per command on the hot path: a replica's
:class:`Request` and a quorum round's :class:`QuorumResult`.

Part of the app API, imported from :mod:`peer_ring.service` (and
:mod:`peer_ring.app`); they live in this module of their own so that the
compiled build (``peer_ring._build.HOT_MODULES``) compiles them: the
coordinator, the node and the KV store build one or two per command, and a
compiled class with its own ``__init__`` is built by a native constructor
(a compiled *dataclass* still runs the interpreted ``__init__`` that
:mod:`dataclasses` generates: about 2,000 instructions each, measured with
``bench/resp_instructions.py``). So they are plain classes with the
dataclass's constructor, fields, ``repr`` and ``==``.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["QuorumResult", "Request"]


class Request:
    """A command arriving at a replica.

    ``origin`` is the id of the node that coordinates the operation (this
    node's own id for local calls). ``partition`` is the key's partition under
    the coordinator's ring. Read-only by convention: one is built for every
    replica command.
    """

    __slots__ = ("command", "key", "origin", "partition", "payload")

    def __init__(self, command: str, key: bytes, partition: int, payload: Any, origin: str) -> None:
        self.command = command
        self.key = key
        self.partition = partition
        self.payload = payload
        self.origin = origin

    def _fields(self) -> tuple[Any, ...]:
        return (self.command, self.key, self.partition, self.payload, self.origin)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return (
            f"Request(command={self.command!r}, key={self.key!r}, "
            f"partition={self.partition!r}, payload={self.payload!r}, origin={self.origin!r})"
        )


class QuorumResult:
    """Answers gathered by the time a quorum round reached its quorum.

    ``acks`` holds ``(node_id, answer)`` pairs in arrival order, ``errors``
    the failures seen so far, ``targets`` every node the command went to.
    ``answers`` fills with every successful answer, late ones included, as
    they arrive; once every target answered or failed, the round's
    ``on_complete`` callback runs (read repair), or -- for callers that gave
    none and no listener -- ``complete`` resolves (never fails) with them.
    ``hinted`` maps each fallback that stood in for a down owner (sloppy
    quorum) to that owner. Each of ``hinted``, ``acks``, ``errors`` and
    ``answers`` left out is a new empty one.
    """

    __slots__ = ("acks", "answers", "complete", "errors", "hinted", "targets")

    def __init__(
        self,
        targets: tuple[str, ...],
        hinted: dict[str, str] | None = None,
        acks: list[tuple[str, Any]] | None = None,
        errors: dict[str, BaseException] | None = None,
        answers: list[tuple[str, Any]] | None = None,
        complete: asyncio.Future[list[tuple[str, Any]]] | None = None,
    ) -> None:
        self.targets = targets
        self.hinted: dict[str, str] = {} if hinted is None else hinted
        self.acks: list[tuple[str, Any]] = [] if acks is None else acks
        self.errors: dict[str, BaseException] = {} if errors is None else errors
        self.answers: list[tuple[str, Any]] = [] if answers is None else answers
        self.complete = complete

    def _fields(self) -> tuple[Any, ...]:
        return (self.targets, self.hinted, self.acks, self.errors, self.answers, self.complete)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuorumResult):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return (
            f"QuorumResult(targets={self.targets!r}, hinted={self.hinted!r}, "
            f"acks={self.acks!r}, errors={self.errors!r}, answers={self.answers!r}, "
            f"complete={self.complete!r})"
        )
