"""Redis 7.2 stream commands over the replicated :class:`~peer_ring.apps.streams.Streams`.

Argument rules, replies and error texts follow Redis 7.2 (``t_stream.c``);
differences are listed in ``docs/streams.md``. Every command runs at the
stream's leader (any node forwards it); blocking reads (``XREAD``/
``XREADGROUP`` with ``BLOCK``) wait in the connection's worker task, like
Redis blocks the client, and are re-checked each time the leader reports
new entries. Streams live in their own keyspace: ``GET``/``DEL``/``TYPE``
of the key-value store do not see them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from peer_ring.apps.streams import StreamCommandError, Streams
from peer_ring.apps.streams._state import (
    MAX_ID,
    MIN_ID,
    U64,
    StreamError,
    parse_id,
    predecessor,
    successor,
)
from peer_ring.server.resp._commands import parse_int
from peer_ring.server.resp._reply import OK, bulk, encode, integer
from peer_ring.server.resp._table import CommandError, command

if TYPE_CHECKING:
    from peer_ring.server.resp._server import RespConnection

_SYNTAX = "ERR syntax error"
_NOT_INT = "ERR value is not an integer or out of range"
_INVALID_ID = "ERR Invalid stream ID specified as stream command argument"


def _svc(c: RespConnection) -> Streams:
    svc = c.server.apps.get("streams")
    if svc is None:
        raise CommandError("ERR streams are not enabled on this node")
    assert isinstance(svc, Streams)
    return svc


async def _call(c: RespConnection, key: bytes, op: str, *args: Any) -> Any:
    try:
        return await _svc(c).call(key, op, *args)
    except StreamCommandError as exc:
        raise CommandError(str(exc)) from None


def _id(raw: bytes, missing_seq: int = 0) -> list[int]:
    try:
        i = parse_id(raw, missing_seq)
    except StreamError as exc:
        raise CommandError(exc.message) from None
    return [i[0], i[1]]


def _fid(i: Any) -> bytes:
    return b"%d-%d" % (i[0], i[1])


def _entry(raw: Any) -> list[Any]:
    i, fields = raw
    return [_fid(i), fields]


def _entries(raws: Any) -> list[Any]:
    return [_entry(r) for r in raws]


def _reply(c: RespConnection, value: Any) -> bytes:
    return encode(value, c.resp3)


def _nil_array(c: RespConnection) -> bytes:
    return b"_\r\n" if c.resp3 else b"*-1\r\n"


def _count(raw: bytes) -> int:
    n = parse_int(raw)
    return max(n, 0)


def _trim_args(args: list[bytes], i: int) -> tuple[list[Any], int]:
    """Parse ``MAXLEN|MINID [=|~] threshold [LIMIT count]`` at ``args[i]``."""
    kind = args[i].lower()
    i += 1
    approx = False
    if i < len(args) and args[i] in (b"=", b"~"):
        approx = args[i] == b"~"
        i += 1
    if i >= len(args):
        raise CommandError(_SYNTAX)
    if kind == b"maxlen":
        n = parse_int(args[i])
        if n < 0:
            raise CommandError("ERR The MAXLEN argument must be >= 0.")
        value: Any = n
    else:
        value = _id(args[i])
    i += 1
    limit = 0
    if i + 1 < len(args) and args[i].lower() == b"limit":
        limit = parse_int(args[i + 1])
        if limit < 0:
            raise CommandError("ERR The LIMIT argument must be >= 0.")
        if not approx:
            raise CommandError(
                "ERR syntax error, LIMIT cannot be used without the special ~ option"
            )
        i += 2
    return ["maxlen" if kind == b"maxlen" else "minid", value, approx, limit], i


# -- XADD, XLEN, XRANGE, XREVRANGE, XDEL, XTRIM ------------------------------------------------


@command(
    "xadd",
    -5,
    "write denyoom fast",
    keys=(1, 1, 1),
    acl="@write @stream @fast",
    group="stream",
    summary="Append an entry once W replicas hold it (IDMP <producer> <seq>: idempotent).",
    since="5.0.0",
)
async def cmd_xadd(c: RespConnection, args: list[bytes]) -> bytes:
    key = args[1]
    i = 2
    nomkstream = False
    trim = None
    producer = None
    n = len(args)
    while i < n:
        opt = args[i].lower()
        if opt == b"nomkstream":
            nomkstream = True
            i += 1
        elif opt in (b"maxlen", b"minid"):
            trim, i = _trim_args(args, i)
        elif opt == b"idmp" and i + 2 < n:
            seq = parse_int(args[i + 2])
            if seq < 0:
                raise CommandError("ERR IDMP sequence must be >= 0")
            producer = [args[i + 1], seq]
            i += 3
        else:
            break
    fields = args[i + 1 :]
    if i >= n or not fields or len(fields) % 2:
        raise CommandError("ERR wrong number of arguments for 'xadd' command")
    spec = args[i]
    if spec != b"*" and not spec.endswith(b"-*"):
        _id(spec)
    elif spec.endswith(b"-*"):
        _id(spec[:-2])
    got = await _call(c, key, "add", fields, spec, nomkstream, trim, producer)
    return c.nil if got is None else bulk(_fid(got))


@command(
    "xlen",
    2,
    "readonly fast",
    keys=(1, 1, 1),
    acl="@read @stream @fast",
    group="stream",
    summary="Number of entries.",
    since="5.0.0",
)
async def cmd_xlen(c: RespConnection, args: list[bytes]) -> bytes:
    return integer(await _call(c, args[1], "len"))


def _range_bound(raw: bytes, start: bool) -> list[int]:
    if raw == b"-":
        return [*MIN_ID]
    if raw == b"+":
        return [*MAX_ID]
    exclusive = raw.startswith(b"(")
    body = raw[1:] if exclusive else raw
    i = _id(body, 0 if start else U64)
    t = (i[0], i[1])
    if exclusive:
        if start:
            if t == MAX_ID:
                raise CommandError("ERR invalid start ID for the interval")
            t = successor(t)
        else:
            if t == MIN_ID:
                raise CommandError("ERR invalid end ID for the interval")
            t = predecessor(t)
    return [t[0], t[1]]


async def _range(c: RespConnection, args: list[bytes], rev: bool) -> bytes:
    key = args[1]
    if rev:
        end, start = _range_bound(args[2], False), _range_bound(args[3], True)
    else:
        start, end = _range_bound(args[2], True), _range_bound(args[3], False)
    count = None
    if len(args) == 6 and args[4].lower() == b"count":
        count = _count(args[5])
    elif len(args) != 4:
        raise CommandError(_SYNTAX)
    if count == 0:
        return b"*0\r\n"
    return _reply(c, _entries(await _call(c, key, "range", start, end, count, rev)))


@command(
    "xrange",
    -4,
    "readonly",
    keys=(1, 1, 1),
    acl="@read @stream @slow",
    group="stream",
    summary="Entries in an ID interval.",
    since="5.0.0",
)
async def cmd_xrange(c: RespConnection, args: list[bytes]) -> bytes:
    return await _range(c, args, False)


@command(
    "xrevrange",
    -4,
    "readonly",
    keys=(1, 1, 1),
    acl="@read @stream @slow",
    group="stream",
    summary="Entries in an ID interval, newest first.",
    since="5.0.0",
)
async def cmd_xrevrange(c: RespConnection, args: list[bytes]) -> bytes:
    return await _range(c, args, True)


@command(
    "xdel",
    -3,
    "write fast",
    keys=(1, 1, 1),
    acl="@write @stream @fast",
    group="stream",
    summary="Delete entries by ID.",
    since="5.0.0",
)
async def cmd_xdel(c: RespConnection, args: list[bytes]) -> bytes:
    ids = [_id(a) for a in args[2:]]
    return integer(await _call(c, args[1], "del", ids))


@command(
    "xtrim",
    -4,
    "write",
    keys=(1, 1, 1),
    acl="@write @stream @slow",
    group="stream",
    summary="Trim by MAXLEN or MINID.",
    since="5.0.0",
)
async def cmd_xtrim(c: RespConnection, args: list[bytes]) -> bytes:
    if args[2].lower() not in (b"maxlen", b"minid"):
        raise CommandError(_SYNTAX)
    trim, i = _trim_args(args, 2)
    if i != len(args):
        raise CommandError(_SYNTAX)
    return integer(await _call(c, args[1], "trim", trim))


# -- XREAD, XREADGROUP --------------------------------------------------------------------------


def _block_arg(raw: bytes) -> float:
    ms = parse_int(raw, "ERR timeout is not an integer or out of range")
    if ms < 0:
        raise CommandError("ERR timeout is negative")
    return ms / 1000.0


def _streams_args(args: list[bytes], i: int, name: str) -> tuple[list[bytes], list[bytes]]:
    rest = args[i:]
    if not rest or len(rest) % 2:
        raise CommandError(
            f"ERR Unbalanced '{name}' list of streams: for each stream key an ID or '$' must be "
            "specified."
        )
    half = len(rest) // 2
    return rest[:half], rest[half:]


async def _wait_any(
    svc: Streams, waits: list[tuple[bytes, Any, bytes | None]], left: float
) -> None:
    """Wait until one stream reports news (or ``left`` s passed)."""
    if len(waits) == 1:
        key, after, group = waits[0]
        await svc.wait(key, after, group, left)
        return
    tasks = [asyncio.ensure_future(svc.wait(k, a, g, left)) for k, a, g in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _stream_reply(c: RespConnection, rows: list[tuple[bytes, list[Any]]]) -> bytes:
    if c.resp3:
        return encode(dict(rows), True)
    return encode([[k, v] for k, v in rows], False)


@command(
    "xread",
    -4,
    "readonly blocking",
    keys=(0, 0, 0),
    acl="@read @stream @slow @blocking",
    group="stream",
    summary="Read entries after IDs from one or more streams, optionally blocking.",
    since="5.0.0",
)
async def cmd_xread(c: RespConnection, args: list[bytes]) -> bytes:
    count = None
    block: float | None = None
    i = 1
    while i < len(args):
        opt = args[i].lower()
        if opt == b"count" and i + 1 < len(args):
            count = _count(args[i + 1]) or None
            i += 2
        elif opt == b"block" and i + 1 < len(args):
            block = _block_arg(args[i + 1])
            i += 2
        elif opt == b"streams":
            i += 1
            break
        else:
            raise CommandError(_SYNTAX)
    else:
        raise CommandError(_SYNTAX)
    keys, raw_ids = _streams_args(args, i, "xread")
    afters: list[Any] = []
    for raw in raw_ids:
        if raw == b"$":
            afters.append(None)
        elif raw == b">":
            raise CommandError(
                "ERR The > ID can be specified only when calling XREADGROUP using the GROUP "
                "<group> <consumer> option."
            )
        else:
            afters.append(_id(raw))
    svc = _svc(c)
    clock = svc.app.clock
    deadline = None if block is None or block == 0 else clock.monotonic() + block
    while True:
        rows = []
        for k, key in enumerate(keys):
            resolved, got = await _call(c, key, "read", afters[k], count)
            afters[k] = resolved  # '$' is resolved once, at the first round
            if got:
                rows.append((key, _entries(got)))
        if rows:
            return _stream_reply(c, rows)
        if block is None:
            return _nil_array(c)
        left = 3600.0 if deadline is None else deadline - clock.monotonic()
        if left <= 0:
            return _nil_array(c)
        await _wait_any(
            svc, [(k, (a[0], a[1]), None) for k, a in zip(keys, afters, strict=True)], left
        )


@command(
    "xreadgroup",
    -7,
    "write blocking",
    keys=(0, 0, 0),
    acl="@write @stream @slow @blocking",
    group="stream",
    summary="Read through a consumer group: new entries ('>') or the consumer's pending ones.",
    since="5.0.0",
)
async def cmd_xreadgroup(c: RespConnection, args: list[bytes]) -> bytes:
    count = None
    block: float | None = None
    noack = False
    group = consumer = None
    i = 1
    while i < len(args):
        opt = args[i].lower()
        if opt == b"group" and i + 2 < len(args):
            group, consumer = args[i + 1], args[i + 2]
            i += 3
        elif opt == b"count" and i + 1 < len(args):
            count = _count(args[i + 1]) or None
            i += 2
        elif opt == b"block" and i + 1 < len(args):
            block = _block_arg(args[i + 1])
            i += 2
        elif opt == b"noack":
            noack = True
            i += 1
        elif opt == b"streams":
            i += 1
            break
        else:
            raise CommandError(_SYNTAX)
    else:
        raise CommandError(_SYNTAX)
    if group is None or consumer is None:
        raise CommandError("ERR Missing GROUP option for XREADGROUP")
    keys, raw_ids = _streams_args(args, i, "xreadgroup")
    afters: list[Any] = []
    for raw in raw_ids:
        if raw == b">":
            afters.append(None)
        elif raw == b"$":
            raise CommandError(
                "ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the "
                "history of this consumer by specifying a proper ID, or use the > ID to get new "
                "messages. The $ ID would just return an empty result set."
            )
        else:
            afters.append(_id(raw))
    svc = _svc(c)
    clock = svc.app.clock
    deadline = None if block is None or block == 0 else clock.monotonic() + block
    while True:
        rows = []
        history = False
        for k, key in enumerate(keys):
            got = await _call(c, key, "rgroup", group, consumer, afters[k], count, noack)
            if afters[k] is not None:
                history = True
                rows.append((key, [_entry(r) for r in got]))
            elif got:
                rows.append((key, _entries(got)))
        if rows and (history or any(r[1] for r in rows)):
            return _stream_reply(c, rows)
        if block is None:
            return _nil_array(c)
        left = 3600.0 if deadline is None else deadline - clock.monotonic()
        if left <= 0:
            return _nil_array(c)
        await _wait_any(svc, [(k, None, group) for k in keys], left)


# -- XGROUP ------------------------------------------------------------------------------------


@command(
    "xgroup", -2, "", acl="@slow", group="stream", summary="Manage consumer groups.", since="5.0.0"
)
async def cmd_xgroup(c: RespConnection, args: list[bytes]) -> bytes:
    raise AssertionError("dispatched to subcommands")  # pragma: no cover


def _group_id(raw: bytes) -> list[int] | None:
    return None if raw == b"$" else _id(raw)


def _entries_read(args: list[bytes], i: int) -> tuple[int | None, int]:
    if i + 1 < len(args) and args[i].lower() == b"entriesread":
        n = parse_int(args[i + 1])
        if n < 0 and n != -1:
            raise CommandError("ERR value for ENTRIESREAD must be positive or -1")
        return (None if n == -1 else n), i + 2
    return None, i


@command(
    "create",
    -5,
    "write denyoom",
    container="xgroup",
    keys=(2, 2, 1),
    acl="@write @stream @slow",
    group="stream",
    summary="Create a consumer group.",
    since="5.0.0",
)
async def cmd_xgroup_create(c: RespConnection, args: list[bytes]) -> bytes:
    key, group, last = args[2], args[3], _group_id(args[4])
    mkstream = False
    entries_read = None
    i = 5
    while i < len(args):
        if args[i].lower() == b"mkstream":
            mkstream = True
            i += 1
            continue
        entries_read, j = _entries_read(args, i)
        if j == i:
            raise CommandError(_SYNTAX)
        i = j
    await _call(c, key, "gcreate", group, last, mkstream, entries_read)
    return OK


@command(
    "destroy",
    4,
    "write",
    container="xgroup",
    keys=(2, 2, 1),
    acl="@write @stream @slow",
    group="stream",
    summary="Destroy a consumer group.",
    since="5.0.0",
)
async def cmd_xgroup_destroy(c: RespConnection, args: list[bytes]) -> bytes:
    return integer(await _call(c, args[2], "gdestroy", args[3]))


@command(
    "setid",
    -5,
    "write",
    container="xgroup",
    keys=(2, 2, 1),
    acl="@write @stream @slow",
    group="stream",
    summary="Set a group's last-delivered ID.",
    since="5.0.0",
)
async def cmd_xgroup_setid(c: RespConnection, args: list[bytes]) -> bytes:
    entries_read, i = _entries_read(args, 5)
    if i != len(args):
        raise CommandError(_SYNTAX)
    await _call(c, args[2], "gsetid", args[3], _group_id(args[4]), entries_read)
    return OK


@command(
    "createconsumer",
    5,
    "write denyoom",
    container="xgroup",
    keys=(2, 2, 1),
    acl="@write @stream @slow",
    group="stream",
    summary="Create a consumer in a group.",
    since="6.2.0",
)
async def cmd_xgroup_createconsumer(c: RespConnection, args: list[bytes]) -> bytes:
    return integer(await _call(c, args[2], "gcreatec", args[3], args[4]))


@command(
    "delconsumer",
    5,
    "write",
    container="xgroup",
    keys=(2, 2, 1),
    acl="@write @stream @slow",
    group="stream",
    summary="Delete a consumer (its pending entries are dropped).",
    since="5.0.0",
)
async def cmd_xgroup_delconsumer(c: RespConnection, args: list[bytes]) -> bytes:
    return integer(await _call(c, args[2], "gdelc", args[3], args[4]))


@command(
    "deadletter",
    6,
    "write",
    container="xgroup",
    keys=(2, 2, 1),
    acl="@write @stream @slow",
    group="stream",
    summary="peer-ring: move entries delivered max-deliveries times to another stream.",
    since="7.2.0",
)
async def cmd_xgroup_deadletter(c: RespConnection, args: list[bytes]) -> bytes:
    n = parse_int(args[4])
    await _call(c, args[2], "gdlq", args[3], n, args[5])
    return OK


# -- XACK, XPENDING, XCLAIM, XAUTOCLAIM ----------------------------------------------------


@command(
    "xack",
    -4,
    "write fast",
    keys=(1, 1, 1),
    acl="@write @stream @fast",
    group="stream",
    summary="Acknowledge pending entries.",
    since="5.0.0",
)
async def cmd_xack(c: RespConnection, args: list[bytes]) -> bytes:
    ids = [_id(a) for a in args[3:]]
    return integer(await _call(c, args[1], "ack", args[2], ids))


@command(
    "xpending",
    -3,
    "readonly",
    keys=(1, 1, 1),
    acl="@read @stream @slow",
    group="stream",
    summary="Pending entries of a group: a summary, or the entries in an interval.",
    since="5.0.0",
)
async def cmd_xpending(c: RespConnection, args: list[bytes]) -> bytes:
    key, group = args[1], args[2]
    n = len(args)
    if n == 3:
        total, lo, hi, per = await _call(c, key, "pending", group, None)
        if not total:
            return _reply(c, [0, None, None, None])
        return _reply(c, [total, _fid(lo), _fid(hi), per])
    i = 3
    idle = None
    if args[i].lower() == b"idle":
        if n < 5:
            raise CommandError(_SYNTAX)
        idle = parse_int(args[i + 1])
        i += 2
    if n - i not in (3, 4):
        raise CommandError(_SYNTAX)
    start, end = _range_bound(args[i], True), _range_bound(args[i + 1], False)
    count = _count(args[i + 2])
    consumer = args[i + 3] if n - i == 4 else None
    rows = await _call(c, key, "pending", group, [idle, start, end, count, consumer])
    return _reply(c, [[_fid(r[0]), r[1], r[2], r[3]] for r in rows])


@command(
    "xclaim",
    -6,
    "write fast",
    keys=(1, 1, 1),
    acl="@write @stream @fast",
    group="stream",
    summary="Move pending entries idle long enough to another consumer.",
    since="5.0.0",
)
async def cmd_xclaim(c: RespConnection, args: list[bytes]) -> bytes:
    key, group, consumer = args[1], args[2], args[3]
    min_idle = parse_int(args[4], "ERR Invalid min-idle-time argument for XCLAIM")
    min_idle = max(min_idle, 0)
    i = 5
    ids = []
    while i < len(args):
        try:
            ids.append(_id(args[i]))
        except CommandError:
            break
        i += 1
    idle = time_ms = retry = lastid = None
    force = justid = False
    while i < len(args):
        opt = args[i].lower()
        more = i + 1 < len(args)
        if opt == b"force":
            force = True
            i += 1
        elif opt == b"justid":
            justid = True
            i += 1
        elif opt == b"idle" and more:
            idle = max(0, parse_int(args[i + 1], "ERR Invalid IDLE option argument for XCLAIM"))
            i += 2
        elif opt == b"time" and more:
            time_ms = parse_int(args[i + 1], "ERR Invalid TIME option argument for XCLAIM")
            i += 2
        elif opt == b"retrycount" and more:
            retry = parse_int(args[i + 1], "ERR Invalid RETRYCOUNT option argument for XCLAIM")
            i += 2
        elif opt == b"lastid" and more:
            lastid = _id(args[i + 1])
            i += 2
        else:
            raise CommandError(
                f"ERR Unrecognized XCLAIM option '{args[i].decode('utf-8', 'replace')}'"
            )
    got = await _call(
        c, key, "claim", group, consumer, min_idle, ids, idle, time_ms, retry, force, justid, lastid
    )
    if justid:
        return _reply(c, [_fid(i) for i in got])
    return _reply(c, _entries(got))


@command(
    "xautoclaim",
    -6,
    "write fast",
    keys=(1, 1, 1),
    acl="@write @stream @fast",
    group="stream",
    summary="Claim idle pending entries, scanning the PEL like SCAN.",
    since="6.2.0",
)
async def cmd_xautoclaim(c: RespConnection, args: list[bytes]) -> bytes:
    key, group, consumer = args[1], args[2], args[3]
    min_idle = parse_int(args[4], "ERR Invalid min-idle-time argument for XAUTOCLAIM")
    min_idle = max(min_idle, 0)
    start = _range_bound(args[5], True)
    count = 100
    justid = False
    i = 6
    while i < len(args):
        opt = args[i].lower()
        if opt == b"count" and i + 1 < len(args):
            count = parse_int(args[i + 1])
            if count < 1 or count > (2**63 - 1) // 10:
                raise CommandError("ERR COUNT must be > 0")
            i += 2
        elif opt == b"justid":
            justid = True
            i += 1
        else:
            raise CommandError(_SYNTAX)
    nxt, claimed, deleted = await _call(
        c, key, "autoclaim", group, consumer, min_idle, start, count, justid
    )
    items = [_fid(i) for i in claimed] if justid else _entries(claimed)
    return _reply(c, [_fid(nxt), items, [_fid(d) for d in deleted]])


# -- XINFO -----------------------------------------------------------------------------------


@command(
    "xinfo", -2, "", acl="@slow", group="stream", summary="Stream introspection.", since="5.0.0"
)
async def cmd_xinfo(c: RespConnection, args: list[bytes]) -> bytes:
    raise AssertionError("dispatched to subcommands")  # pragma: no cover


@command(
    "stream",
    -3,
    "readonly",
    container="xinfo",
    keys=(2, 2, 1),
    acl="@read @stream @slow",
    group="stream",
    summary="A stream's length, IDs and first/last entries.",
    since="5.0.0",
)
async def cmd_xinfo_stream(c: RespConnection, args: list[bytes]) -> bytes:
    if len(args) > 3:
        raise CommandError("ERR FULL is not supported by peer-ring's XINFO STREAM")
    length, last, max_deleted, added, first_id, groups, first, last_entry = await _call(
        c, args[2], "info", "stream"
    )
    return _reply(
        c,
        {
            "length": length,
            "radix-tree-keys": 1 if length else 0,
            "radix-tree-nodes": 1 if length else 0,
            "last-generated-id": _fid(last),
            "max-deleted-entry-id": _fid(max_deleted),
            "entries-added": added,
            "recorded-first-entry-id": _fid(first_id),
            "groups": groups,
            "first-entry": None if first is None else _entry(first),
            "last-entry": None if last_entry is None else _entry(last_entry),
        },
    )


@command(
    "groups",
    3,
    "readonly",
    container="xinfo",
    keys=(2, 2, 1),
    acl="@read @stream @slow",
    group="stream",
    summary="A stream's consumer groups.",
    since="5.0.0",
)
async def cmd_xinfo_groups(c: RespConnection, args: list[bytes]) -> bytes:
    rows = await _call(c, args[2], "info", "groups")
    return _reply(
        c,
        [
            {
                "name": name,
                "consumers": consumers,
                "pending": pending,
                "last-delivered-id": _fid(last),
                "entries-read": entries_read,
                "lag": lag,
            }
            for name, consumers, pending, last, entries_read, lag in rows
        ],
    )


@command(
    "consumers",
    4,
    "readonly",
    container="xinfo",
    keys=(2, 2, 1),
    acl="@read @stream @slow",
    group="stream",
    summary="A group's consumers.",
    since="5.0.0",
)
async def cmd_xinfo_consumers(c: RespConnection, args: list[bytes]) -> bytes:
    rows = await _call(c, args[2], "info", "consumers", args[3])
    return _reply(
        c,
        [
            {"name": name, "pending": pending, "idle": idle, "inactive": inactive}
            for name, pending, idle, inactive in rows
        ],
    )
