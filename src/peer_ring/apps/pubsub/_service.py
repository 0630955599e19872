"""Cluster-wide publish/subscribe routed through each channel's owner, not broadcast.

Invariants and design (``docs/pubsub.md``):

* **Subscription registry.** For every channel (and shard channel) the N
  owners of its partition keep a registry: which nodes have local
  subscribers, how many, until when (a lease). A node registers when its
  first local subscriber arrives -- at the channel's leader (the first live
  owner) first, then at W owners -- and before ``SUBSCRIBE`` answers, so a
  message published after the answer reaches the new subscriber. It
  refreshes its registrations every ``lease / 3`` seconds (this also
  repopulates owners after a ring change or a restart) and withdraws them
  when its last local subscriber leaves; a crashed node's entries expire
  after ``lease``. Cells merge by the registering node's stamp (a counter
  that only grows), so hinted handoff, transfer and anti-entropy apply.
* **Publishing.** ``PUBLISH`` goes to the channel's leader, which numbers
  the message (a per-channel sequence, so an embedded subscriber sees gaps)
  and sends it only to the nodes its registry lists; each delivers to its
  local subscribers. The receiver count is the sum of their answers: a
  cluster-wide count. Deliveries are coalesced: what the leader routes in
  one event-loop iteration leaves as one ``deliverm`` request per node, in
  routing order, and the node writes each subscriber's share of it at once
  (``Subscriber.deliver_many``: one write per connection). Under load the
  batches grow instead of the queue of per-message requests.
* **Patterns** can match any channel, so they cannot live with one channel's
  owners: every node tells every member its own pattern table (on change and
  every ``lease / 3`` while it has patterns, and for one lease after its last
  one went; a node without patterns sends nothing in the background); the
  publishing node matches the channel against the tables and sends the
  message directly to the nodes with a match. Patterns are few; messages
  never go to nodes without a matching subscriber.
* **Delivery** is at most once per subscriber; with no fault, each
  subscriber gets a publisher's messages on a channel exactly once and in
  publish order (one publisher awaits each publish before the next). A
  node failure loses the messages in flight to it; a leader change can lose
  messages published before the new leader learned a registration (at most
  one refresh period).
* **Slow subscribers.** Each subscriber has a bounded buffer
  (``PubSubConfig.buffer_messages`` for embedded ones; network surfaces
  bound theirs in bytes); when it is full the subscriber is dropped, with a
  log line and the ``slow_subscribers_dropped`` metric. Never unbounded
  memory.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from peer_ring.app import (
    AppContext,
    ClosedError,
    ConnectionLost,
    InvalidRequest,
    Metric,
    NotOwner,
    PeerRingError,
    PeerUnavailable,
    Record,
    RemoteError,
    Request,
    RingMismatch,
    Service,
    UnknownCommand,
)
from peer_ring.apps.pubsub._glob import glob_match, is_pattern

__all__ = ["Message", "PubSub", "PubSubConfig", "SlowSubscriber", "Subscriber", "Subscription"]

log = logging.getLogger("peer_ring.apps.pubsub")

#: Subscription kinds: a channel, a shard channel (SSUBSCRIBE), a pattern.
CHANNEL, SHARD, PATTERN = "c", "s", "p"


@dataclass(frozen=True, slots=True)
class PubSubConfig:
    """Settings of the pub/sub service."""

    #: Seconds a registration lives unless refreshed (every ``lease / 3``).
    #: Longer: fewer refresh messages, but a crashed node is sent messages
    #: for longer; shorter: more refresh traffic. Node clocks must agree to
    #: well within it.
    lease: float = 15.0
    #: Messages an embedded subscriber may have unread before it is dropped.
    buffer_messages: int = 10_000
    #: Bytes a network subscriber (a RESP connection) may have unsent before it
    #: is disconnected: Redis's pubsub output-buffer hard limit (32 MiB).
    buffer_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.lease <= 0 or self.buffer_messages < 1 or self.buffer_bytes < 1:
            raise InvalidRequest(
                "PubSubConfig: lease > 0, buffer_messages >= 1 and buffer_bytes >= 1"
            )


@dataclass(frozen=True, slots=True)
class Message:
    """One delivered message.

    ``seq`` numbers the messages of one channel at the leader that routed
    them (``leader``): consecutive numbers from the same leader mean nothing
    was missed in between. Pattern deliveries carry ``pattern`` and seq 0.
    """

    kind: str  # "message", "pmessage" or "smessage"
    channel: bytes
    data: bytes
    pattern: bytes | None = None
    seq: int = 0
    leader: str = ""


class Subscriber(Protocol):
    """A local receiver of messages (an embedded subscription, a RESP connection)."""

    def deliver(self, message: Message) -> bool:
        """Take ``message`` without blocking; False when the subscriber could not
        (its buffer is full): it is then dropped and gets nothing more."""

    def deliver_many(self, messages: list[Message]) -> int:
        """Take ``messages`` in order, as :meth:`deliver` would one by one (a
        network subscriber writes them at once); how many it took (a prefix:
        after a refusal it takes nothing more)."""


class SlowSubscriber(PeerRingError):
    """Raised by an embedded subscription's iterator after it was dropped because
    its buffer filled up (it read too slowly); the messages already buffered
    were delivered first."""

    code = "SLOW_SUBSCRIBER"


def regkey(kind: str, channel: bytes) -> bytes:
    """The key a channel's registry lives under (shard channels apart)."""
    return (b"s:" if kind == SHARD else b"c:") + channel


class _Fanout:
    """One routed message's outstanding deliveries: the receivers counted so
    far and the nodes still to answer; ``future`` gets the total."""

    __slots__ = ("future", "remaining", "total")

    def __init__(self, future: asyncio.Future[int], remaining: int) -> None:
        self.future = future
        self.remaining = remaining
        self.total = 0

    def done(self, n: int) -> None:
        self.total += n
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(self.total)


_Outgoing = tuple[list[Any], _Fanout]

#: The per-publish errors of a ``pubm`` answer the sender handles by class.
_ROUTE_ERRORS: dict[str, type[PeerRingError]] = {
    NotOwner.code: NotOwner,
    PeerUnavailable.code: PeerUnavailable,
    RingMismatch.code: RingMismatch,
}


class PubSub(Service):
    """The pub/sub service (replica side: registry; node side: local
    subscribers and delivery; client side: publish and subscribe)."""

    namespace = "pubsub"
    read_commands = frozenset({"regstate"})

    def __init__(self, config: PubSubConfig | None = None) -> None:
        self.config = config or PubSubConfig()
        self._app: AppContext | None = None
        #: partition -> regkey -> node -> [stamp, count, expires_at]
        self._reg: dict[int, dict[bytes, dict[str, list[Any]]]] = {}
        self._synced: dict[bytes, tuple[str, ...]] = {}
        self._seq: dict[bytes, int] = {}
        #: local subscribers: (kind, name) -> subscribers
        self._local: dict[tuple[str, bytes], set[Subscriber]] = {}
        #: other nodes' pattern tables: node -> (stamp, {pattern: count}, expires_at)
        self._remote_pats: dict[str, tuple[int, dict[bytes, int], float]] = {}
        #: deliveries routed in this loop iteration, per node, in order
        self._outbox: dict[str, list[_Outgoing]] = {}
        #: publishes to send to their leaders this loop iteration, in order
        self._pubbox: dict[str, list[tuple[list[Any], asyncio.Future[int]]]] = {}
        self._stamp = 0
        #: until when the periodic refresh announces this node's pattern table
        #: (a lease after it last held a pattern, so that a member that missed
        #: the emptying announcement still drops it early; then nothing)
        self._announce_until = 0.0
        #: pattern tables this node broadcast (on change and by the refresh)
        self.pattern_announcements = 0
        self.publishes = 0
        self.deliveries = 0
        self.dropped = 0

    def attach(self, app: AppContext) -> None:
        self._app = app
        app.add_metrics(self._metrics)
        app.spawn(self._refresh_loop, "pubsub-refresh")

    @property
    def app(self) -> AppContext:
        if self._app is None:
            raise ClosedError("PubSub is not registered on a node")
        return self._app

    def _next_stamp(self) -> int:
        self._stamp = max(self._stamp + 1, int(self.app.clock.time() * 1e6))
        return self._stamp

    # -- replica side --------------------------------------------------------------
    def handle(self, request: Request) -> Any:
        cmd = request.command
        if cmd == "deliverm":  # a leader's coalesced deliveries, in routing order
            return self._deliver_batch(request.payload)
        if cmd == "deliver":
            return self._deliver_batch([request.payload])[0]
        if cmd == "pdeliver":
            channel, data = request.payload
            return self._deliver_local(PATTERN, channel, data, None, 0, "")
        if cmd == "reg":
            node, stamp, count, expires = request.payload
            self._merge_cell(request.partition, request.key, str(node), [stamp, count, expires])
            return True
        if cmd == "regstate":
            return self._reg.get(request.partition, {}).get(request.key)
        if cmd == "pub":
            return self._route(request)
        if cmd == "pubm":
            return self._route_many(request.payload)
        if cmd == "pats":
            node, stamp, pats, expires = request.payload
            cur = self._remote_pats.get(node)
            if cur is None or stamp > cur[0]:
                self._remote_pats[node] = (stamp, {bytes(p): int(c) for p, c in pats}, expires)
            return True
        if cmd == "chans":  # coverage: [partitions, kind, pattern or None]
            parts, kind, pattern = request.payload
            return self._channels(parts, kind, pattern)
        if cmd == "numsub":
            return self._count(request.partition, request.key)
        raise UnknownCommand(f"pubsub has no command {cmd!r}")

    def _merge_cell(self, partition: int, key: bytes, node: str, cell: list[Any]) -> bool:
        entry = self._reg.setdefault(partition, {}).setdefault(key, {})
        cur = entry.get(node)
        if cur is None or cell[0] > cur[0]:
            entry[node] = list(cell)
            return True
        return False

    def _live(self, partition: int, key: bytes) -> dict[str, int]:
        now = self.app.clock.time()
        entry = self._reg.get(partition, {}).get(key, {})
        return {n: c[1] for n, c in entry.items() if c[1] > 0 and c[2] > now}

    def _count(self, partition: int, key: bytes) -> int:
        return sum(self._live(partition, key).values())

    def _channels(self, parts: Sequence[int], kind: str, pattern: bytes | None) -> list[Any]:
        prefix = b"s:" if kind == SHARD else b"c:"
        out = []
        for p in parts:
            for key in self._reg.get(p, {}):
                if key.startswith(prefix):
                    n = self._count(p, key)
                    name = key[2:]
                    if n and (pattern is None or glob_match(pattern, name)):
                        out.append([name, n])
        return out

    async def _route(self, request: Request) -> int:
        """At the channel's leader: number the message, send it to the nodes
        with subscribers; the number of receivers."""
        kind, channel, data = request.payload
        routed = await self._start_route(request.key, request.partition, kind, channel, data)
        return routed if isinstance(routed, int) else await routed

    async def _route_many(self, items: Sequence[Sequence[Any]]) -> list[Any]:
        """``pubm``: publishes ``[key, partition, kind, channel, data]`` coalesced
        by one node, routed in order; each one's receivers, or ``[code,
        message]`` of its error (``NotOwner``: the sender routes it again)."""
        out: list[Any] = []
        waits: list[tuple[int, asyncio.Future[int]]] = []
        for key, partition, kind, channel, data in items:
            try:
                routed = await self._start_route(bytes(key), int(partition), kind, channel, data)
            except PeerRingError as exc:
                out.append([exc.code, str(exc)])
                continue
            if isinstance(routed, int):
                out.append(routed)
            else:
                waits.append((len(out), routed))
                out.append(0)
        if self._outbox:  # the whole batch is routed: send now, not an iteration later
            self._flush_deliveries()
        for i, fut in waits:
            out[i] = await fut
        return out

    async def _start_route(
        self, key: bytes, partition: int, kind: str, channel: bytes, data: bytes
    ) -> int | asyncio.Future[int]:
        """Number a message and queue it for the nodes with subscribers: 0 when
        there are none, else a future of the number of receivers."""
        if self.leader(partition) != self.app.node_id:
            self._synced.pop(key, None)
            raise NotOwner(f"{self.app.node_id} does not lead pubsub partition {partition}")
        await self._sync(key, partition)
        seq = self._seq[key] = self._seq.get(key, 0) + 1
        nodes = self._live(partition, key)
        if not nodes:
            return 0
        app = self.app
        payload = [kind, channel, data, seq, app.node_id]
        fan = _Fanout(app.create_future(), len(nodes))
        outbox = self._outbox
        if not outbox:
            asyncio.get_running_loop().call_soon(self._flush_deliveries)
        for node in nodes:
            box = outbox.get(node)
            if box is None:
                outbox[node] = [(payload, fan)]
            else:
                box.append((payload, fan))
        return fan.future

    def _flush_deliveries(self) -> None:
        """Send what was routed this loop iteration: one request per node."""
        boxes, self._outbox = self._outbox, {}
        app = self.app
        for node, items in boxes.items():
            try:
                if len(items) == 1:
                    fut = app.call_replica(node, "deliver", b"", items[0][0], partition=-1)
                else:
                    payloads = [p for p, _ in items]
                    fut = app.call_replica(node, "deliverm", b"", payloads, partition=-1)
            except PeerRingError as exc:  # the node stopped
                self._delivered(node, items, None, exc)
                continue
            fut.add_done_callback(functools.partial(self._delivered, node, items))

    def _resend(self, node: str, item: _Outgoing) -> None:
        try:
            fut = self.app.call_replica(node, "deliver", b"", item[0], partition=-1)
        except PeerRingError as exc:
            self._delivered(node, [item], None, exc)
        else:
            fut.add_done_callback(functools.partial(self._delivered, node, [item]))

    def _delivered(
        self,
        node: str,
        items: list[_Outgoing],
        fut: asyncio.Future[Any] | None,
        failure: BaseException | None = None,
    ) -> None:
        answer: Any = None
        if fut is not None:
            failure = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
            if failure is None:
                answer = fut.result()
        if isinstance(failure, UnknownCommand) and len(items) > 1:
            # a node of an older version (a rolling upgrade): one request each
            for item in items:
                self._resend(node, item)
            return
        if failure is not None:
            log.debug("pubsub: delivery of %d to %s failed: %r", len(items), node, failure)
            for _, fan in items:
                fan.done(0)
            return
        counts = [answer] if len(items) == 1 else answer
        for (_, fan), n in zip(items, counts, strict=True):
            fan.done(int(n))

    async def _sync(self, key: bytes, partition: int) -> None:
        app = self.app
        owners = app.owners(partition)
        if self._synced.get(key) == owners:
            return
        answers = await app.call_owners("regstate", key, None, partition=partition)
        for answer in answers.values():
            if isinstance(answer, dict):
                for node, cell in answer.items():
                    self._merge_cell(partition, key, str(node), cell)
        self._synced[key] = owners

    def export_partition(self, partition: int) -> Iterator[Record]:
        return iter([(k, dict(v)) for k, v in self._reg.get(partition, {}).items()])

    def import_records(self, partition: int, records: Sequence[Record]) -> int:
        changed = 0
        for key, cells in records:
            if not isinstance(cells, dict):
                raise InvalidRequest(
                    "a pubsub registry record maps node -> [stamp, count, expires]"
                )
            for node, cell in cells.items():
                if self._merge_cell(partition, key, str(node), list(cell)):
                    changed += 1
        return changed

    def digest(self, partition: int) -> dict[bytes, bytes]:
        return {
            k: repr(sorted((n, c[0]) for n, c in v.items())).encode()[:64]
            for k, v in self._reg.get(partition, {}).items()
        }

    def read_records(self, partition: int, keys: Iterable[bytes]) -> list[Record]:
        part = self._reg.get(partition, {})
        return [(k, dict(part[k])) for k in keys if k in part]

    def drop_partition(self, partition: int) -> int:
        dropped = self._reg.pop(partition, {})
        for k in dropped:
            self._synced.pop(k, None)
        return len(dropped)

    def partition_size(self, partition: int) -> int:
        return len(self._reg.get(partition, {}))

    # -- local delivery --------------------------------------------------------------
    def _deliver_local(
        self, kind: str, channel: bytes, data: bytes, _: Any, seq: int, leader: str
    ) -> int:
        n = 0
        if kind == PATTERN:
            for (k, pat), subs in list(self._local.items()):
                if k == PATTERN and glob_match(pat, channel):
                    msg = Message("pmessage", channel, data, pat, 0, "")
                    n += self._give(subs, msg)
            return n
        msg = Message("smessage" if kind == SHARD else "message", channel, data, None, seq, leader)
        targets = self._local.get((kind, channel))
        return self._give(targets, msg) if targets else 0

    def _deliver_batch(self, payloads: Sequence[Sequence[Any]]) -> list[int]:
        """Deliver a leader's messages ``[kind, channel, data, seq, leader]`` in
        order, each subscriber's share in one ``deliver_many``; the receivers
        of each message."""
        counts = [0] * len(payloads)
        shares: dict[Subscriber, tuple[list[int], list[Message]]] = {}
        local = self._local
        for i, (kind, channel, data, seq, leader) in enumerate(payloads):
            targets = local.get((kind, channel))
            if not targets:
                continue
            name = "smessage" if kind == SHARD else "message"
            msg = Message(name, channel, data, None, seq, leader)
            for sub in targets:
                share = shares.get(sub)
                if share is None:
                    shares[sub] = ([i], [msg])
                else:
                    share[0].append(i)
                    share[1].append(msg)
        delivered = 0
        for sub, (index, msgs) in shares.items():
            took = sub.deliver_many(msgs) if len(msgs) > 1 else int(sub.deliver(msgs[0]))
            for i in index[:took]:
                counts[i] += 1
            delivered += took
            if took < len(msgs):
                self.dropped += 1
        self.deliveries += delivered
        return counts

    def _give(self, subs: set[Subscriber], msg: Message) -> int:
        n = 0
        for sub in list(subs):
            if sub.deliver(msg):
                n += 1
            else:
                self.dropped += 1
        self.deliveries += n
        return n

    # -- subscribing (node side) ------------------------------------------------------
    def leader(self, partition: int) -> str:
        app = self.app
        for node in app.owners(partition):
            if app.is_up(node):
                return node
        raise PeerUnavailable(f"no owner of partition {partition} is up")

    async def add_local(self, kind: str, name: bytes, sub: Subscriber) -> None:
        """Register ``sub`` for channel/shard channel/pattern ``name`` (kind
        ``c``/``s``/``p``); returns once publishers anywhere will reach it."""
        subs = self._local.setdefault((kind, name), set())
        if sub in subs:
            return
        subs.add(sub)
        if kind == PATTERN:
            await self._announce_patterns()
        else:
            await self._register(kind, name, first=True)

    async def remove_local(self, kind: str, name: bytes, sub: Subscriber) -> None:
        subs = self._local.get((kind, name))
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del self._local[(kind, name)]
        try:
            if kind == PATTERN:
                await self._announce_patterns()
            else:
                await self._register(kind, name, first=False)
        except PeerRingError as exc:  # the lease will expire it
            log.debug("pubsub: withdrawing %r failed: %s", name[:64], exc)

    def drop_subscriber(self, sub: Subscriber) -> list[tuple[str, bytes]]:
        """Remove ``sub`` from every local subscription at once (no awaiting:
        registrations left behind are withdrawn by the next refresh); what it had."""
        had = []
        for (kind, name), subs in list(self._local.items()):
            if sub in subs:
                subs.discard(sub)
                had.append((kind, name))
                if not subs:
                    del self._local[(kind, name)]
        if had:
            self.app.spawn(self._refresh_once, "pubsub-withdraw")
        return had

    async def _register(self, kind: str, name: bytes, first: bool) -> None:
        app = self.app
        key = regkey(kind, name)
        partition = app.partition_for(key)
        count = len(self._local.get((kind, name), ()))
        payload = [app.node_id, self._next_stamp(), count, app.clock.time() + self.config.lease]
        if first:  # the leader must know before SUBSCRIBE answers
            for _ in range(5):
                try:
                    await app.call_replica(
                        self.leader(partition), "reg", key, payload, partition=partition
                    )
                    break
                except (NotOwner, RingMismatch, PeerUnavailable):
                    await app.clock.sleep(0.02)
        await app.quorum("reg", key, payload, quorum=app.write_quorum, partition=partition)

    async def _announce_patterns(self) -> None:
        app = self.app
        pats = [[name, len(s)] for (k, name), s in self._local.items() if k == PATTERN]
        now = app.clock.time()
        if pats:
            self._announce_until = now + self.config.lease
        payload = [app.node_id, self._next_stamp(), pats, now + self.config.lease]
        self.handle(Request("pats", b"", -1, payload, app.node_id))
        self.pattern_announcements += 1
        await app.broadcast("pats", payload)

    async def _refresh_once(self) -> None:
        for kind, name in [k for k in self._local if k[0] != PATTERN]:
            try:
                await self._register(kind, name, first=False)
            except PeerRingError as exc:
                log.debug("pubsub: refresh of %r failed: %s", name[:64], exc)
        if self.app.clock.time() >= self._announce_until:
            return  # no pattern for a lease: every member's copy of the table has expired
        try:
            await self._announce_patterns()
        except PeerRingError as exc:
            log.debug("pubsub: pattern refresh failed: %s", exc)

    async def _refresh_loop(self) -> None:
        while True:
            await self.app.clock.sleep(self.config.lease / 3)
            await self._refresh_once()

    # -- publishing (client side) ------------------------------------------------------
    async def publish(self, channel: bytes | str, data: bytes | str, *, shard: bool = False) -> int:
        """Send ``data`` to every subscriber of ``channel`` in the cluster (pattern
        subscribers too, unless ``shard``); the number of receivers."""
        ch = channel.encode() if isinstance(channel, str) else bytes(channel)
        msg = data.encode() if isinstance(data, str) else bytes(data)
        app = self.app
        kind = SHARD if shard else CHANNEL
        key = regkey(kind, ch)
        partition = app.partition_for(key)
        self.publishes += 1
        waits: list[asyncio.Future[Any]] = []
        if not shard:
            now = app.clock.time()
            mine = any(k == PATTERN and glob_match(p, ch) for k, p in self._local)
            if mine:
                waits.append(
                    app.call_replica(app.node_id, "pdeliver", b"", [ch, msg], partition=-1)
                )
            for node, (_, pats, expires) in self._remote_pats.items():
                if node != app.node_id and expires > now and any(glob_match(p, ch) for p in pats):
                    waits.append(app.call_replica(node, "pdeliver", b"", [ch, msg], partition=-1))
        total = await self._route_call(key, partition, [kind, ch, msg])
        for answer in await asyncio.gather(*waits, return_exceptions=True):
            if not isinstance(answer, BaseException):
                total += int(answer)
        return total

    async def _route_call(self, key: bytes, partition: int, payload: list[Any]) -> int:
        app = self.app
        try:
            leader = self.leader(partition)
        except PeerUnavailable:
            leader = app.node_id  # no owner up: the loop below waits for one
        if leader != app.node_id:
            # coalesced with this loop iteration's other publishes to that leader
            try:
                return await self._queue_pub(leader, key, partition, payload)
            except (NotOwner, RingMismatch, PeerUnavailable, UnknownCommand) as exc:
                # ConnectionLost: the leader may have delivered it already, and
                # sending it again through another leader would break at most once
                if isinstance(exc, ConnectionLost):
                    raise
                # not routed: again on its own below (UnknownCommand: a leader of
                # an older version, which has no pubm)
        for attempt in range(1, 21):
            try:
                leader = self.leader(partition)
                return int(await app.call_replica(leader, "pub", key, payload, partition=partition))
            except (NotOwner, RingMismatch, PeerUnavailable) as exc:
                # ConnectionLost: the leader may have delivered it already, and
                # sending it again through another leader would break at most once
                if attempt == 20 or isinstance(exc, ConnectionLost):
                    raise
                await app.clock.sleep(min(0.01 * attempt, 0.2))
        raise AssertionError("unreachable")  # pragma: no cover

    def _queue_pub(
        self, leader: str, key: bytes, partition: int, payload: list[Any]
    ) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = self.app.create_future()
        box = self._pubbox
        if not box:
            asyncio.get_running_loop().call_soon(self._flush_pubs)
        item = ([key, partition, *payload], fut)
        items = box.get(leader)
        if items is None:
            box[leader] = [item]
        else:
            items.append(item)
        return fut

    def _flush_pubs(self) -> None:
        """Send this loop iteration's publishes: one request per leader (a lone
        one as ``pub``, epoch fenced on its partition; several as ``pubm``,
        which the leader checks against its own ring)."""
        boxes, self._pubbox = self._pubbox, {}
        app = self.app
        for leader, items in boxes.items():
            try:
                if len(items) == 1:
                    key, partition, *payload = items[0][0]
                    call = app.call_replica(leader, "pub", key, payload, partition=partition)
                else:
                    call = app.call_replica(
                        leader, "pubm", b"", [i for i, _ in items], partition=-1
                    )
            except PeerRingError as exc:
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            call.add_done_callback(functools.partial(self._published, items))

    @staticmethod
    def _published(
        items: list[tuple[list[Any], asyncio.Future[int]]], call: asyncio.Future[Any]
    ) -> None:
        if call.cancelled():
            failure: BaseException | None = asyncio.CancelledError()
        else:
            failure = call.exception()
        if failure is not None:
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(failure)
            return
        answer = call.result()
        answers = [answer] if len(items) == 1 else answer
        for (_, fut), one in zip(items, answers, strict=True):
            if fut.done():
                continue
            if isinstance(one, list):  # [code, message]: that publish failed
                code, text = str(one[0]), str(one[1])
                exc = _ROUTE_ERRORS.get(code)
                fut.set_exception(exc(text) if exc is not None else RemoteError(code, text))
            else:
                fut.set_result(int(one))

    async def numsub(self, channel: bytes, *, shard: bool = False) -> int:
        """Subscribers of ``channel`` in the cluster (pattern subscribers not counted)."""
        app = self.app
        key = regkey(SHARD if shard else CHANNEL, channel)
        partition = app.partition_for(key)
        return int(
            await app.call_replica(self.leader(partition), "numsub", key, None, partition=partition)
        )

    async def channels(self, pattern: bytes | None = None, *, shard: bool = False) -> list[bytes]:
        """Channels with at least one subscriber anywhere (optionally matching ``pattern``)."""
        kind = SHARD if shard else CHANNEL
        answers = await self.app.coverage("chans", lambda parts: [parts, kind, pattern])
        return sorted({bytes(name) for answer in answers for name, _ in answer})

    def numpat(self) -> int:
        """Pattern subscriptions in the cluster (from every node's pattern table)."""
        now = self.app.clock.time()
        total = sum(len(s) for (k, _), s in self._local.items() if k == PATTERN)
        for node, (_, pats, expires) in self._remote_pats.items():
            if node != self.app.node_id and expires > now:
                total += sum(pats.values())
        return total

    def subscribe(
        self, *names: bytes | str, pattern: bool | None = None, shard: bool = False
    ) -> Subscription:
        """A subscription to channels (or patterns: ``pattern=True``, or names with
        glob characters when ``pattern`` is None). Use as ``async for msg in
        pubsub.subscribe("orders.*")`` or ``async with ... as sub``."""
        if not names:
            raise InvalidRequest("subscribe needs at least one channel or pattern")
        items = []
        for n in names:
            raw = n.encode() if isinstance(n, str) else bytes(n)
            pat = is_pattern(raw) if pattern is None else pattern
            if shard and pat:
                raise InvalidRequest("shard channels have no patterns")
            items.append((PATTERN if pat else SHARD if shard else CHANNEL, raw))
        return Subscription(self, items)

    def status(self) -> dict[str, Any]:
        """This node's local subscriptions (at most 100): kind, name, subscribers."""
        names = {CHANNEL: "channel", SHARD: "shard channel", PATTERN: "pattern"}
        rows = [
            [names[kind], name.decode("utf-8", "replace"), len(subs)]
            for (kind, name), subs in sorted(self._local.items())
        ]
        return {"subscriptions": rows[:100]} if rows else {}

    def _metrics(self) -> Iterable[Metric]:
        yield Metric(
            "publishes", "counter", "Messages published through this node.", self.publishes
        )
        yield Metric(
            "deliveries", "counter", "Messages handed to local subscribers.", self.deliveries
        )
        yield Metric(
            "slow_subscribers_dropped",
            "counter",
            "Subscribers dropped because their bounded buffer was full.",
            self.dropped,
        )
        yield Metric(
            "subscriptions",
            "gauge",
            "Local channel, shard channel and pattern subscriptions.",
            sum(len(s) for s in self._local.values()),
        )


class Subscription:
    """Embedded subscriber: a bounded queue of :class:`Message`; see :meth:`PubSub.subscribe`."""

    def __init__(self, pubsub: PubSub, items: list[tuple[str, bytes]]) -> None:
        self._pubsub = pubsub
        self._items = items
        self._queue: asyncio.Queue[Message] = asyncio.Queue(pubsub.config.buffer_messages)
        self._started = False
        self.dropped = False

    def deliver_many(self, messages: list[Message]) -> int:
        for n, message in enumerate(messages):
            if not self.deliver(message):
                return n
        return len(messages)

    def deliver(self, message: Message) -> bool:
        if self.dropped:
            return False
        try:
            self._queue.put_nowait(message)
            return True
        except asyncio.QueueFull:
            self.dropped = True
            self._pubsub.drop_subscriber(self)
            log.warning(
                "pubsub: dropped a slow embedded subscriber of %r (%d messages unread)",
                [n for _, n in self._items][:4],
                self._queue.qsize(),
            )
            return False

    async def start(self) -> None:
        """Register every channel and pattern; publishes after this reach it."""
        if not self._started:
            self._started = True
            for kind, name in self._items:
                await self._pubsub.add_local(kind, name, self)

    async def close(self) -> None:
        """Unsubscribe from everything."""
        for kind, name in self._items:
            await self._pubsub.remove_local(kind, name, self)

    async def get(self) -> Message:
        """The next message (waits); :class:`SlowSubscriber` once dropped and drained."""
        if self.dropped and self._queue.empty():
            raise SlowSubscriber("this subscriber was dropped: its buffer filled up")
        return await self._queue.get()

    async def __aenter__(self) -> Subscription:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def __aiter__(self) -> AsyncIterator[Message]:
        await self.start()
        try:
            while True:
                yield await self.get()
        finally:
            await self.close()
