"""A replicated stream as a pure data structure: entries, trimming, consumer
groups, and the merge that reconciles replicas (no I/O, no asyncio, no clock:
every operation takes ``now_ms``).

Stream IDs are ``(ms, seq)`` pairs of unsigned 64-bit integers, ordered
lexicographically, as in Redis.

Operations run at one replica, the stream's *leader* (see ``_service``), and
return ``(reply, delta)``: the delta is a partial :class:`Stream` holding
exactly the cells the operation changed, which the leader sends to the other
replicas; they :meth:`Stream.merge` it. Full states merge the same way
(partition transfer, hinted handoff, anti-entropy, a new leader's sync).

Merge rules (a join semilattice: :meth:`Stream.merge` is commutative,
associative and idempotent; ``tests/property/test_streams_merge.py``):

* **Entries are immutable.** An ID names one entry forever; two replicas can
  only disagree on an entry's fields after a split brain (two leaders), and
  then the smaller field list wins deterministically. Replicas refuse such a
  conflicting delta (:meth:`Stream.conflicts`), so with W > N/2 two
  different entries under one ID can never both be acknowledged.
* **Deletes are tombstones** (``deleted``, a grow-only set of IDs).
* **Trimming is a watermark** (``floor``: every ID below it is gone, entries,
  tombstones and pending-entry cells alike); merged by max. Trimming by
  ``MAXLEN`` is turned into a ``floor`` by the leader.
* ``last_id``, ``max_deleted``, ``added`` and ``ver`` (the leader's operation
  counter) merge by max.
* **Group state is a set of last-writer-wins cells** ordered by ``ver`` (the
  leader numbers every operation): the group's life (created / destroyed),
  its cursor (last-delivered ID, entries read), one cell per pending entry
  (consumer, delivery time, delivery count; an acknowledged entry is a cell
  with no consumer -- an ack tombstone) and one per consumer. Cells older
  than the group's life cell are dropped, so a destroyed and re-created group
  starts empty. Equal versions (only after a split brain) are ordered by
  their contents, deterministically.
* Idempotent producers: ``producers`` maps a producer id to the highest
  sequence it added and the ID that got; merged by max sequence.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ID",
    "MAX_ID",
    "MIN_ID",
    "Group",
    "Stream",
    "StreamError",
    "format_id",
    "parse_id",
    "successor",
]

U64 = 2**64 - 1
#: A stream entry ID: (milliseconds, sequence).
ID = tuple[int, int]
MIN_ID: ID = (0, 0)
MAX_ID: ID = (U64, U64)


class StreamError(Exception):
    """An operation refused with a Redis error text (``message`` starts with
    the code: ``ERR ...``, ``NOGROUP ...``, ``BUSYGROUP ...``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


INVALID_ID = "ERR Invalid stream ID specified as stream command argument"


def format_id(i: ID) -> bytes:
    return b"%d-%d" % i


def parse_id(raw: bytes, missing_seq: int = 0) -> ID:
    """Parse ``ms-seq`` or ``ms`` (sequence ``missing_seq``) strictly."""
    ms_part, sep, seq_part = raw.partition(b"-")
    ms = _u64(ms_part)
    seq = _u64(seq_part) if sep else missing_seq
    return (ms, seq)


def _u64(raw: bytes) -> int:
    if not raw or not raw.isdigit() or len(raw) > 20:
        raise StreamError(INVALID_ID)
    value = int(raw)
    if value > U64:
        raise StreamError(INVALID_ID)
    return value


def successor(i: ID) -> ID:
    """The smallest ID greater than ``i`` (``i`` itself at the maximum)."""
    if i[1] < U64:
        return (i[0], i[1] + 1)
    if i[0] < U64:
        return (i[0] + 1, 0)
    return i


def predecessor(i: ID) -> ID:
    if i[1] > 0:
        return (i[0], i[1] - 1)
    if i[0] > 0:
        return (i[0] - 1, U64)
    return i


# -- cells: tuples starting with the version; None sorts before bytes ---------------


def _cell_key(cell: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((0, b"") if v is None else (1, v) for v in cell)


def _lww(a: tuple[Any, ...] | None, b: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    if a is None:
        return b
    if b is None or a == b:
        return a
    return a if _cell_key(a) >= _cell_key(b) else b


#: Pending-entry cell: (ver, consumer or None when acknowledged, delivered_ms, count)
Pel = tuple[int, "bytes | None", int, int]
#: Consumer cell: (ver, alive, seen_ms, active_ms)
Consumer = tuple[int, bool, int, int]
#: Cursor cell: (ver, last-delivered ms, seq, entries_read or -1)
Cursor = tuple[int, int, int, int]
#: Life cell: (ver, alive)
Life = tuple[int, bool]


@dataclass(slots=True)
class Group:
    """One consumer group's replicated state (see the module docstring)."""

    life: Life
    cursor: Cursor
    pel: dict[ID, Pel] = field(default_factory=dict)
    consumers: dict[bytes, Consumer] = field(default_factory=dict)
    #: dead-letter settings: (ver, max deliveries (0: none), dead-letter stream key)
    dlq: tuple[int, int, bytes] = (0, 0, b"")

    @property
    def alive(self) -> bool:
        return self.life[1]

    @property
    def last_id(self) -> ID:
        return (self.cursor[1], self.cursor[2])

    @property
    def entries_read(self) -> int | None:
        return None if self.cursor[3] < 0 else self.cursor[3]

    def pending(self) -> list[tuple[ID, Pel]]:
        """Unacknowledged entries, by ID."""
        return sorted((i, c) for i, c in self.pel.items() if c[1] is not None)

    def live_consumers(self) -> dict[bytes, Consumer]:
        return {n: c for n, c in self.consumers.items() if c[1]}

    def merge(self, other: Group, floor: ID = MIN_ID) -> bool:
        """Join ``other`` into this group (pending cells below the stream's
        ``floor`` are gone); True if anything changed."""
        changed = False
        life = _lww(self.life, other.life)
        if life != self.life:
            self.life = life  # type: ignore[assignment]
            self.prune()
            changed = True
        born, alive = self.life
        if not alive:
            return changed
        cursor = _lww(self.cursor, other.cursor)
        if cursor != self.cursor and cursor is not None and cursor[0] >= born:
            self.cursor = cursor
            changed = True
        dlq = _lww(self.dlq, other.dlq)
        if dlq != self.dlq and dlq is not None and dlq[0] >= born:
            self.dlq = dlq
            changed = True
        for i, c in other.pel.items():
            if c[0] < born or i < floor:
                continue
            cur = self.pel.get(i)
            new = _lww(cur, c)
            if new != cur:
                self.pel[i] = new  # type: ignore[assignment]
                changed = True
        for n, cc in other.consumers.items():
            if cc[0] < born:
                continue
            cur_c = self.consumers.get(n)
            new_c = _lww(cur_c, cc)
            if new_c != cur_c:
                self.consumers[n] = new_c  # type: ignore[assignment]
                changed = True
        return changed

    def prune(self) -> None:
        """Drop cells older than the life cell (all cells when destroyed)."""
        born, alive = self.life
        if not alive:
            self.cursor = (born, 0, 0, -1)
            self.dlq = (0, 0, b"")
            self.pel.clear()
            self.consumers.clear()
            return
        if self.cursor[0] < born:
            self.cursor = (born, 0, 0, -1)
        if self.dlq[0] < born:
            self.dlq = (0, 0, b"")
        self.pel = {i: c for i, c in self.pel.items() if c[0] >= born}
        self.consumers = {n: c for n, c in self.consumers.items() if c[0] >= born}

    def to_wire(self) -> list[Any]:
        return [
            list(self.life),
            list(self.cursor),
            [[i[0], i[1], *c] for i, c in sorted(self.pel.items())],
            [[n, *c] for n, c in sorted(self.consumers.items())],
            list(self.dlq),
        ]

    @classmethod
    def from_wire(cls, raw: Any) -> Group:
        life, cursor, pel, consumers, dlq = raw
        g = cls((int(life[0]), bool(life[1])), (int(cursor[0]), *map(int, cursor[1:4])))  # type: ignore[arg-type]
        for ms, seq, ver, consumer, at, count in pel:
            g.pel[(int(ms), int(seq))] = (int(ver), consumer, int(at), int(count))
        for name, ver, alive, seen, active in consumers:
            g.consumers[bytes(name)] = (int(ver), bool(alive), int(seen), int(active))
        g.dlq = (int(dlq[0]), int(dlq[1]), bytes(dlq[2]))
        return g


@dataclass(slots=True)
class Stream:
    """A stream replica's state, or a delta of one (see the module docstring)."""

    entries: dict[ID, list[bytes]] = field(default_factory=dict)
    deleted: set[ID] = field(default_factory=set)
    floor: ID = MIN_ID
    last_id: ID = MIN_ID
    max_deleted: ID = MIN_ID
    added: int = 0
    ver: int = 0
    groups: dict[bytes, Group] = field(default_factory=dict)
    producers: dict[bytes, tuple[int, ID]] = field(default_factory=dict)
    #: live entry IDs in order (derived from ``entries``; not merged)
    ids: list[ID] = field(default_factory=list)

    # -- merge ------------------------------------------------------------------------
    def conflicts(self, other: Stream) -> bool:
        """Whether ``other`` holds an entry whose ID names different fields here."""
        mine = self.entries
        return any(i in mine and mine[i] != f for i, f in other.entries.items())

    def merge(self, other: Stream) -> bool:
        """Join ``other`` (a full state or a delta) into this one; True if anything changed.

        Cost: proportional to ``other`` (a delta merges in O(delta log n)),
        plus one pass over this stream when ``other`` raises the floor or
        deletes entries.
        """
        scalars = (self.floor, self.last_id, self.max_deleted, self.added, self.ver)
        self.last_id = max(self.last_id, other.last_id)
        self.max_deleted = max(self.max_deleted, other.max_deleted)
        self.added = max(self.added, other.added)
        self.ver = max(self.ver, other.ver)
        full = other.floor > self.floor
        self.floor = max(self.floor, other.floor)
        tombs = {i for i in other.deleted if i >= self.floor and i not in self.deleted}
        full = full or bool(tombs)
        changed = full or scalars != (
            self.floor,
            self.last_id,
            self.max_deleted,
            self.added,
            self.ver,
        )
        self.deleted |= tombs
        entries, ids = self.entries, self.ids
        for i, f in other.entries.items():
            cur = self.entries.get(i)
            if cur is None:
                if i < self.floor or i in self.deleted:
                    continue
                entries[i] = list(f)
                if not ids or i > ids[-1]:
                    ids.append(i)
                else:
                    bisect.insort(ids, i)
                changed = True
            elif cur != f and f < cur:
                entries[i] = list(f)
                changed = True
        for name, g in other.groups.items():
            mine = self.groups.get(name)
            if mine is None:
                mine = self.groups[name] = Group.from_wire(g.to_wire())
                mine.prune()
                mine.pel = {i: c for i, c in mine.pel.items() if i >= self.floor}
                changed = True
            elif mine.merge(g, self.floor):
                changed = True
        for p, (seq, i) in other.producers.items():
            cur_p = self.producers.get(p)
            if cur_p is None or (seq, i) > cur_p:
                self.producers[p] = (seq, i)
                changed = True
        if full:
            self.normalize()
        return changed

    def normalize(self) -> None:
        """Apply tombstones and the floor; rebuild the ID index."""
        floor = self.floor
        if self.deleted:
            self.deleted = {i for i in self.deleted if i >= floor}
        self.entries = {
            i: f for i, f in self.entries.items() if i >= floor and i not in self.deleted
        }
        for g in self.groups.values():
            if any(i < floor for i in g.pel):
                g.pel = {i: c for i, c in g.pel.items() if i >= floor}
        self.ids = sorted(self.entries)

    def fingerprint(self) -> Any:
        return _freeze(self.to_wire())

    # -- wire ---------------------------------------------------------------------------
    def to_wire(self) -> list[Any]:
        """A msgpack-encodable, canonical (sorted) form."""
        return [
            [[i[0], i[1], f] for i, f in sorted(self.entries.items())],
            sorted([list(i) for i in self.deleted]),
            list(self.floor),
            list(self.last_id),
            list(self.max_deleted),
            self.added,
            self.ver,
            [[n, g.to_wire()] for n, g in sorted(self.groups.items())],
            [[p, s, list(i)] for p, (s, i) in sorted(self.producers.items())],
        ]

    @classmethod
    def from_wire(cls, raw: Any) -> Stream:
        entries, deleted, floor, last_id, max_deleted, added, ver, groups, producers = raw
        s = cls(
            entries={(int(ms), int(seq)): [bytes(x) for x in f] for ms, seq, f in entries},
            deleted={(int(ms), int(seq)) for ms, seq in deleted},
            floor=_id(floor),
            last_id=_id(last_id),
            max_deleted=_id(max_deleted),
            added=int(added),
            ver=int(ver),
            groups={bytes(n): Group.from_wire(g) for n, g in groups},
            producers={bytes(p): (int(s), _id(i)) for p, s, i in producers},
        )
        s.normalize()
        return s

    # -- reads ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def range(self, start: ID, end: ID, count: int | None = None) -> list[tuple[ID, list[bytes]]]:
        ids = self.ids
        lo = bisect.bisect_left(ids, start)
        hi = bisect.bisect_right(ids, end)
        if count is not None:
            hi = min(hi, lo + count)
        return [(i, self.entries[i]) for i in ids[lo:hi]]

    def revrange(
        self, end: ID, start: ID, count: int | None = None
    ) -> list[tuple[ID, list[bytes]]]:
        ids = self.ids
        lo = bisect.bisect_left(ids, start)
        hi = bisect.bisect_right(ids, end)
        if count is not None:
            lo = max(lo, hi - count)
        return [(i, self.entries[i]) for i in reversed(ids[lo:hi])]

    def after(self, i: ID, count: int | None = None) -> list[tuple[ID, list[bytes]]]:
        if i >= MAX_ID:
            return []
        return self.range(successor(i), MAX_ID, count)

    def first_id(self) -> ID | None:
        return self.ids[0] if self.ids else None


def _id(raw: Any) -> ID:
    return (int(raw[0]), int(raw[1]))


def _freeze(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    return v


# -- operations (run at the leader); each returns (reply, delta) ---------------------------


class Op:
    """One operation on a stream at its leader: mutates ``stream`` and records the
    changed cells in ``delta`` under the next version."""

    def __init__(self, stream: Stream) -> None:
        self.s = stream
        stream.ver += 1
        self.ver = stream.ver
        self.delta = Stream()

    def finish(self) -> Stream:
        s, d = self.s, self.delta
        d.floor, d.last_id, d.max_deleted, d.added, d.ver = (
            s.floor,
            s.last_id,
            s.max_deleted,
            s.added,
            s.ver,
        )
        return d

    def _group_delta(self, name: bytes, g: Group) -> Group:
        dg = self.delta.groups.get(name)
        if dg is None:
            dg = self.delta.groups[name] = Group(g.life, g.cursor)
        return dg

    def set_cursor(self, name: bytes, g: Group, last: ID, entries_read: int | None) -> None:
        g.cursor = (self.ver, last[0], last[1], -1 if entries_read is None else entries_read)
        self._group_delta(name, g).cursor = g.cursor

    def set_pel(self, name: bytes, g: Group, i: ID, cell: Pel) -> None:
        g.pel[i] = cell
        self._group_delta(name, g).pel[i] = cell

    def set_consumer(self, name: bytes, g: Group, consumer: bytes, cell: Consumer) -> None:
        g.consumers[consumer] = cell
        self._group_delta(name, g).consumers[consumer] = cell

    def set_life(self, name: bytes, g: Group) -> None:
        d = self._group_delta(name, g)
        d.life, d.cursor = g.life, g.cursor

    def set_dlq(self, name: bytes, g: Group, max_deliveries: int, key: bytes) -> None:
        g.dlq = (self.ver, max_deliveries, key)
        self._group_delta(name, g).dlq = g.dlq


@dataclass(frozen=True, slots=True)
class Trim:
    """A trimming strategy: ``MAXLEN`` (``threshold`` an int) or ``MINID`` (an ID)."""

    maxlen: int | None = None
    minid: ID | None = None
    approx: bool = False
    limit: int = 0  # 0: no limit


def new_id(s: Stream, spec: bytes, now_ms: int) -> ID:
    """The ID an XADD with ``spec`` (``*``, ``ms-*``, ``ms-seq`` or ``ms``) gets."""
    last = s.last_id
    if spec == b"*":
        if now_ms > last[0]:
            return (now_ms, 0)
        if last == MAX_ID:
            raise StreamError(
                "ERR The stream has exhausted the last possible ID, unable to add more items"
            )
        return successor(last)
    if spec.endswith(b"-*"):
        ms = _u64(spec[:-2])
        if ms > last[0]:
            return (ms, 0)
        if ms == last[0] and last[1] < U64:
            return (ms, last[1] + 1)
        raise StreamError(TOP_ITEM)
    i = parse_id(spec)
    if i == MIN_ID:
        raise StreamError("ERR The ID specified in XADD must be greater than 0-0")
    if i <= last:
        raise StreamError(TOP_ITEM)
    return i


TOP_ITEM = "ERR The ID specified in XADD is equal or smaller than the target stream top item"


def xadd(
    s: Stream,
    fields: Sequence[bytes],
    spec: bytes,
    now_ms: int,
    trim: Trim | None = None,
    producer: tuple[bytes, int] | None = None,
) -> tuple[ID, Stream]:
    """Append an entry; with ``producer`` (id, seq), a sequence already added
    returns the ID it got and changes nothing (idempotent XADD)."""
    if producer is not None:
        seen = s.producers.get(producer[0])
        if seen is not None and producer[1] <= seen[0]:
            if producer[1] == seen[0]:
                return seen[1], Stream(ver=s.ver)
            raise StreamError(
                f"ERR producer sequence {producer[1]} is below the last added ({seen[0]})"
            )
    i = new_id(s, spec, now_ms)
    op = Op(s)
    s.entries[i] = list(fields)
    s.ids.append(i)
    s.last_id = i
    s.added += 1
    op.delta.entries[i] = list(fields)
    if producer is not None:
        s.producers[producer[0]] = (producer[1], i)
        op.delta.producers[producer[0]] = (producer[1], i)
    if trim is not None:
        _trim(s, trim)
    return i, op.finish()


def _trim(s: Stream, trim: Trim) -> int:
    """Raise the floor per ``trim``; return how many entries went."""
    ids = s.ids
    if trim.maxlen is not None:
        drop = max(0, len(ids) - trim.maxlen)
    else:
        assert trim.minid is not None
        drop = bisect.bisect_left(ids, trim.minid)
    if trim.approx and trim.limit:
        drop = min(drop, trim.limit)
    if drop == 0:
        return 0
    new_floor = ids[drop] if drop < len(ids) else successor(s.last_id)
    s.floor = max(s.floor, new_floor)
    s.normalize()
    return drop


def xtrim(s: Stream, trim: Trim) -> tuple[int, Stream]:
    op = Op(s)
    n = _trim(s, trim)
    return n, op.finish()


def xdel(s: Stream, ids: Iterable[ID]) -> tuple[int, Stream]:
    op = Op(s)
    n = 0
    for i in ids:
        if i in s.entries:
            del s.entries[i]
            s.deleted.add(i)
            op.delta.deleted.add(i)
            s.max_deleted = max(s.max_deleted, i)
            n += 1
    if n:
        s.ids = sorted(s.entries)
    return n, op.finish()


# -- groups ------------------------------------------------------------------------------------


def nogroup(key: bytes, group: bytes, suffix: str = "") -> StreamError:
    k, g = key.decode("utf-8", "replace"), group.decode("utf-8", "replace")
    return StreamError(f"NOGROUP No such key '{k}' or consumer group '{g}'{suffix}")


def get_group(s: Stream, name: bytes) -> Group | None:
    g = s.groups.get(name)
    return g if g is not None and g.alive else None


def group_create(s: Stream, name: bytes, last: ID, entries_read: int | None) -> tuple[bool, Stream]:
    if get_group(s, name) is not None:
        raise StreamError("BUSYGROUP Consumer Group name already exists")
    op = Op(s)
    g = Group(
        (op.ver, True), (op.ver, last[0], last[1], -1 if entries_read is None else entries_read)
    )
    s.groups[name] = g
    op.set_life(name, g)
    return True, op.finish()


def group_destroy(s: Stream, name: bytes) -> tuple[int, Stream]:
    g = get_group(s, name)
    if g is None:
        return 0, Stream(ver=s.ver)
    op = Op(s)
    g.life = (op.ver, False)
    g.prune()
    op.set_life(name, g)
    return 1, op.finish()


def group_setid(s: Stream, name: bytes, g: Group, last: ID, entries_read: int | None) -> Stream:
    op = Op(s)
    op.set_cursor(name, g, last, entries_read)
    return op.finish()


def set_dead_letter(s: Stream, name: bytes, g: Group, max_deliveries: int, key: bytes) -> Stream:
    """Pending entries delivered ``max_deliveries`` times go to stream ``key``
    instead of being delivered again (0: never)."""
    op = Op(s)
    op.set_dlq(name, g, max_deliveries, key)
    return op.finish()


def create_consumer(
    s: Stream, name: bytes, g: Group, consumer: bytes, now_ms: int
) -> tuple[int, Stream]:
    if consumer in g.live_consumers():
        return 0, Stream(ver=s.ver)
    op = Op(s)
    op.set_consumer(name, g, consumer, (op.ver, True, now_ms, -1))
    return 1, op.finish()


def del_consumer(s: Stream, name: bytes, g: Group, consumer: bytes) -> tuple[int, Stream]:
    if consumer not in g.live_consumers():
        return 0, Stream(ver=s.ver)
    op = Op(s)
    n = 0
    for i, c in list(g.pel.items()):
        if c[1] == consumer:
            op.set_pel(name, g, i, (op.ver, None, 0, 0))
            n += 1
    op.set_consumer(name, g, consumer, (op.ver, False, 0, -1))
    return n, op.finish()


def _touch(op: Op, name: bytes, g: Group, consumer: bytes, now_ms: int, active: bool) -> None:
    cur = g.consumers.get(consumer)
    act = now_ms if active else (cur[3] if cur is not None and cur[1] else -1)
    op.set_consumer(name, g, consumer, (op.ver, True, now_ms, act))


def has_tombstones(s: Stream, start: ID) -> bool:
    """Whether an entry at or after ``start`` was deleted (Redis's
    ``streamRangeHasTombstones`` up to the end of the stream)."""
    if not s.ids or s.max_deleted == MIN_ID:
        return False
    return start <= s.max_deleted


def estimate_entries_read(s: Stream, i: ID) -> int | None:
    """How many entries were added up to ``i``, when that is knowable (Redis's
    ``streamEstimateDistanceFromFirstEverEntry``); None when it is not."""
    if not s.added:
        return 0
    if not s.ids and i <= s.last_id:
        return s.added
    if i == s.last_id:
        return s.added
    if i > s.last_id:
        return None
    first = s.ids[0] if s.ids else MIN_ID
    if s.max_deleted == MIN_ID or s.max_deleted < first:
        if i < first:
            return s.added - len(s.ids)
        if i == first:
            return s.added - len(s.ids) + 1
    return None


def lag(s: Stream, g: Group) -> int | None:
    """Entries of the stream the group has not read yet, when knowable (XINFO GROUPS)."""
    if not s.added:
        return 0
    first = s.ids[0] if s.ids else MIN_ID
    if g.entries_read is not None and not has_tombstones(s, g.last_id) and g.last_id >= first:
        return s.added - g.entries_read
    er = estimate_entries_read(s, g.last_id)
    return None if er is None else s.added - er


def read_new(
    s: Stream, name: bytes, g: Group, consumer: bytes, count: int | None, noack: bool, now_ms: int
) -> tuple[list[tuple[ID, list[bytes]]], Stream]:
    """XREADGROUP ``>``: entries after the group's cursor, now pending for ``consumer``."""
    got = s.after(g.last_id, count)
    op = Op(s)
    _touch(op, name, g, consumer, now_ms, active=bool(got))
    if got:
        last, er = g.last_id, g.entries_read
        for i, _ in got:  # Redis's per-entry counter update
            if er is not None and not has_tombstones(s, i):
                er += 1
            else:
                er = estimate_entries_read(s, i)
            last = i
        op.set_cursor(name, g, last, er)
        if not noack:
            for i, _ in got:
                op.set_pel(name, g, i, (op.ver, consumer, now_ms, 1))
    return got, op.finish()


def read_history(
    s: Stream, name: bytes, g: Group, consumer: bytes, after: ID, count: int | None, now_ms: int
) -> tuple[list[tuple[ID, list[bytes] | None]], Stream]:
    """XREADGROUP with an ID: ``consumer``'s pending entries after ``after``
    (deleted ones with ``None`` fields); their delivery counts grow."""
    op = Op(s)
    _touch(op, name, g, consumer, now_ms, active=False)
    out: list[tuple[ID, list[bytes] | None]] = []
    for i, c in g.pending():
        if i <= after or c[1] != consumer:
            continue
        if count is not None and len(out) >= count:
            break
        fields = s.entries.get(i)
        if fields is not None:
            op.set_pel(name, g, i, (op.ver, consumer, now_ms, c[3] + 1))
        out.append((i, fields))
    return out, op.finish()


def ack(s: Stream, name: bytes, g: Group, ids: Iterable[ID]) -> tuple[int, Stream]:
    op = Op(s)
    n = 0
    for i in dict.fromkeys(ids):
        c = g.pel.get(i)
        if c is not None and c[1] is not None:
            op.set_pel(name, g, i, (op.ver, None, 0, 0))
            n += 1
    return n, op.finish()


def claim(
    s: Stream,
    name: bytes,
    g: Group,
    consumer: bytes,
    min_idle: int,
    ids: Sequence[ID],
    now_ms: int,
    *,
    delivered_ms: int | None = None,
    retrycount: int | None = None,
    force: bool = False,
    justid: bool = False,
    lastid: ID | None = None,
) -> tuple[list[tuple[ID, list[bytes] | None]], Stream]:
    """XCLAIM: entries pending longer than ``min_idle`` ms move to ``consumer``.
    Pending entries whose stream entry was deleted leave the PEL."""
    op = Op(s)
    _touch(op, name, g, consumer, now_ms, active=False)
    if lastid is not None and lastid > g.last_id:
        op.set_cursor(name, g, lastid, g.entries_read)
    at = now_ms if delivered_ms is None else delivered_ms
    out: list[tuple[ID, list[bytes] | None]] = []
    for i in ids:
        c = g.pel.get(i)
        fields = s.entries.get(i)
        if c is None or c[1] is None:
            if not force or fields is None:
                continue
            c = (op.ver, None, 0, 0)
        if fields is None:
            op.set_pel(name, g, i, (op.ver, None, 0, 0))
            continue
        if c[1] is not None and min_idle and now_ms - c[2] < min_idle:
            continue
        count = retrycount if retrycount is not None else c[3] + (0 if justid else 1)
        op.set_pel(name, g, i, (op.ver, consumer, at, count))
        out.append((i, None if justid else fields))
    if out:
        _touch(op, name, g, consumer, now_ms, active=True)
    return out, op.finish()


def autoclaim(
    s: Stream,
    name: bytes,
    g: Group,
    consumer: bytes,
    min_idle: int,
    start: ID,
    count: int,
    now_ms: int,
    justid: bool = False,
) -> tuple[tuple[ID, list[tuple[ID, list[bytes] | None]], list[ID]], Stream]:
    """XAUTOCLAIM: scan the PEL from ``start`` (at most ``count * 10`` entries),
    claim up to ``count`` idle ones; returns (next cursor or 0-0, claimed, deleted)."""
    op = Op(s)
    _touch(op, name, g, consumer, now_ms, active=False)
    claimed: list[tuple[ID, list[bytes] | None]] = []
    deleted: list[ID] = []
    attempts = count * 10
    pending = [(i, c) for i, c in g.pending() if i >= start]
    nxt = MIN_ID
    k = 0
    while k < len(pending) and attempts > 0 and len(claimed) < count:
        i, c = pending[k]
        k += 1
        attempts -= 1
        fields = s.entries.get(i)
        if fields is None:
            op.set_pel(name, g, i, (op.ver, None, 0, 0))
            deleted.append(i)
            continue
        if min_idle and now_ms - c[2] < min_idle:
            continue
        op.set_pel(name, g, i, (op.ver, consumer, now_ms, c[3] + (0 if justid else 1)))
        claimed.append((i, None if justid else fields))
    if k < len(pending):
        nxt = pending[k][0]
    if claimed:
        _touch(op, name, g, consumer, now_ms, active=True)
    return (nxt, claimed, deleted), op.finish()
