"""The history of a fault-injection run: every operation and every fault, as JSONL.

A history is the input of the checkers (:mod:`peer_ring.testing.checker`).
It follows the model of Jepsen's histories (Kingsbury, "Jepsen: on the perils
of network partitions", 2013; Kingsbury & Alvaro, "Elle", VLDB 2020): each
client operation is recorded twice, once when it is *invoked* and once when it
*completes*, so that the checkers know the real-time interval in which it
took effect.

Completion types:

* ``ok`` -- the system acknowledged the operation (a write took effect);
* ``fail`` -- the operation certainly did **not** take effect (refused
  before anything was sent, or rejected as invalid);
* ``unknown`` -- timed out, connection lost, quorum not reached: it may or
  may not have taken effect. Checkers accept either outcome.

Faults are logged into the same history (``type="fault"``, ``kind``,
``target``, ``phase`` ``"start"`` or ``"heal"``), so availability can be
measured from the instant a fault started or healed.

Operations (``op``): ``write`` (set a value, blind or derived from a read's
``context``), ``append`` (read-modify-write that appends the element
``value`` to a list-valued key), ``read`` and ``delete``. ``context``, when
present, is the list of values the write was derived from (what its read
observed); it is what lets a later write legitimately supersede an earlier
one.

Invariants:

* Every line of the file is one JSON object; a line is flushed as soon as it
  is recorded, so a crashed run leaves a readable prefix.
* Every completion names the ``id`` of an earlier invoke of the same
  history; ids are unique within one history.
* ``time`` is :func:`time.monotonic` seconds (or the injected clock's), never
  wall-clock time: histories measure intervals, and a clock-offset fault must
  not distort them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Literal, Self

from peer_ring.clock import Clock, SystemClock
from peer_ring.errors import InvalidRequest

EventType = Literal["invoke", "ok", "fail", "unknown", "fault"]
OpName = Literal["write", "append", "read", "delete"]

EVENT_TYPES: Final = frozenset({"invoke", "ok", "fail", "unknown", "fault"})
COMPLETIONS: Final = frozenset({"ok", "fail", "unknown"})
OPS: Final = frozenset({"write", "append", "read", "delete"})


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a history.

    For operations: ``id`` pairs the ``invoke`` with its completion;
    ``process`` is the client, ``node`` the server it talked to. On a
    completed read ``value`` is what was read (``None``: missing). For
    faults: ``kind`` (``kill``, ``pause``, ``partition``...), ``target`` (a
    description of who is affected) and ``phase`` (``start`` / ``heal``).
    """

    type: EventType
    time: float
    id: int | None = None
    process: str | None = None
    node: str | None = None
    op: OpName | None = None
    key: str | None = None
    value: str | None = None
    context: tuple[str, ...] | None = None
    error: str | None = None
    kind: str | None = None
    target: str | None = None
    phase: str | None = None
    detail: dict[str, Any] | None = None

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        if self.context is not None:
            data["context"] = list(self.context)
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Event:
        """Parse one history line; malformed lines raise :class:`InvalidRequest`."""
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"history line is not JSON: {line[:80]!r}") from exc
        if not isinstance(data, dict):
            raise InvalidRequest(f"history line is not an object: {line[:80]!r}")
        return event_from_dict(data)


def event_from_dict(data: dict[str, Any]) -> Event:
    """Build and validate an :class:`Event` from a decoded JSON object."""
    etype = data.get("type")
    if etype not in EVENT_TYPES:
        raise InvalidRequest(f"history event has unknown type {etype!r}")
    op = data.get("op")
    if etype == "invoke" and op not in OPS:
        raise InvalidRequest(f"history operation has unknown op {op!r}")
    t = data.get("time")
    if not isinstance(t, int | float) or isinstance(t, bool):
        raise InvalidRequest(f"history event without a numeric time: {data!r:.80}")
    if etype != "fault" and not isinstance(data.get("id"), int):
        raise InvalidRequest(f"history operation without an integer id: {data!r:.80}")
    ctx = data.get("context")
    known = set(Event.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise InvalidRequest(f"history event has unknown fields {sorted(unknown)}")
    kwargs = dict(data)
    kwargs["time"] = float(t)
    if ctx is not None:
        if not isinstance(ctx, list) or not all(isinstance(c, str) for c in ctx):
            raise InvalidRequest("history context must be a list of strings")
        kwargs["context"] = tuple(ctx)
    return Event(**kwargs)


@dataclass(frozen=True, slots=True)
class Operation:
    """An invoke paired with its completion (``status`` ``None``: never completed,
    which checkers treat like ``unknown``)."""

    id: int
    process: str
    node: str | None
    op: OpName
    key: str
    value: str | None  # written value / appended element / value read
    context: tuple[str, ...] | None
    invoked: float
    completed: float | None
    status: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def maybe_applied(self) -> bool:
        """True unless the operation certainly did not take effect."""
        return self.status != "fail"


def operations(events: Iterable[Event]) -> list[Operation]:
    """Pair invokes with completions, in invoke order.

    A completion without a matching invoke raises :class:`InvalidRequest`.
    """
    invokes: dict[int, Event] = {}
    done: dict[int, Event] = {}
    order: list[int] = []
    for ev in events:
        if ev.type == "invoke":
            assert ev.id is not None
            if ev.id in invokes:
                raise InvalidRequest(f"history invokes id {ev.id} twice")
            invokes[ev.id] = ev
            order.append(ev.id)
        elif ev.type in COMPLETIONS:
            assert ev.id is not None
            if ev.id not in invokes:
                raise InvalidRequest(f"history completes id {ev.id} that was never invoked")
            if ev.id in done:
                raise InvalidRequest(f"history completes id {ev.id} twice")
            done[ev.id] = ev
    result = []
    for oid in order:
        inv = invokes[oid]
        comp = done.get(oid)
        assert inv.op is not None
        assert inv.key is not None
        value = inv.value
        if inv.op == "read":
            value = comp.value if comp is not None else None
        result.append(
            Operation(
                id=oid,
                process=inv.process or "?",
                node=inv.node,
                op=inv.op,
                key=inv.key,
                value=value,
                context=inv.context,
                invoked=inv.time,
                completed=comp.time if comp is not None else None,
                status=comp.type if comp is not None else None,
                error=comp.error if comp is not None else None,
            )
        )
    return result


def faults(events: Iterable[Event]) -> list[Event]:
    """The fault events of a history, in order."""
    return [ev for ev in events if ev.type == "fault"]


@dataclass
class History:
    """Records events in memory and, when ``path`` is given, to a JSONL file.

    Not thread-safe: record from one event loop (fault injectors that block
    run their blocking part in a thread but record from the loop).
    """

    path: Path | None = None
    clock: Clock = field(default_factory=SystemClock)
    events: list[Event] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _file: IO[str] | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            self.path = Path(self.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (idempotent); the in-memory events stay readable."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _record(self, event: Event) -> Event:
        self.events.append(event)
        if self._file is not None:
            self._file.write(event.to_json() + "\n")
            self._file.flush()
        return event

    # -- operations ------------------------------------------------------------
    def invoke(
        self,
        process: str,
        node: str | None,
        op: OpName,
        key: str,
        value: str | None = None,
        context: Sequence[str] | None = None,
    ) -> int:
        """Record the start of an operation; returns its id for :meth:`complete`."""
        if op not in OPS:
            raise InvalidRequest(f"unknown operation {op!r}; use one of {sorted(OPS)}")
        oid = next(self._ids)
        self._record(
            Event(
                "invoke",
                self.clock.monotonic(),
                id=oid,
                process=process,
                node=node,
                op=op,
                key=key,
                value=value,
                context=tuple(context) if context is not None else None,
            )
        )
        return oid

    def complete(
        self,
        oid: int,
        status: Literal["ok", "fail", "unknown"],
        *,
        value: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record the completion of operation ``oid`` (``value``: what a read returned)."""
        if status not in COMPLETIONS:
            raise InvalidRequest(f"unknown completion {status!r}")
        self._record(Event(status, self.clock.monotonic(), id=oid, value=value, error=error))

    # -- faults ----------------------------------------------------------------
    def fault(self, kind: str, target: str, phase: Literal["start", "heal"], **detail: Any) -> None:
        """Record that a fault started or healed."""
        self._record(
            Event(
                "fault",
                self.clock.monotonic(),
                kind=kind,
                target=target,
                phase=phase,
                detail=detail or None,
            )
        )

    # -- reading ----------------------------------------------------------------
    def operations(self) -> list[Operation]:
        return operations(self.events)

    @staticmethod
    def load(path: str | Path) -> list[Event]:
        """Read a JSONL history file (blank lines are skipped)."""
        return list(read_history(path))


def read_history(path: str | Path) -> Iterator[Event]:
    """Yield the events of a JSONL history file."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield Event.from_json(line)
