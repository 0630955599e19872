"""The records built once per command on the hot path: a replica's
:class:`Request` and a quorum round's :class:`QuorumResult`.

Part of the app API, imported from :mod:`peer_ring.service` (and
:mod:`peer_ring.app`); they live in this module of their own so that the
compiled build (``peer_ring._build.HOT_MODULES``) compiles them: the
coordinator, the node and the KV store build one or two per command, and a
compiled class is built by a native constructor instead of an interpreted
dataclass ``__init__`` (about 2,000 instructions each, measured with
``bench/resp_instructions.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QuorumResult", "Request"]


@dataclass(slots=True)
class Request:
    """A command arriving at a replica.

    ``origin`` is the id of the node that coordinates the operation (this
    node's own id for local calls). ``partition`` is the key's partition under
    the coordinator's ring. Read-only by convention: one is built for every
    replica command, and a frozen dataclass is slower to build (every
    field goes through ``object.__setattr__``).
    """

    command: str
    key: bytes
    partition: int
    payload: Any
    origin: str


@dataclass(slots=True)
class QuorumResult:
    """Answers gathered by the time a quorum round reached its quorum.

    ``acks`` holds ``(node_id, answer)`` pairs in arrival order, ``errors``
    the failures seen so far, ``targets`` every node the command went to.
    ``answers`` fills with every successful answer, late ones included, as
    they arrive; once every target answered or failed, the round's
    ``on_complete`` callback runs (read repair), or -- for callers that gave
    none and no listener -- ``complete`` resolves (never fails) with them.
    ``hinted`` maps each fallback that stood in for a down owner (sloppy
    quorum) to that owner.
    """

    targets: tuple[str, ...]
    hinted: dict[str, str] = field(default_factory=dict)
    acks: list[tuple[str, Any]] = field(default_factory=list)
    errors: dict[str, BaseException] = field(default_factory=dict)
    answers: list[tuple[str, Any]] = field(default_factory=list)
    complete: asyncio.Future[list[tuple[str, Any]]] | None = None
