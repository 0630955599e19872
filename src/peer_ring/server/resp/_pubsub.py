"""Redis 7.2 pub/sub commands over the cluster-wide :class:`~peer_ring.apps.pubsub.PubSub`.

A subscribed connection holds a :class:`Session` (``conn.pubsub``), the
local subscriber the service delivers to. Messages are written with
``RespConnection.push`` as RESP2 arrays or RESP3 push frames (``>``);
subscribe/unsubscribe confirmations go the same way, so they keep their
order with the messages. While subscribed, a RESP2 connection may only run
(P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE, PING, QUIT and RESET (the server enforces
it); RESP3 connections may run anything.

Slow subscribers: when a connection's unsent output passes
``PubSubConfig.buffer_bytes`` it is disconnected, with a log line and the
``slow_subscribers_dropped`` metric -- Redis's pubsub output-buffer limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from peer_ring.apps.pubsub import Message, PubSub
from peer_ring.apps.pubsub._service import CHANNEL, PATTERN, SHARD
from peer_ring.server.resp._reply import bulk, encode, integer
from peer_ring.server.resp._table import CommandError, Handler, command

if TYPE_CHECKING:
    from peer_ring.server.resp._server import RespConnection

log = logging.getLogger("peer_ring.server.resp")


def _svc(c: RespConnection) -> PubSub:
    svc = c.server.apps.get("pubsub")
    if svc is None:
        raise CommandError("ERR pub/sub is not enabled on this node")
    assert isinstance(svc, PubSub)
    return svc


def _frame(resp3: bool, items: list[bytes | int | None]) -> bytes:
    parts = [b">%d\r\n" % len(items) if resp3 else b"*%d\r\n" % len(items)]
    for item in items:
        if item is None:
            parts.append(b"_\r\n" if resp3 else b"$-1\r\n")
        elif isinstance(item, int):
            parts.append(integer(item))
        else:
            parts.append(bulk(item))
    return b"".join(parts)


class Session:
    """A connection's subscriptions; the :class:`~peer_ring.apps.pubsub.Subscriber`
    the service delivers to (on the event loop, never blocking)."""

    def __init__(self, conn: RespConnection, svc: PubSub) -> None:
        self.conn = conn
        self.svc = svc
        self.subs: dict[str, dict[bytes, None]] = {CHANNEL: {}, PATTERN: {}, SHARD: {}}
        self.closed = False

    def count(self, kind: str) -> int:
        """The count Redis reports: channels + patterns, or shard channels."""
        if kind == SHARD:
            return len(self.subs[SHARD])
        return len(self.subs[CHANNEL]) + len(self.subs[PATTERN])

    def empty(self) -> bool:
        return not any(self.subs.values())

    def _encode(self, message: Message) -> bytes:
        if message.kind == "pmessage":
            assert message.pattern is not None
            items: list[bytes | int | None] = [
                b"pmessage",
                message.pattern,
                message.channel,
                message.data,
            ]
        else:
            items = [message.kind.encode(), message.channel, message.data]
        return _frame(self.conn.resp3, items)

    def deliver(self, message: Message) -> bool:
        return self.deliver_many([message]) == 1

    def deliver_many(self, messages: list[Message]) -> int:
        """Write ``messages`` at once (one ``push``); how many were taken: all,
        or the ones that fit the output-buffer limit before the connection
        was disconnected as a slow subscriber."""
        conn = self.conn
        transport = conn.transport
        if self.closed or transport is None:
            return 0
        frames = [self._encode(m) for m in messages]
        room = self.svc.config.buffer_bytes - transport.get_write_buffer_size()
        size = sum(len(f) for f in frames)
        if size > room:
            took = 0
            while len(frames[took]) <= room:
                room -= len(frames[took])
                took += 1
            log.warning(
                "pubsub: disconnecting slow subscriber id=%d addr=%s (output buffer over %d bytes)",
                conn.id,
                conn.addr,
                self.svc.config.buffer_bytes,
            )
            self.close()
            transport.abort()
            return took
        conn.push(frames[0] if len(frames) == 1 else b"".join(frames))
        return len(frames)

    def close(self) -> None:
        """Leave everything at once (connection lost, RESET, slow subscriber)."""
        if not self.closed:
            self.closed = True
            self.svc.drop_subscriber(self)
            for kind in self.subs:
                self.subs[kind].clear()
        if self.conn.pubsub is self:
            self.conn.pubsub = None


def _session(c: RespConnection) -> Session:
    if c.pubsub is None:
        c.pubsub = Session(c, _svc(c))
    assert isinstance(c.pubsub, Session)
    return c.pubsub


_NAMES = {
    CHANNEL: (b"subscribe", b"unsubscribe"),
    PATTERN: (b"psubscribe", b"punsubscribe"),
    SHARD: (b"ssubscribe", b"sunsubscribe"),
}


async def _subscribe(c: RespConnection, kind: str, names: list[bytes]) -> bytes:
    s = _session(c)
    for name in names:
        if name not in s.subs[kind]:
            s.subs[kind][name] = None
            await s.svc.add_local(kind, name, s)
        c.push(_frame(c.resp3, [_NAMES[kind][0], name, s.count(kind)]))
    return b""


async def _unsubscribe(c: RespConnection, kind: str, names: list[bytes]) -> bytes:
    s = c.pubsub if isinstance(c.pubsub, Session) else None
    todo = names if names else list(s.subs[kind]) if s is not None else []
    if not todo:
        c.push(_frame(c.resp3, [_NAMES[kind][1], None, 0 if s is None else s.count(kind)]))
        return b""
    for name in todo:
        if s is not None and name in s.subs[kind]:
            del s.subs[kind][name]
            await s.svc.remove_local(kind, name, s)
        c.push(_frame(c.resp3, [_NAMES[kind][1], name, 0 if s is None else s.count(kind)]))
    if s is not None and s.empty():
        s.closed = True
        c.pubsub = None
    return b""


def _reg(name: str, arity: int, summary: str) -> Callable[[Handler], Handler]:
    return command(
        name,
        arity,
        "pubsub noscript loading stale",
        acl="@pubsub @slow",
        group="pubsub",
        summary=summary,
        since="7.0.0" if name.startswith(("ss", "su")) else "2.0.0",
    )


@_reg("subscribe", -2, "Listen for messages published to channels (anywhere in the cluster).")
async def cmd_subscribe(c: RespConnection, args: list[bytes]) -> bytes:
    return await _subscribe(c, CHANNEL, args[1:])


@_reg("unsubscribe", -1, "Stop listening to channels (all when none named).")
async def cmd_unsubscribe(c: RespConnection, args: list[bytes]) -> bytes:
    return await _unsubscribe(c, CHANNEL, args[1:])


@_reg("psubscribe", -2, "Listen for messages on channels matching glob patterns.")
async def cmd_psubscribe(c: RespConnection, args: list[bytes]) -> bytes:
    return await _subscribe(c, PATTERN, args[1:])


@_reg("punsubscribe", -1, "Stop listening to patterns (all when none named).")
async def cmd_punsubscribe(c: RespConnection, args: list[bytes]) -> bytes:
    return await _unsubscribe(c, PATTERN, args[1:])


@_reg("ssubscribe", -2, "Listen for messages published to shard channels.")
async def cmd_ssubscribe(c: RespConnection, args: list[bytes]) -> bytes:
    return await _subscribe(c, SHARD, args[1:])


@_reg("sunsubscribe", -1, "Stop listening to shard channels (all when none named).")
async def cmd_sunsubscribe(c: RespConnection, args: list[bytes]) -> bytes:
    return await _unsubscribe(c, SHARD, args[1:])


@command(
    "publish",
    3,
    "pubsub loading stale fast",
    acl="@pubsub @fast",
    group="pubsub",
    summary="Post a message to a channel; the cluster-wide number of receivers.",
    since="2.0.0",
)
async def cmd_publish(c: RespConnection, args: list[bytes]) -> bytes:
    return integer(await _svc(c).publish(args[1], args[2]))


@command(
    "spublish",
    3,
    "pubsub loading stale fast",
    keys=(1, 1, 1),
    acl="@pubsub @fast",
    group="pubsub",
    summary="Post a message to a shard channel; the number of receivers.",
    since="7.0.0",
)
async def cmd_spublish(c: RespConnection, args: list[bytes]) -> bytes:
    return integer(await _svc(c).publish(args[1], args[2], shard=True))


@command("pubsub", -2, "", acl="@slow", group="pubsub", summary="Pub/sub introspection.")
async def cmd_pubsub(c: RespConnection, args: list[bytes]) -> bytes:
    raise AssertionError("dispatched to subcommands")  # pragma: no cover


def _sub(name: str, arity: int, summary: str) -> Callable[[Handler], Handler]:
    return command(
        name,
        arity,
        "pubsub loading stale",
        container="pubsub",
        acl="@pubsub @slow",
        group="pubsub",
        summary=summary,
        since="2.8.0",
    )


@_sub("channels", -2, "Channels with subscribers anywhere in the cluster.")
async def cmd_pubsub_channels(c: RespConnection, args: list[bytes]) -> bytes:
    if len(args) > 3:
        raise CommandError("ERR wrong number of arguments for 'pubsub|channels' command")
    names = await _svc(c).channels(args[2] if len(args) == 3 else None)
    return encode(names, c.resp3)


@_sub("numsub", -2, "Subscribers of each channel, cluster-wide.")
async def cmd_pubsub_numsub(c: RespConnection, args: list[bytes]) -> bytes:
    svc = _svc(c)
    counts = {ch: await svc.numsub(ch) for ch in args[2:]}
    return encode([x for kv in counts.items() for x in kv], c.resp3)  # flat, RESP3 too


@_sub("numpat", 2, "Pattern subscriptions, cluster-wide.")
async def cmd_pubsub_numpat(c: RespConnection, args: list[bytes]) -> bytes:
    return integer(_svc(c).numpat())


@_sub("shardchannels", -2, "Shard channels with subscribers anywhere in the cluster.")
async def cmd_pubsub_shardchannels(c: RespConnection, args: list[bytes]) -> bytes:
    if len(args) > 3:
        raise CommandError("ERR wrong number of arguments for 'pubsub|shardchannels' command")
    names = await _svc(c).channels(args[2] if len(args) == 3 else None, shard=True)
    return encode(names, c.resp3)


@_sub("shardnumsub", -2, "Subscribers of each shard channel, cluster-wide.")
async def cmd_pubsub_shardnumsub(c: RespConnection, args: list[bytes]) -> bytes:
    svc = _svc(c)
    counts = {ch: await svc.numsub(ch, shard=True) for ch in args[2:]}
    return encode([x for kv in counts.items() for x in kv], c.resp3)  # flat, RESP3 too
