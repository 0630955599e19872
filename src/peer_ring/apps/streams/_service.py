"""Streams as a peer-ring service: a leader per stream, quorum replication, data hooks.

Each stream key lives on the N replicas of its partition. Its **leader** is
the first owner of the partition that the local failure detector sees up.
Every operation on a stream -- reads included -- runs at the leader
(``x`` replica command, forwarded from whichever node the client used):

1. The leader makes sure its copy is **synced**: the first time it leads the
   stream under the current owner list, it pulls the stream from every owner
   and needs R answers (``state``), merging them. With R + W > N it sees
   every entry a previous leader acknowledged, so the IDs it assigns next
   continue after the highest ID any acknowledged write used: IDs stay
   strictly increasing across a change of leader.
2. It runs the operation on its copy (``_state``: pure) and gets a delta.
3. It sends the delta to all N replicas (``apply``) and answers once W hold
   it (hinted copies on fallbacks for down owners, as for every write).
   ``XADD`` is therefore acknowledged only when W replicas hold the entry.
   A replica refuses a delta with an entry ID it already holds with other
   fields (only possible with two leaders after a split brain); with W > N/2
   two such entries can never both be acknowledged. A replica that answers
   with a higher version than the leader had tells the leader that someone
   else led meanwhile: it re-syncs before its next operation.

An operation whose replication fails raises ``QuorumNotReached``: its outcome
is unknown (it is applied at the leader and maybe elsewhere), like any
write's. Reads at the leader see entries as soon as the leader applied them,
before W replicas acknowledged them.

Blocking reads wait at the leader (``wait``, bounded by half the request
timeout per round) and are re-issued by the caller until their own deadline;
cancelling the caller cancels nothing remote but the wait, which ends alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from peer_ring.app import (
    AppContext,
    ClosedError,
    ConnectionLost,
    InvalidRequest,
    Metric,
    NotOwner,
    PeerUnavailable,
    QuorumNotReached,
    Record,
    Request,
    RequestTimeout,
    RingMismatch,
    Service,
    UnknownCommand,
    register_error,
)
from peer_ring.apps.streams import _state as S
from peer_ring.apps.streams._state import ID, MAX_ID, MIN_ID, Stream, StreamError, Trim

__all__ = ["Entry", "GroupHandle", "StreamCommandError", "Streams"]

log = logging.getLogger("peer_ring.apps.streams")


@register_error
class StreamCommandError(InvalidRequest):
    """A stream command refused with a Redis error text (``str(exc)`` starts with
    its code: ``ERR``, ``NOGROUP``, ``BUSYGROUP``). Unlike
    :class:`~peer_ring.errors.QuorumNotReached`, nothing was changed."""

    code = "STREAM"


def _wid(i: ID) -> list[int]:
    return [i[0], i[1]]


def _rid(raw: Any) -> ID:
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise InvalidRequest("a stream ID is [ms, seq]")
    return (int(raw[0]), int(raw[1]))


def _entries(items: Iterable[tuple[ID, list[bytes] | None]]) -> list[Any]:
    return [[_wid(i), f] for i, f in items]


class Streams(Service):
    """The streams service: replica side (``handle`` and the data hooks) and
    the leader's operations; the embedded client API is :class:`StreamsApi`."""

    namespace = "streams"
    read_commands = frozenset({"state"})

    def __init__(self) -> None:
        self._parts: dict[int, dict[bytes, Stream]] = {}
        self._app: AppContext | None = None
        #: key -> the owner list under which this node last synced it as leader
        self._synced: dict[bytes, tuple[str, ...]] = {}
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self.adds = 0
        self.deliveries = 0
        self.redeliveries = 0
        self.acks = 0
        self.dead_lettered = 0

    def attach(self, app: AppContext) -> None:
        self._app = app
        app.add_metrics(self._metrics)

    @property
    def app(self) -> AppContext:
        if self._app is None:
            raise ClosedError("Streams is not registered on a node")
        return self._app

    # -- replica side ---------------------------------------------------------------
    def handle(self, request: Request) -> Any:
        cmd = request.command
        if cmd == "apply":
            return self._apply(request)
        if cmd == "x":
            return self._exec(request)
        if cmd == "state":
            s = self._parts.get(request.partition, {}).get(request.key)
            return None if s is None else s.to_wire()
        if cmd == "wait":
            return self._wait(request)
        if cmd == "flush":  # broadcast: every stream of this node
            n = sum(len(p) for p in self._parts.values())
            self._parts.clear()
            self._synced.clear()
            return n
        if cmd == "keys":  # coverage: every stream key of the given partitions
            return [k for p in request.payload for k in self._parts.get(p, {})]
        raise UnknownCommand(f"streams has no command {cmd!r}")

    def _apply(self, request: Request) -> list[Any]:
        delta = _decode(request.payload)
        part = self._parts.setdefault(request.partition, {})
        s = part.get(request.key)
        if s is None:
            s = part[request.key] = Stream()
        before = s.ver
        if s.conflicts(delta):
            return [False, before]
        s.merge(delta)
        if delta.entries:
            self._wake(request.key)
        return [True, before]

    def export_partition(self, partition: int) -> Iterator[Record]:
        return iter([(k, s.to_wire()) for k, s in self._parts.get(partition, {}).items()])

    def import_records(self, partition: int, records: Sequence[Record]) -> int:
        part = self._parts.setdefault(partition, {})
        changed = 0
        for key, raw in records:
            incoming = _decode(raw)
            s = part.get(key)
            if s is None:
                part[key] = incoming
                changed += 1
            elif s.merge(incoming):
                changed += 1
            if incoming.entries:
                self._wake(key)
        return changed

    def digest(self, partition: int) -> dict[bytes, bytes]:
        return {
            k: hashlib.blake2b(repr(s.fingerprint()).encode(), digest_size=8).digest()
            for k, s in self._parts.get(partition, {}).items()
        }

    def read_records(self, partition: int, keys: Iterable[bytes]) -> list[Record]:
        part = self._parts.get(partition, {})
        return [(k, part[k].to_wire()) for k in keys if k in part]

    def drop_partition(self, partition: int) -> int:
        dropped = self._parts.pop(partition, {})
        for k in dropped:
            self._synced.pop(k, None)
        return len(dropped)

    def partition_size(self, partition: int) -> int:
        return len(self._parts.get(partition, {}))

    # -- leader ----------------------------------------------------------------------
    def leader(self, partition: int) -> str:
        """The stream leader of ``partition``: its first owner seen up."""
        app = self.app
        owners = app.owners(partition)
        for node in owners:
            if app.is_up(node):
                return node
        raise PeerUnavailable(f"no owner of partition {partition} is up")

    async def _exec(self, request: Request) -> Any:
        op, args = request.payload
        key, partition = request.key, request.partition
        if self.leader(partition) != self.app.node_id:
            self._synced.pop(key, None)
            raise NotOwner(f"{self.app.node_id} does not lead stream partition {partition}")
        fn = _OPS.get(op)
        if fn is None:
            raise UnknownCommand(f"streams has no operation {op!r}")
        await self._sync(key, partition)
        if op in _DELIVERING:
            await self._dead_letter(key, partition, bytes(args[0]))
        part = self._parts.setdefault(partition, {})
        now = int(self.app.clock.time() * 1000)
        try:
            reply, delta, create = fn(self, key, part.get(key), args, now)
        except StreamError as exc:
            raise StreamCommandError(exc.message) from None
        if delta is not None:
            if create:
                s = part.setdefault(key, Stream())
                s.merge(delta)
            if op == "add":
                self._wake(key)
            await self._replicate(key, partition, delta)
        return reply

    async def _dead_letter(self, key: bytes, partition: int, name: bytes) -> None:
        """Move the group's pending entries delivered ``max_deliveries`` times to
        its dead-letter stream (with where they came from), then acknowledge
        them: at least once into the dead-letter stream, never lost."""
        s = self._parts.get(partition, {}).get(key)
        g = None if s is None else S.get_group(s, name)
        if s is None or g is None or g.dlq[1] <= 0:
            return
        limit, target = g.dlq[1], g.dlq[2]
        over = [(i, c) for i, c in g.pending() if c[3] >= limit]
        if not over:
            return
        producer = b"dlq:" + key + b":" + name
        base = s.ver * 1_000_000
        for k, (i, c) in enumerate(over):
            meta = [b"source-stream", key, b"source-group", name, b"source-id",
                    S.format_id(i), b"deliveries", b"%d" % c[3]]  # fmt: skip
            fields = s.entries.get(i) or []
            await self.call(target, "add", meta + fields, b"*", False, None, [producer, base + k])
        s = self._parts.get(partition, {}).get(key)
        g = None if s is None else S.get_group(s, name)
        if s is None or g is None:
            return
        n, delta = S.ack(s, name, g, [i for i, _ in over])
        self.dead_lettered += n
        if n:
            await self._replicate(key, partition, delta)

    async def _sync(self, key: bytes, partition: int) -> None:
        app = self.app
        owners = app.owners(partition)
        if self._synced.get(key) == owners:
            return
        answers = await app.call_owners("state", key, None, partition=partition)
        good = [a for a in answers.values() if not isinstance(a, BaseException)]
        if len(good) < app.read_quorum:
            errors = {n: a for n, a in answers.items() if isinstance(a, BaseException)}
            raise QuorumNotReached(app.read_quorum, len(good), errors)
        part = self._parts.setdefault(partition, {})
        for raw in good:
            if raw is not None:
                incoming = _decode(raw)
                s = part.get(key)
                if s is None:
                    part[key] = incoming
                else:
                    s.merge(incoming)
        self._synced[key] = owners

    async def _replicate(self, key: bytes, partition: int, delta: Stream) -> None:
        app = self.app
        before = delta.ver - 1
        result = await app.quorum(
            "apply", key, delta.to_wire(), quorum=app.write_quorum, partition=partition,
            applied=True,
        )  # fmt: skip
        ok = 0
        for _, answer in result.acks:
            if answer is None:
                ok += 1  # this node (applied already)
                continue
            good, their_ver = answer
            if their_ver > before:
                self._synced.pop(key, None)  # someone else led: re-sync next time
            if good:
                ok += 1
        if ok < app.write_quorum:
            self._synced.pop(key, None)
            raise QuorumNotReached(app.write_quorum, ok, message="conflicting stream replicas")

    def _wake(self, key: bytes) -> None:
        for fut in self._waiters.pop(key, ()):
            if not fut.done():
                fut.set_result(None)

    async def _wait(self, request: Request) -> bool:
        """Wait (at most ``timeout`` s) until the stream has entries after an ID or a
        group's cursor; True when it has."""
        after_raw, group, timeout = request.payload
        key = request.key
        deadline = self.app.clock.monotonic() + float(timeout)
        while True:
            s = self._parts.get(request.partition, {}).get(key)
            if s is not None:
                if group is not None:
                    g = S.get_group(s, group)
                    if g is None:
                        return True  # let the caller see NOGROUP
                    after = g.last_id
                elif after_raw is not None:
                    after = _rid(after_raw)
                else:
                    return True
                if s.after(after, 1):
                    return True
            left = deadline - self.app.clock.monotonic()
            if left <= 0:
                return False
            fut: asyncio.Future[None] = self.app.create_future()
            self._waiters.setdefault(key, []).append(fut)
            try:
                await asyncio.wait_for(fut, left)
            except TimeoutError:
                return False
            finally:
                waiters = self._waiters.get(key)
                if waiters is not None and fut in waiters:
                    waiters.remove(fut)

    def status(self) -> dict[str, Any]:
        """Streams this node leads (at most 50): key, length, and per group
        its pending entries and lag (None: unknown)."""
        rows: list[Any] = []
        me = self.app.node_id
        for partition, part in sorted(self._parts.items()):
            try:
                if self.leader(partition) != me:
                    continue
            except PeerUnavailable:
                continue
            for key, s in sorted(part.items()):
                groups = [
                    [name.decode("utf-8", "replace"), len(g.pending()), S.lag(s, g)]
                    for name, g in sorted(s.groups.items())
                    if g.alive
                ]
                rows.append([key.decode("utf-8", "replace"), len(s), groups])
                if len(rows) >= 50:
                    return {"streams": rows, "truncated": True}
        return {"streams": rows} if rows else {}

    def _metrics(self) -> Iterable[Metric]:
        streams = [s for part in self._parts.values() for s in part.values()]
        yield Metric("adds", "counter", "Entries added by this node as leader.", self.adds)
        yield Metric(
            "deliveries", "counter", "Entries delivered to group consumers.", self.deliveries
        )
        yield Metric(
            "redeliveries",
            "counter",
            "Pending entries delivered again (history reads and claims).",
            self.redeliveries,
        )
        yield Metric("acks", "counter", "Pending entries acknowledged.", self.acks)
        yield Metric(
            "dead_lettered",
            "counter",
            "Pending entries moved to a dead-letter stream after their maximum deliveries.",
            self.dead_lettered,
        )
        yield Metric("streams", "gauge", "Stream replicas held.", len(streams))
        yield Metric("entries", "gauge", "Entries held in stream replicas.", sum(map(len, streams)))
        yield Metric(
            "pending",
            "gauge",
            "Pending entries of every group of the stream replicas held.",
            sum(len(g.pending()) for s in streams for g in s.groups.values()),
        )

    # -- client side: the call to the leader -------------------------------------------
    async def call(self, key: bytes, op: str, *args: Any) -> Any:
        """Run operation ``op`` at ``key``'s leader; retried while leadership moves."""
        app = self.app
        partition = app.partition_for(key)
        deadline = app.clock.monotonic() + app.request_timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                leader = self.leader(partition)
                return await app.call_replica(
                    leader, "x", key, [op, list(args)], partition=partition
                )
            except (NotOwner, RingMismatch, PeerUnavailable) as exc:
                if app.clock.monotonic() >= deadline or attempt >= 20:
                    raise
                if isinstance(exc, ConnectionLost) and op not in _READ_ONLY:
                    raise  # the leader may have applied it: a retry could apply it twice
                log.debug("stream %r: %s; retrying", key[:64], exc)
                await app.clock.sleep(min(0.01 * attempt, 0.2))

    async def wait(self, key: bytes, after: ID | None, group: bytes | None, timeout: float) -> bool:
        """Wait at the leader until ``key`` has entries after ``after`` (or after
        ``group``'s cursor), at most ``timeout`` s per round; False on timeout."""
        app = self.app
        partition = app.partition_for(key)
        step = max(0.05, app.request_timeout / 2)
        leader = self.leader(partition)
        try:
            return bool(
                await app.call_replica(
                    leader,
                    "wait",
                    key,
                    [None if after is None else _wid(after), group, min(timeout, step)],
                    partition=partition,
                    timeout=min(timeout, step) + app.request_timeout,
                )
            )
        except (NotOwner, RingMismatch, PeerUnavailable, RequestTimeout):
            await app.clock.sleep(min(timeout, 0.05))
            return False

    # -- embedded client API ----------------------------------------------------------
    async def add(
        self,
        key: bytes,
        fields: Mapping[Any, Any] | Sequence[Any],
        *,
        id: str = "*",
        maxlen: int | None = None,
        minid: str | None = None,
        approximate: bool = False,
        nomkstream: bool = False,
        producer: tuple[str, int] | None = None,
    ) -> str | None:
        """Append an entry (XADD); its ID once W replicas hold it, None with
        ``nomkstream`` when the stream does not exist. ``producer`` (id,
        sequence) makes a retry of the same sequence return the first ID
        instead of adding a duplicate."""
        flat = _flatten(fields)
        trim = None
        if maxlen is not None:
            trim = ["maxlen", maxlen, approximate, 0]
        elif minid is not None:
            trim = ["minid", _wid(S.parse_id(minid.encode())), approximate, 0]
        prod = None if producer is None else [producer[0].encode(), producer[1]]
        try:
            got = await self.call(key, "add", flat, id.encode(), nomkstream, trim, prod)
        except StreamError as exc:  # pragma: no cover - raised at the leader
            raise StreamCommandError(exc.message) from None
        return None if got is None else f"{got[0]}-{got[1]}"

    async def flush(self) -> None:
        """Delete every stream of the cluster (FLUSHALL): each member drops its
        replicas. Like the key-value store's flush, a member that is down
        keeps its copies and hands them back when it returns."""
        await self.app.broadcast("flush", None)

    async def length(self, key: bytes) -> int:
        """Number of entries (XLEN)."""
        return int(await self.call(key, "len"))

    async def range(
        self, key: bytes, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[Entry]:
        """Entries with IDs from ``start`` to ``end`` inclusive (XRANGE)."""
        a = MIN_ID if start == "-" else S.parse_id(start.encode(), 0)
        b = MAX_ID if end == "+" else S.parse_id(end.encode(), S.U64)
        got = await self.call(key, "range", _wid(a), _wid(b), count, False)
        return [_entry(raw) for raw in got]

    def group(self, key: bytes, name: str) -> GroupHandle:
        """A handle on consumer group ``name`` of stream ``key``."""
        return GroupHandle(self, key, name.encode())

    async def read_group(
        self,
        key: bytes,
        group: bytes,
        consumer: bytes,
        count: int | None,
        block: float | None,
        noack: bool = False,
    ) -> list[Any]:
        """XREADGROUP ``>`` on one stream, blocking up to ``block`` s (0: forever;
        None: not at all); the raw entries."""
        clock = self.app.clock
        deadline = None if not block else clock.monotonic() + block
        while True:
            got = await self.call(key, "rgroup", group, consumer, None, count, noack)
            if got or block is None:
                return list(got)
            left = 3600.0 if deadline is None else deadline - clock.monotonic()
            if left <= 0:
                return []
            await self.wait(key, None, group, left)


def _decode(raw: Any) -> Stream:
    try:
        return Stream.from_wire(raw)
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidRequest(f"malformed stream state: {exc}") from None


# -- the leader's operations: (service, key, stream or None, args, now_ms) ->
#    (reply, delta or None, create) ------------------------------------------------------

Result = tuple[Any, Stream | None, bool]


def _trim_arg(raw: Any) -> Trim | None:
    if raw is None:
        return None
    kind, value, approx, limit = raw
    if kind == "maxlen":
        return Trim(maxlen=int(value), approx=bool(approx), limit=int(limit))
    return Trim(minid=_rid(value), approx=bool(approx), limit=int(limit))


def _op_add(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    fields, spec, nomkstream, trim, producer = args
    if s is None:
        if nomkstream:
            return None, None, False
        s = Stream()
        created = True
    else:
        created = False
    prod = None if producer is None else (bytes(producer[0]), int(producer[1]))
    i, delta = S.xadd(s, [bytes(f) for f in fields], bytes(spec), now, _trim_arg(trim), prod)
    svc.adds += 1
    return _wid(i), delta, created


def _need(s: Stream | None) -> Stream:
    assert s is not None
    return s


def _op_len(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    return (0 if s is None else len(s)), None, False


def _op_range(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    start, end, count, rev = args
    if s is None:
        return [], None, False
    a, b = _rid(start), _rid(end)
    items = s.revrange(b, a, count) if rev else s.range(a, b, count)
    return _entries(items), None, False


def _op_read(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    after, count = args
    if s is None:
        return [_wid(MIN_ID) if after is None else after, []], None, False
    a = s.last_id if after is None else _rid(after)
    return [_wid(a), _entries(s.after(a, count))], None, False


def _op_del(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    if s is None:
        return 0, None, False
    n, delta = S.xdel(s, [_rid(i) for i in args[0]])
    return n, (delta if n else None), False


def _op_trim(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    if s is None:
        return 0, None, False
    trim = _trim_arg(args[0])
    assert trim is not None
    n, delta = S.xtrim(s, trim)
    return n, (delta if n else None), False


def _group(key: bytes, s: Stream | None, name: bytes, suffix: str = "") -> tuple[Stream, S.Group]:
    g = None if s is None else S.get_group(s, name)
    if s is None or g is None:
        raise S.nogroup(key, name, suffix)
    return s, g


def _nogroup_setid(key: bytes, s: Stream | None, name: bytes) -> tuple[Stream, S.Group]:
    g = None if s is None else S.get_group(s, name)
    if s is None or g is None:
        k, n = key.decode("utf-8", "replace"), name.decode("utf-8", "replace")
        raise StreamError(f"NOGROUP No such consumer group '{n}' for key name '{k}'")
    return s, g


def _op_gcreate(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    name, last, mkstream, entries_read = args
    created = False
    if s is None:
        if not mkstream:
            raise StreamError(
                "ERR The XGROUP subcommand requires the key to exist. Note that for CREATE "
                "you may want to use the MKSTREAM option to create an empty stream automatically."
            )
        s = Stream()
        created = True
    cursor = s.last_id if last is None else _rid(last)
    _, delta = S.group_create(s, bytes(name), cursor, entries_read)
    return True, delta, created


def _op_gdestroy(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    if s is None:
        raise StreamError(
            "ERR The XGROUP subcommand requires the key to exist. Note that for CREATE "
            "you may want to use the MKSTREAM option to create an empty stream automatically."
        )
    n, delta = S.group_destroy(s, bytes(args[0]))
    return n, (delta if n else None), False


def _op_gsetid(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    name, last, entries_read = args
    s, g = _nogroup_setid(key, s, bytes(name))
    cursor = s.last_id if last is None else _rid(last)
    return True, S.group_setid(s, bytes(name), g, cursor, entries_read), False


def _op_gdlq(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    name, max_deliveries, target = bytes(args[0]), int(args[1]), bytes(args[2])
    if max_deliveries < 0:
        raise StreamError("ERR max-deliveries must be >= 0")
    if max_deliveries and (not target or target == key):
        raise StreamError("ERR the dead-letter stream must be another stream")
    s, g = _nogroup_setid(key, s, name)
    return True, S.set_dead_letter(s, name, g, max_deliveries, target), False


def _op_gcreatec(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    name, consumer = bytes(args[0]), bytes(args[1])
    s, g = _nogroup_setid(key, s, name)
    n, delta = S.create_consumer(s, name, g, consumer, now)
    return n, (delta if n else None), False


def _op_gdelc(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    name, consumer = bytes(args[0]), bytes(args[1])
    s, g = _nogroup_setid(key, s, name)
    n, delta = S.del_consumer(s, name, g, consumer)
    return n, (delta if consumer in g.consumers else None), False


def _op_rgroup(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    name, consumer, after, count, noack = args
    name, consumer = bytes(name), bytes(consumer)
    s, g = _group(key, s, name, " in XREADGROUP with GROUP option")
    if after is None:
        got, delta = S.read_new(s, name, g, consumer, count, bool(noack), now)
        svc.deliveries += len(got)
        return _entries(got), delta, False
    hist, delta = S.read_history(s, name, g, consumer, _rid(after), count, now)
    svc.redeliveries += sum(1 for _, f in hist if f is not None)
    return _entries(hist), delta, False


def _op_ack(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    name = bytes(args[0])
    g = None if s is None else S.get_group(s, name)
    if s is None or g is None:
        return 0, None, False
    n, delta = S.ack(s, name, g, [_rid(i) for i in args[1]])
    svc.acks += n
    return n, (delta if n else None), False


def _op_pending(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    name, ext = bytes(args[0]), args[1]
    s, g = _group(key, s, name)
    pending = g.pending()
    if ext is None:
        if not pending:
            return [0, None, None, None], None, False
        per: dict[bytes, int] = {}
        for _, c in pending:
            assert c[1] is not None
            per[c[1]] = per.get(c[1], 0) + 1
        summary = [[n, b"%d" % k] for n, k in sorted(per.items())]
        return [len(pending), _wid(pending[0][0]), _wid(pending[-1][0]), summary], None, False
    idle, start, end, count, consumer = ext
    a, b = _rid(start), _rid(end)
    out: list[Any] = []
    for i, c in pending:
        if len(out) >= count:
            break
        if i < a or i > b or (consumer is not None and c[1] != consumer):
            continue
        if idle is not None and now - c[2] < idle:
            continue
        out.append([_wid(i), c[1], max(0, now - c[2]), c[3]])
    return out, None, False


def _op_claim(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    name, consumer, min_idle, ids, idle, time_ms, retry, force, justid, lastid = args
    name, consumer = bytes(name), bytes(consumer)
    s, g = _group(key, s, name)
    delivered = now - idle if idle is not None else time_ms
    got, delta = S.claim(
        s, name, g, consumer, int(min_idle), [_rid(i) for i in ids], now,
        delivered_ms=delivered, retrycount=retry, force=bool(force), justid=bool(justid),
        lastid=None if lastid is None else _rid(lastid),
    )  # fmt: skip
    svc.redeliveries += len(got)
    if justid:
        return [_wid(i) for i, _ in got], delta, False
    return _entries(got), delta, False


def _op_autoclaim(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    name, consumer, min_idle, start, count, justid = args
    name, consumer = bytes(name), bytes(consumer)
    s, g = _group(key, s, name)
    (nxt, got, deleted), delta = S.autoclaim(
        s, name, g, consumer, int(min_idle), _rid(start), int(count), now, bool(justid)
    )
    svc.redeliveries += len(got)
    claimed = [_wid(i) for i, _ in got] if justid else _entries(got)
    return [_wid(nxt), claimed, [_wid(i) for i in deleted]], delta, False


def _op_info(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    kind = args[0]
    if s is None:
        raise StreamError("ERR no such key")
    if kind == "stream":
        groups = sum(1 for g in s.groups.values() if g.alive)
        first = s.range(MIN_ID, MAX_ID, 1)
        last = s.revrange(MAX_ID, MIN_ID, 1)
        return (
            [
                len(s),
                _wid(s.last_id),
                _wid(s.max_deleted),
                s.added,
                _wid(first[0][0] if first else MIN_ID),
                groups,
                _entries(first)[0] if first else None,
                _entries(last)[0] if last else None,
            ],
            None,
            False,
        )
    if kind == "groups":
        out = []
        for name, g in sorted(s.groups.items()):
            if not g.alive:
                continue
            lag = S.lag(s, g)
            out.append(
                [name, len(g.live_consumers()), len(g.pending()), _wid(g.last_id),
                 g.entries_read, lag]
            )  # fmt: skip
        return out, None, False
    name = bytes(args[1])
    s, g = _group(key, s, name)
    rows = []
    per: dict[bytes, int] = {}
    for _, c in g.pending():
        assert c[1] is not None
        per[c[1]] = per.get(c[1], 0) + 1
    for cname, cc in sorted(g.live_consumers().items()):
        inactive = -1 if cc[3] < 0 else max(0, now - cc[3])
        rows.append([cname, per.get(cname, 0), max(0, now - cc[2]), inactive])
    return rows, None, False


def _op_exists(svc: Streams, key: bytes, s: Stream | None, args: list[Any], now: int) -> Result:
    if s is None:
        return [False, None], None, False
    return [True, [[n, _wid(g.last_id)] for n, g in s.groups.items() if g.alive]], None, False


#: operations that change nothing (retried at another leader after a lost connection)
_READ_ONLY = frozenset({"len", "range", "read", "pending", "info", "exists"})

#: operations that deliver pending entries again (the dead-letter check runs first)
_DELIVERING = frozenset({"rgroup", "claim", "autoclaim"})

_OPS = {
    "add": _op_add,
    "len": _op_len,
    "range": _op_range,
    "read": _op_read,
    "del": _op_del,
    "trim": _op_trim,
    "gcreate": _op_gcreate,
    "gdestroy": _op_gdestroy,
    "gsetid": _op_gsetid,
    "gcreatec": _op_gcreatec,
    "gdlq": _op_gdlq,
    "gdelc": _op_gdelc,
    "rgroup": _op_rgroup,
    "ack": _op_ack,
    "pending": _op_pending,
    "claim": _op_claim,
    "autoclaim": _op_autoclaim,
    "info": _op_info,
    "exists": _op_exists,
}


@dataclass(slots=True)
class Entry:
    """One stream entry as the embedded API returns it."""

    id: str
    fields: dict[bytes, bytes]
    _group: GroupHandle | None = None

    async def ack(self) -> bool:
        """Acknowledge this entry in the group it was read from (XACK)."""
        if self._group is None:
            raise InvalidRequest("this entry was not read through a consumer group")
        return await self._group.ack(self.id) == 1


def _entry(raw: Any, group: GroupHandle | None = None) -> Entry:
    i, fields = raw
    f = fields or []
    return Entry(f"{i[0]}-{i[1]}", dict(zip(f[::2], f[1::2], strict=True)), group)


def _flatten(fields: Mapping[Any, Any] | Sequence[Any]) -> list[bytes]:
    items = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
    flat = [x for kv in items for x in kv] if isinstance(fields, Mapping) else items
    if not flat or len(flat) % 2:
        raise InvalidRequest("an entry needs at least one field and a value for every field")
    return [x.encode() if isinstance(x, str) else bytes(x) for x in flat]


class GroupHandle:
    """A consumer group of one stream, for the embedded API."""

    def __init__(self, streams: Streams, key: bytes, name: bytes) -> None:
        self.streams = streams
        self.key = key
        self.name = name

    async def create(
        self, start: str = "$", *, mkstream: bool = True, exist_ok: bool = True
    ) -> bool:
        """XGROUP CREATE; False when it existed and ``exist_ok``."""
        last = None if start == "$" else _wid(S.parse_id(start.encode()))
        try:
            return bool(
                await self.streams.call(self.key, "gcreate", self.name, last, mkstream, None)
            )
        except StreamCommandError as exc:
            if exist_ok and str(exc).startswith("BUSYGROUP"):
                return False
            raise

    async def dead_letter(self, max_deliveries: int, stream: bytes) -> None:
        """Beyond Redis: an entry delivered ``max_deliveries`` times (first
        delivery included) is moved to ``stream`` -- its fields preceded by
        ``source-stream``, ``source-group``, ``source-id`` and ``deliveries``
        -- and acknowledged here, instead of being delivered again (0: off)."""
        await self.streams.call(self.key, "gdlq", self.name, max_deliveries, stream)

    async def read(
        self, consumer: str, count: int | None = 10, block: float | None = None
    ) -> list[Entry]:
        """New entries for ``consumer`` (XREADGROUP ``>``), blocking up to ``block`` s."""
        got = await self.streams.read_group(self.key, self.name, consumer.encode(), count, block)
        return [_entry(raw, self) for raw in got]

    async def pending(self, consumer: str) -> list[Entry]:
        """``consumer``'s pending entries (XREADGROUP with ID 0); their delivery
        counts grow. Deleted entries come with empty fields."""
        got = await self.streams.call(
            self.key, "rgroup", self.name, consumer.encode(), [0, 0], None, False
        )
        return [_entry(raw, self) for raw in got]

    async def consume(
        self, consumer: str, *, count: int = 10, block: float = 1.0
    ) -> AsyncIterator[Entry]:
        """Every entry of the group for ``consumer``: first its own pending
        entries (a restarted worker finishes what it had), then new ones,
        waiting for more; acknowledge each with ``await entry.ack()``.
        Cancelling the iterating task stops it cleanly."""
        for entry in await self.pending(consumer):
            if entry.fields:
                yield entry
        while True:
            for entry in await self.read(consumer, count, block):
                yield entry

    async def ack(self, *ids: str) -> int:
        """XACK: how many of ``ids`` were pending and are now acknowledged."""
        wire = [_wid(S.parse_id(i.encode())) for i in ids]
        return int(await self.streams.call(self.key, "ack", self.name, wire))

    async def claim(self, consumer: str, min_idle: float, count: int = 100) -> list[Entry]:
        """XAUTOCLAIM from 0-0: entries idle at least ``min_idle`` s move to ``consumer``."""
        got = await self.streams.call(
            self.key, "autoclaim", self.name, consumer.encode(), int(min_idle * 1000), [0, 0],
            count, False,
        )  # fmt: skip
        return [_entry(raw, self) for raw in got[1]]
