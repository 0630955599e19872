"""The client side of the KV store: the embedded API over the whole cluster.

:class:`KVStore` extends the replica (:class:`~peer_ring.apps.kv.replica.KVReplica`,
whose module docstring gives the design: coordinating replicas, dotted
version vectors, items, conflicts, expiry) with what applications and the
RESP server call: :class:`~peer_ring.apps.kv.api.KVApi`. ``node.register(KVStore())``
makes a node both a replica of the ``kv`` namespace and a client of the
whole cluster. Keys and values are ``bytes``; ``str`` is accepted and encoded
as UTF-8 (reads always return ``bytes``; see :meth:`KVStore.get_json`).

*Reads.* ``get`` sends ``get`` to the N replicas, waits for R answers and
joins them (``versions.sync``). With ``read_repair`` the answers that arrive
later are joined too and every replica whose state differs receives a
``merge`` (read repair, Dynamo section 4.7).

*Writes* take one path (:meth:`KVStore._begin_write`): validate, pick the
coordinating replica, issue the new version there and replicate it to N with
a ``merge`` round; :meth:`KVStore.put` awaits it, :meth:`KVStore.start_put`
(the RESP hot path) is told by callback.

*Whole keyspace.* ``scan`` and ``count`` are coverage operations (one live
replica per partition, batched per node, epoch fenced); ``flush`` is sent to
every member.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from peer_ring import versions as vv
from peer_ring.app import (
    Clock,
    ConnectionLost,
    InvalidRequest,
    PeerUnavailable,
    QuorumBatch,
    QuorumNotReached,
    QuorumResult,
    RoundListener,
)
from peer_ring.apps.kv import _state as st
from peer_ring.apps.kv._state import EMPTY, Entries, pack, unpack
from peer_ring.apps.kv.api import Entry
from peer_ring.apps.kv.replica import (
    PACKED,
    REPLICATE,
    KVConfig,
    KVReplica,
    MergeFunction,
    _decode_state,
    _expiry_float,
)

__all__ = ["KVBatch", "KVConfig", "KVStore", "MergeFunction", "Versions"]

_SCAN_FIRST_BATCH: Final = 8
_SCAN_MAX_BATCH: Final = 256

#: ``KVBatch._shape``: the ring's replica sets not looked at yet since the
#: last flush; several replicas per key; one replica per key.
_UNKNOWN: Final = 0
_SHARED: Final = 1
_SINGLE: Final = 2


@dataclass(frozen=True, slots=True)
class Versions:
    """Every visible sibling of a key, newest (by HLC stamp) first.

    ``values[i]`` expires at ``expires_at[i]`` (``None``: never). ``context``
    covers all of them (and any deleted or expired sibling): a write with it
    replaces them all. Empty ``values`` means the key is missing.
    """

    values: tuple[bytes, ...]
    expires_at: tuple[float | None, ...]
    context: bytes


class KVStore(KVReplica):
    """Replicated key-value store: a replica plus the embedded client API.

    Register on a node before use: ``kv = node.register(KVStore())``. Every
    node that serves the namespace must register a ``KVStore`` with the same
    ``namespace`` and an equivalent ``config``. ``clock`` (default: the
    node's) decides expiry, tombstone age, stamps and the sweep period; tests
    inject a :class:`~peer_ring.clock.ManualClock` here.
    """

    def __init__(
        self, namespace: str = "kv", config: KVConfig | None = None, *, clock: Clock | None = None
    ) -> None:
        super().__init__(namespace, config, clock=clock)
        #: the replication rounds of the writes forwarded here in this loop
        #: pass, leaving together at its end (:meth:`_merge_round`)
        self._held: QuorumBatch | None = None

    def _merge_round(
        self,
        partition: int,
        key: bytes,
        entries: st.Stored,
        n: int | None,
        w: int,
        timeout: float | None,
        listener: RoundListener,
        command: str = "merge",
    ) -> None:
        """The ``merge`` (or ``repl``) round of a write forwarded here
        (``coord_put``), held in a batch flushed once this loop pass ends: the
        forwarded writes of one request (a batch's) or of the frames read in
        one pass replicate as one request per replica instead of one each."""
        self._pass_batch().add(
            command, key, entries, w, listener, n, partition, timeout, None, None, True
        )

    def _pass_batch(self) -> QuorumBatch:
        """The batch of this loop pass's held requests (forwarded writes'
        ``merge`` rounds, unbatched writes' ``coord_put``), flushed once the
        pass ends."""
        held = self._held
        if held is None:
            held = self._held = self.app.batch()
            asyncio.get_running_loop().call_soon(self._flush_held)
        return held

    def _flush_held(self) -> None:
        held = self._held
        self._held = None
        if held is not None:
            held.flush()

    # -- client side: reads -------------------------------------------------------
    async def _read(self, key: bytes, r: int | None, timeout: float | None) -> Entries:
        memo: dict[int, Entries] = {}
        app = self.app
        partition = app.partition_for(key)
        result = await app.quorum(
            "get",
            key,
            PACKED,
            quorum=self._read_quorum(r),
            timeout=timeout if timeout is not None else self.config.timeout,
            partition=partition,
            on_complete=self._repair_callback(key, partition, memo),
        )
        return self._merged(result, memo)

    def _repair_callback(
        self, key: bytes, partition: int, memo: dict[int, Entries]
    ) -> Callable[[QuorumResult], None] | None:
        """Read repair once every replica answered; ``memo`` holds the answers
        decoded by object id, shared with the read (each decoded once)."""
        if not self.config.read_repair:
            return None
        return partial(self._read_repair, key, partition, memo)

    def _merged(self, result: QuorumResult, memo: dict[int, Entries]) -> Entries:
        """The join of the quorum's answers."""
        merged: Entries = EMPTY
        for _, answer in result.acks:
            other = _decode_once(answer, memo, result.acks)
            if other is not merged:
                if other != merged:
                    merged = self._join(merged, other) if merged else other
                else:
                    # equal answers share one object: read repair then compares
                    # them by identity, not item by item
                    other = merged
            memo[id(answer)] = other
        return merged

    # -- callback forms: the network surfaces' hot path -----------------------------
    def start_get(
        self, key: bytes, done: Callable[[bytes | None, BaseException | None], None]
    ) -> None:
        """:meth:`get` with the store's R and timeout, in callback form.

        ``done(value, None)`` or ``done(None, error)`` is called exactly once on
        the event loop, possibly before this returns. No task or future per
        call: the quorum round tells ``done`` from the answer that decides it.
        ``done`` must not raise.
        """
        self._start_get(key, done, self.app.start_quorum)

    def _start_get(
        self,
        key: bytes,
        done: Callable[[bytes | None, BaseException | None], None],
        start: Callable[..., None],
    ) -> None:
        """The read path in callback form; ``start`` starts the round
        (``AppContext.start_quorum`` or a batch's ``add``: same signature).
        A read this replica alone decides (``AppContext.solo``: one node,
        N=1) is answered here, with no round."""
        value: bytes | None = None
        try:
            k = self._key(key)
            app = self.app
            partition = app.partition_for(k)
            solo = app.solo(partition, self._read_quorum(None), False)
            if solo:
                value = self._solo_get(partition, k)
        except Exception as exc:
            done(None, exc)
            return
        if solo:
            done(value, None)
            return
        try:
            # one object per read is its listener and its read repair (not a
            # memo dict and two partials)
            read = _Read(self, k, partition, done)
            # by position (command, key, payload, quorum, listener, n,
            # partition, timeout, on_complete): keywords cost the callee's
            # argument parsing about a thousand instructions per call
            start(
                "get",
                k,
                PACKED,
                self._read_quorum(None),
                read,
                None,
                partition,
                self.config.timeout,
                read.repair if self.config.read_repair else None,
            )
        except Exception as exc:
            done(None, exc)

    def _solo_get(self, partition: int, key: bytes) -> bytes | None:
        """A read this replica alone decides: what its ``get`` answers
        (``KVReplica.handle``), resolved as a round's one answer is (no read
        repair: nothing to compare it with). A failure of the local replica
        fails the read as it fails a round: :class:`QuorumNotReached`."""
        try:
            part = self._parts.get(partition)
            stored = None if part is None else part.get(key)
            if stored is None:
                return None
            memory = self.memory
            if memory.lru is not None:
                memory.touch(key, partition)
        except Exception as exc:
            raise QuorumNotReached(1, 0, {self._node_id: exc}) from exc
        hlc = self._hlc
        # self._clock().time(), without a call into the interpreted clock
        now = self._clock().time() if hlc is None else hlc.wall()
        if self._merge_fn is None:
            return st.live_value(stored, now)  # no Entries built to read it
        entries = unpack(stored)
        got = self._resolve(entries, now) if entries else None
        return None if got is None else got[0]

    def start_put(
        self, key: bytes, value: bytes, done: Callable[[None, BaseException | None], None]
    ) -> None:
        """:meth:`put` (no TTL, no context, the store's W) in callback form.

        ``done(None, None)`` once W replicas acknowledged, ``done(None, error)``
        otherwise; called exactly once on the event loop, possibly before this
        returns; must not raise. The same write path as :meth:`put`
        (:meth:`_begin_write`), told by callback: no task or future when this
        node coordinates (the common case).
        """
        self._start_write(key, value, None, done, False, self.app.start_quorum)

    def _start_write(
        self,
        key: bytes,
        value: bytes | None,
        expires_at: float | None,
        done: Callable[[Any, BaseException | None], None],
        want_existed: bool,
        start: Callable[..., None],
        batch: KVBatch | None = None,
    ) -> None:
        """The write path in callback form (a value, or a tombstone for ``None``):
        ``done(existed, None)`` once W replicas acknowledged -- or, without
        ``want_existed`` (a plain put, whose reply does not say),
        ``done(None, None)``. ``start`` starts the ``merge`` round
        (``AppContext.start_quorum`` or a batch's ``add``); a write this node
        cannot coordinate is forwarded: held in ``batch`` when given
        (:meth:`KVBatch._forward`), otherwise by a task; one this replica
        alone acknowledges (:meth:`_solo_write`) is answered here, with no
        round."""
        try:
            k = self._key(key)
            v = None if value is None else self._check_value(value)
            partition = self.app.partition_for(k)
            existed = self._solo_write(partition, k, v, expires_at, want_existed)
        except Exception as exc:
            done(False if want_existed else None, exc)
            return
        if existed is not None:
            done(existed if want_existed else None, None)
            return
        try:
            begun = self._begin_write(k, v, expires_at, None, None, None, want_existed, partition)
            if begun is not None:
                partition, entries, existed, quorum = begun
                # by position (see _start_get): command, key, payload, quorum,
                # listener, n, partition, timeout, on_complete, sloppy, applied.
                # A plain put's reply does not say whether the key existed: no
                # pass over the acks for it.
                start(
                    "merge" if want_existed else REPLICATE,
                    k,
                    entries if want_existed else pack(entries),  # repl: the packed form
                    quorum,
                    partial(_write_done, done, existed)
                    if want_existed
                    else partial(_put_acked, done),
                    None,
                    partition,
                    self.config.timeout,
                    None,
                    None,
                    True,
                )
                return
            if batch is not None:
                batch._forward(
                    k, v, expires_at, done if want_existed else partial(_put_done, done),
                    want_existed,
                )  # fmt: skip
                return
            task = asyncio.ensure_future(
                self._forward(k, v, expires_at, None, None, None, self.config.timeout, want_existed)
            )
        except Exception as exc:
            done(False if want_existed else None, exc)
            return
        self._background.add(task)
        task.add_done_callback(
            partial(self._write_task_done, done if want_existed else partial(_put_done, done))
        )

    def _solo_write(
        self,
        partition: int,
        key: bytes,
        value: bytes | None,
        expires_at: float | None,
        want_existed: bool,
    ) -> bool | None:
        """A write (no context, the store's N and W) of a partition this
        replica alone acknowledges (``AppContext.solo``: one node, N=1):
        issued here, which is the round's whole outcome (its one ack answers
        None). Returns whether a live value existed (False without
        ``want_existed``); None when the write takes a round
        (:meth:`_begin_write`), nothing done."""
        # the store's W (self._write_quorum(None)) without the general resolution
        # when the store has none of its own and the node's is known
        w = self._node_w
        quorum = w if w > 0 and self.config.write_quorum is None else self._write_quorum(None)
        if not self.app.solo(partition, quorum, True):
            return None
        if value is not None and not want_existed and self._lww:
            part = self._parts.get(partition)
            if part is not None:
                stored = part.get(key)
                top = st.flat_top(stored, self._actor)
                memory = self.memory
                if top >= 0 and not memory.full:
                    self._issue_flat(partition, part, key, stored, value, expires_at, top)
                    return False
        existed, _ = self._issue(partition, key, value, expires_at, None, want_existed)
        return existed

    def _issue_flat(
        self,
        partition: int,
        part: dict[bytes, st.Stored],
        key: bytes,
        stored: st.Stored | None,
        value: bytes,
        expires_at: float | None,
        top: int,
    ) -> None:
        """:meth:`_issue` of a plain last-writer-wins write (a value, no
        context, whether a value existed not asked) over a state
        :func:`~peer_ring.apps.kv._state.flat_top` accepts (largest stamp
        ``top``) at a budget that is not full, when nothing needs the
        ``Entries`` it replicates (:meth:`_solo_write`): the same stamp, state,
        memory accounting, LRU and expiry bookkeeping as ``_issue`` and
        ``_store``, with the new flat state built directly
        (:func:`~peer_ring.apps.kv._state.issue_flat`) -- no ``Entries``
        unpacked, issued, packed and dropped per write."""
        hlc = self._hlc
        assert hlc is not None
        new = st.issue_flat(stored, value, expires_at, hlc.after_int(top), self._actor)
        memory = self.memory
        memory.stored(key, stored, new)
        part[key] = new
        if memory.lru is not None:
            memory.touch(key, partition)  # a value: the young end
        if expires_at is not None:  # mortal (st.mortal of a value: it has an expiry)
            cands = self._mortal.get(partition)
            if cands is None:
                cands = self._mortal[partition] = set()
            cands.add(key)

    def _write_task_done(
        self, done: Callable[[bool, BaseException | None], None], task: asyncio.Future[Any]
    ) -> None:
        self._background.discard(task)
        if task.cancelled():
            done(False, asyncio.CancelledError())
            return
        exc = task.exception()
        if exc is None:
            done(bool(task.result()), None)
        else:
            done(False, exc)

    def batch(self) -> KVBatch:
        """An empty :class:`KVBatch`: reads and writes started on it travel as one
        request per replica when it is flushed (the RESP pipeline's path)."""
        return KVBatch(self)

    def _read_repair(
        self, key: bytes, partition: int, memo: dict[int, Entries], result: QuorumResult
    ) -> None:
        if self._closed:
            return
        answers = result.answers
        if len(answers) < 2:
            return
        states: list[tuple[str, Entries]] = []
        for nid, answer in answers:
            decoded = memo.get(id(answer))
            if decoded is None:
                try:
                    decoded = memo[id(answer)] = _decode_once(answer, memo, answers)
                except InvalidRequest:
                    return
            states.append((nid, decoded))
        merged = states[0][1]
        for _, s in states[1:]:
            if s != merged:
                merged = self._join(merged, s) if merged else s
        if not merged:
            return
        app = self.app
        me = app.node_id
        for nid, s in states:
            if s == merged:
                continue
            self.repairs += 1
            if nid == me:
                self._merge(partition, key, merged)
                continue
            fut = app.call_replica(nid, "merge", key, merged, partition=partition)
            self._background.add(fut)
            fut.add_done_callback(self._forget)

    def _forget(self, fut: asyncio.Future[Any]) -> None:
        self._background.discard(fut)
        if not fut.cancelled():
            fut.exception()  # read repair is best effort: failures are expected

    def _resolve(self, entries: Entries, now: float) -> tuple[bytes, float | None] | None:
        if self._merge_fn is not None:
            items = st.visible_items(entries, now)
            if not items:
                return None
            if len(items) == 1:
                return items[0][0], items[0][1]  # type: ignore[return-value]
            values: list[bytes] = [i[0] for i in items]  # type: ignore[misc]
            merged = self._merge_fn(values)
            exps = [i[1] for i in items]
            exp = None if any(e is None for e in exps) else max(e for e in exps if e is not None)
            return merged, exp
        item = st.live_item(entries, now)
        if item is None:
            return None
        return item[0], item[1]  # type: ignore[return-value]

    async def get(
        self, key: bytes | str, *, r: int | None = None, timeout: float | None = None
    ) -> bytes | None:
        """The live value of ``key`` or ``None`` (missing, deleted or expired).

        With concurrent siblings: the newest by HLC stamp (``"siblings"``
        and ``"lww"`` modes) or the merge function's result.
        """
        k = self._key(key)
        entries = await self._read(k, r, timeout)
        if not entries:
            return None
        got = self._resolve(entries, self._clock().time())
        return None if got is None else got[0]

    async def get_entry(
        self, key: bytes | str, *, r: int | None = None, timeout: float | None = None
    ) -> Entry | None:
        """Value, expiry and causal context of ``key``, or ``None``."""
        k = self._key(key)
        entries = await self._read(k, r, timeout)
        if not entries:
            return None
        got = self._resolve(entries, self._clock().time())
        if got is None:
            return None
        ctx = vv.encode_context(vv.context(vv.DVVSet(entries)))
        return Entry(got[0], got[1], ctx)

    async def get_versions(
        self, key: bytes | str, *, r: int | None = None, timeout: float | None = None
    ) -> Versions:
        """All visible siblings of ``key`` and the context that covers them."""
        k = self._key(key)
        entries = await self._read(k, r, timeout)
        items = st.visible_items(entries, self._clock().time())
        ctx = vv.encode_context(vv.context(vv.DVVSet(entries))) if entries else b""
        return Versions(
            tuple(i[0] for i in items),  # type: ignore[misc]
            tuple(i[1] for i in items),
            ctx,
        )

    async def get_many(
        self, keys: Sequence[bytes | str], *, r: int | None = None, timeout: float | None = None
    ) -> list[bytes | None]:
        """Values of ``keys`` in order (``None`` where missing).

        One batched round per key (:class:`KVBatch`): every key's read leaves
        at once, as one request per replica; raises the first failure.
        """
        ks = [self._key(k) for k in keys]
        if not ks:
            return []
        if r is not None or timeout is not None:
            return list(await asyncio.gather(*(self.get(k, r=r, timeout=timeout) for k in ks)))
        collect = _Collect(self.app.create_future(), len(ks))
        batch = self.batch()
        gets = _Gets(self, collect)
        gets.keys = ks  # by index, checked above: no second check per key
        gets.partitions = [0] * len(ks)
        get = batch._get
        for i, k in enumerate(ks):
            get(k, gets, i)
        batch.flush()
        return await collect.fut  # type: ignore[no-any-return]

    async def get_json(self, key: bytes | str, **kw: Any) -> Any:
        """``json.loads`` of the value of ``key``; ``None`` when missing."""
        raw = await self.get(key, **kw)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise InvalidRequest(f"value of {key!r:.80} is not JSON: {exc}") from exc

    # -- client side: writes ------------------------------------------------------
    def _begin_write(
        self,
        key: bytes,
        value: bytes | None,
        expires_at: float | None,
        context: bytes | None,
        n: int | None,
        w: int | None,
        want_existed: bool = True,
        partition: int = -1,
    ) -> tuple[int, st.Stored, bool, int] | None:
        """The write path's first half, shared by every write: validate, and when
        this node is a replica of the key ready to coordinate, issue the new
        version here. Returns ``(partition, state to replicate, a live value
        existed, W)``; None when another replica must coordinate
        (:meth:`_forward`). ``partition``: the key's, if the caller has it."""
        if n is not None and (type(n) is not int or n < 1):
            raise InvalidRequest(f"n must be a positive integer, got {n!r}")
        quorum = self._write_quorum(w)
        app = self.app
        if partition < 0:
            partition = app.partition_for(key)
        if not app.coordinates(partition, n):  # one of the owners, and ready
            return None
        ctx = vv.decode_context(context) if context else None
        existed, entries = self._issue(partition, key, value, expires_at, ctx, want_existed)
        return partition, entries, existed, quorum

    async def _write(
        self,
        key: bytes,
        value: bytes | None,
        expires_at: float | None,
        context: bytes | None,
        n: int | None,
        w: int | None,
        timeout: float | None,
        want_existed: bool = True,
    ) -> bool:
        """Write (a value, or a tombstone for ``None``); True if a live value
        existed -- without ``want_existed`` (:meth:`put`, which does not say)
        False when this node coordinates: the replicas are sent ``repl``."""
        if timeout is None:
            timeout = self.config.timeout
        begun = self._begin_write(key, value, expires_at, context, n, w, want_existed)
        if begun is None:
            return await self._forward(key, value, expires_at, context, n, w, timeout, want_existed)
        partition, entries, existed, quorum = begun
        result = await self.app.quorum(
            "merge" if want_existed else REPLICATE,
            key,
            entries if want_existed else pack(entries),  # repl: the packed form
            quorum=quorum,
            n=n,
            timeout=timeout,
            partition=partition,
            applied=True,
        )
        return existed or any(answer is True for _, answer in result.acks)

    async def _forward(
        self,
        key: bytes,
        value: bytes | None,
        expires_at: float | None,
        context: bytes | None,
        n: int | None,
        w: int | None,
        timeout: float | None,
        want_existed: bool = True,
    ) -> bool:
        """The write path when this node is no replica of the key (or is still
        syncing it): ``coord_put`` on the first live replica, which issues the
        version and replicates it (without ``want_existed``, a plain write
        whose caller does not ask whether a value existed: as a ``repl``
        round, and False is answered). The next replica is tried only when the
        previous one was certainly not reached (PeerUnavailable); after a
        timeout or a connection lost with the request in flight
        (ConnectionLost) the outcome is unknown and the error is raised: a
        second coordinator would issue the same write again as a concurrent
        version (a read-modify-write forked into siblings)."""
        # the first try leaves with this loop pass's other held requests: the
        # concurrent writes forwarded to one replica share one request
        answered = self.app.create_future()
        self._hold_forward(
            self._pass_batch(),
            key,
            value,
            expires_at,
            context,
            n,
            w,
            timeout,
            partial(_settle, answered),
            want_existed,
        )
        existed: bool = await answered
        return existed

    def _hold_forward(
        self,
        rounds: QuorumBatch,
        key: bytes,
        value: bytes | None,
        expires_at: float | None,
        context: bytes | None,
        n: int | None,
        w: int | None,
        timeout: float | None,
        done: Callable[[bool, BaseException | None], None],
        want_existed: bool = True,
    ) -> None:
        """:meth:`_forward` in callback form: the ``coord_put`` to the first live
        replica held in ``rounds`` (``QuorumBatch.call``: it leaves in that
        replica's one request at the flush), the next replicas tried by
        :class:`_Forward` only when it was certainly not reached.
        ``done(existed, None)`` or ``done(False, error)``."""
        try:
            partition, ordered, payload, outer = self._forward_plan(
                key, value, expires_at, context, n, w, timeout, want_existed
            )
        except Exception as exc:
            done(False, exc)
            return
        forward = _Forward(self, key, partition, ordered, payload, outer, done)
        try:
            rounds.call(ordered[0], "coord_put", key, payload, forward, partition, outer)
        except NotImplementedError:  # an app context whose batches hold no calls
            forward.retry(ordered, None)

    def _forward_plan(
        self,
        key: bytes,
        value: bytes | None,
        expires_at: float | None,
        context: bytes | None,
        n: int | None,
        w: int | None,
        timeout: float | None,
        want_existed: bool = True,
    ) -> tuple[int, list[str], list[Any], float]:
        """Where and what :meth:`_forward` sends: ``(partition, replicas to try
        in order, coord_put payload, timeout of one try)``; raises
        PeerUnavailable when there is no replica to try. A write whose caller
        does not ask whether a value existed says so in a seventh field
        (protocol 8): its coordinator replicates it with ``repl``."""
        app = self.app
        quorum = self._write_quorum(w)
        partition = app.partition_for(key)
        targets = app.owners(partition, n)
        me = app.node_id
        if not targets:
            raise PeerUnavailable("the ring is empty")
        base = timeout if timeout is not None else app.request_timeout
        outer = base * 1.5 + 0.05  # the remote quorum wait plus two hops
        payload = [value, expires_at, context, n, quorum, timeout]
        if not want_existed and value is not None:
            payload.append(False)
        # stable sort: keeps preference; a node still starting never coordinates
        ordered = sorted((t for t in targets if t != me), key=lambda t: not app.is_up(t))
        if not ordered:
            raise PeerUnavailable(f"{me} is still starting; retry in a moment")
        return partition, ordered, payload, outer

    async def _forward_to(
        self,
        ordered: list[str],
        key: bytes,
        partition: int,
        payload: list[Any],
        outer: float,
        last: BaseException | None,
    ) -> bool:
        """``coord_put`` on each of ``ordered`` in turn until one was reached
        (see :meth:`_forward`); ``last``: the error of an earlier try."""
        app = self.app
        for target in ordered:
            try:
                answer = await app.call_replica(
                    target, "coord_put", key, payload, partition=partition, timeout=outer
                )
            except ConnectionLost:
                raise  # it may have been applied there: another try would fork it
            except PeerUnavailable as exc:  # certainly not delivered: try the next one
                last = exc
                continue
            return answer is True
        assert last is not None
        raise QuorumNotReached(
            payload[4], 0, message=f"no replica could coordinate the write: {last}"
        )

    async def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        ttl: float | None = None,
        expires_at: float | None = None,
        context: bytes | None = None,
        n: int | None = None,
        w: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Store ``value`` on N replicas; return once W acknowledged.

        ``ttl`` (relative seconds) and ``expires_at`` (absolute wall-clock
        seconds) are exclusive. Without ``context`` the write is concurrent
        with whatever is stored (siblings, or LWW by stamp); with the context
        of a read it supersedes what that read saw.
        """
        k = self._key(key)
        v = self._check_value(value)
        exp = self._expiry(ttl, expires_at)
        await self._write(k, v, exp, self._context(context), n, w, timeout, False)

    async def put_json(self, key: bytes | str, obj: Any, **kw: Any) -> None:
        """:meth:`put` of ``json.dumps(obj)`` (UTF-8, compact separators)."""
        try:
            raw = json.dumps(obj, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"value is not JSON-serialisable: {exc}") from exc
        await self.put(key, raw, **kw)

    async def delete(
        self,
        key: bytes | str,
        *,
        context: bytes | None = None,
        n: int | None = None,
        w: int | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Write a tombstone for ``key``; True if an acknowledging replica held a live value."""
        k = self._key(key)
        return await self._write(k, None, None, self._context(context), n, w, timeout)

    async def put_many(
        self,
        items: Sequence[tuple[bytes, bytes]],
        *,
        ttl: float | None = None,
        w: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Store every item; raises the first failure (others may have applied).

        One batched round per key (:class:`KVBatch`): the writes this node
        coordinates leave as one request per replica, each key acknowledged
        by its own W replicas.
        """
        checked = [(self._key(k), self._check_value(v)) for k, v in items]
        exp = self._expiry(ttl, None)
        if not checked:
            return
        if w is not None or timeout is not None:
            await asyncio.gather(
                *(self._write(k, v, exp, None, None, w, timeout, False) for k, v in checked)
            )
            return
        collect = _Collect(self.app.create_future(), len(checked))
        batch = self.batch()
        put = batch._put
        told = collect.counted
        for i, (k, v) in enumerate(checked):
            put(k, v, exp, told, i)  # validated above: no second check per key
        batch.flush()
        await collect.fut

    async def delete_many(self, keys: Sequence[bytes | str]) -> list[bool]:
        """Delete every key (batched like :meth:`put_many`); for each, whether an
        acknowledging replica held a live value. Raises the first failure."""
        ks = [self._key(k) for k in keys]
        if not ks:
            return []
        collect = _Collect(self.app.create_future(), len(ks))
        batch = self.batch()
        for i, k in enumerate(ks):
            batch.delete(k, partial(collect.done, i))
        batch.flush()
        return await collect.fut  # type: ignore[no-any-return]

    async def set_expiry(
        self, key: bytes | str, expires_at: float | None, *, context: bytes | None = None
    ) -> bool:
        """Rewrite the live value of ``key`` with a new expiry (``None``: persist).

        A read then a write with the read's context (or ``context``): not
        atomic under concurrent writers. False when the key is missing.
        """
        k = self._key(key)
        exp = None if expires_at is None else _expiry_float(expires_at)
        ctx = self._context(context)
        entry = await self.get_entry(k)
        if entry is None:
            return False
        await self._write(
            k, entry.value, exp, ctx if ctx is not None else entry.context, None, None, None
        )
        return True

    # -- client side: whole keyspace ----------------------------------------------
    async def scan(
        self, cursor: int, count: int = 10, match: bytes | None = None
    ) -> tuple[int, list[bytes]]:
        """Iterate live keys across the cluster; the cursor is the next partition.

        Each call visits whole partitions (asking one live replica of each,
        batched per node) until about ``count`` keys were found. A key
        present for the whole iteration is returned at least once, provided
        the replica asked for its partition holds it (the first live replica
        coordinates every write, so it normally does).
        """
        if type(cursor) is not int or cursor < 0:
            raise InvalidRequest(f"invalid cursor {cursor!r}")
        if type(count) is not int or count < 1:
            raise InvalidRequest(f"count must be >= 1, got {count!r}")
        if match is not None and not isinstance(match, bytes):
            raise InvalidRequest("match must be bytes")
        app = self.app
        total = app.partitions
        if cursor >= total:
            return 0, []
        keys: list[bytes] = []
        batch = _SCAN_FIRST_BATCH
        p = cursor
        while p < total and len(keys) < count:
            parts = list(range(p, min(total, p + batch)))
            found = await app.coverage(
                "scan", lambda ps: [ps, match], partitions=parts, timeout=self.config.timeout
            )
            for some in found:
                keys.extend(some)
            p = parts[-1] + 1
            batch = min(batch * 2, _SCAN_MAX_BATCH)
        return (p if p < total else 0), keys

    async def count(self) -> int:
        """Live keys in the cluster: the sum over a covering set of replicas.

        Approximate: each partition is counted on one replica, which may lag.
        """
        counts = await self.app.coverage("count", lambda ps: ps, timeout=self.config.timeout)
        return sum(int(c) for c in counts)

    async def flush(self) -> None:
        """Drop every key on every node of the ring (no tombstones are left).

        Raises :class:`QuorumNotReached` when some node did not confirm: the
        others are flushed, and the missed node keeps (and may spread back)
        its data.
        """
        answers = await self.app.broadcast("flush", None, timeout=self.config.timeout)
        errors = {nid: a for nid, a in answers.items() if isinstance(a, BaseException)}
        if errors:
            raise QuorumNotReached(
                len(answers),
                len(answers) - len(errors),
                errors,
                message="flush did not reach every node",
            )


def _put_done(
    done: Callable[[None, BaseException | None], None],
    existed: Any,
    exc: BaseException | None,
) -> None:
    done(None, exc)


def _write_done(
    done: Callable[[bool, BaseException | None], None],
    existed: bool,
    result: QuorumResult | None,
    exc: BaseException | None,
) -> None:
    if result is None:
        done(False, exc)
    else:
        done(existed or any(answer is True for _, answer in result.acks), None)


def _put_acked(
    done: Callable[[None, BaseException | None], None],
    result: QuorumResult | None,
    exc: BaseException | None,
) -> None:
    done(None, exc if result is None else None)


class _Read:
    """One read in callback form (:meth:`KVStore._start_get`): the round's
    listener (``done`` with the joined value) and, by :meth:`repair`, its read
    repair; the replicas' answers are decoded once, into ``memo``, for both."""

    __slots__ = ("done", "key", "memo", "partition", "store")

    def __init__(
        self,
        store: KVStore,
        key: bytes,
        partition: int,
        done: Callable[[bytes | None, BaseException | None], None],
    ) -> None:
        self.store = store
        self.key = key
        self.partition = partition
        self.done = done
        self.memo: dict[int, Entries] = {}

    def __call__(self, result: QuorumResult | None, exc: BaseException | None) -> None:
        if result is None:
            self.done(None, exc)
            return
        store = self.store
        try:
            acks = result.acks
            agreed = _all_same(acks)
            if agreed and store._merge_fn is None:
                self.done(_agreed_value(acks[0][1], store), None)
                return
            # agreeing answers decoded once; answers that differ joined
            entries = _decode_state(acks[0][1]) if agreed else store._merged(result, self.memo)
            if store._merge_fn is None:
                value = _live_value(entries, store)
            else:
                got = store._resolve(entries, store._clock().time()) if entries else None
                value = None if got is None else got[0]
        except Exception as err:
            self.done(None, err)
            return
        self.done(value, None)

    def repair(self, result: QuorumResult) -> None:
        if not _all_same(result.answers):  # replicas that agree need no repair
            self.store._read_repair(self.key, self.partition, self.memo, result)


class _Collect:
    """The answers of a batch's keys, in order, into one future: its result
    once every key answered, or the first error."""

    __slots__ = ("error", "fut", "left", "values")

    def __init__(self, fut: asyncio.Future[Any], count: int) -> None:
        self.fut = fut
        self.left = count
        self.values: list[Any] = [None] * count
        self.error: BaseException | None = None

    def counted(self, index: int, exc: BaseException | None) -> None:
        """A counted listener (``QuorumBatch.add_counted``): the key at ``index``
        answered ``None`` or failed."""
        self.done(index, None, exc)

    def done(self, index: int, value: Any, exc: BaseException | None) -> None:
        if exc is not None:
            if self.error is None:
                self.error = exc
        else:
            self.values[index] = value
        self.left -= 1
        if self.left == 0 and not self.fut.done():
            if self.error is not None:
                self.fut.set_exception(self.error)
            else:
                self.fut.set_result(self.values)


class KVBatch:
    """Reads and writes started together, sent as one request per replica.

    Each call starts one key's operation exactly as the callback forms do
    (:meth:`KVStore.start_get`, :meth:`KVStore.start_put`): its own quorum,
    version, error and ``done`` callback; this node's own replica does its
    part at once (a write is issued here when this node coordinates it).
    The requests to the other replicas wait for :meth:`flush`, which sends
    one request per replica holding every command for it, in call order
    (``AppContext.batch``). ``done`` is called exactly once, on the event
    loop, possibly during the call or the flush; it must not raise.

    Operations on different keys commute, so a batch answers as the same
    operations run one after another would -- but two operations on one key
    in one batch (a write then a read of it) are only ordered at each
    replica, not by their acknowledgements: callers that need
    read-your-writes within a pipeline flush between them (the RESP server
    does). Writes this node cannot coordinate (it is no replica of the key)
    are forwarded to a replica (``coord_put``), held like the rest: one
    request per replica carries the batch's forwarded writes with its other
    commands, each still answered on its own.
    """

    __slots__ = ("_add", "_dones", "_gets", "_r", "_rounds", "_shape", "_store")

    def __init__(self, store: KVStore) -> None:
        self._store = store
        self._rounds = store.app.batch()
        self._add = self._rounds.add  # one bound method per batch (its deletes)
        #: the ``done`` of each put since the last flush, told by index
        self._dones = _Dones()
        #: the reads since the last flush, told by index (made by the first)
        self._gets: _Gets | None = None
        #: the replica sets of the ring, found on the first key since the last
        #: flush: _UNKNOWN, _SHARED (every key has several replicas: no key is
        #: one this node alone decides) or _SINGLE (one replica each)
        self._shape = _UNKNOWN
        #: the store's R, read on the first read since the last flush (-1: not yet)
        self._r = -1

    def _alone(self, partition: int) -> bool:
        """Whether a key of ``partition`` may be one this node's replica alone
        decides (``AppContext.solo`` may say yes): not when the ring gives
        partitions several replicas, which every partition then has -- found
        once per flush, not asked per key."""
        shape = self._shape
        if shape == _UNKNOWN:
            shape = self._shape = _SHARED if len(self._store.app.owners(partition)) > 1 else _SINGLE
        return shape == _SINGLE

    def get(self, key: bytes, done: Callable[[bytes | None, BaseException | None], None]) -> None:
        """Read ``key`` (the store's R): ``done(value or None, None)`` or ``done(None, error)``.

        A counted read of the batch (``QuorumBatch.add_read``: no round
        object per key; read repair only for keys whose replicas differ); a
        read this replica alone decides (``AppContext.solo``: one node, N=1)
        is answered here, with no round."""
        store = self._store
        try:
            k = store._key(key)
        except Exception as exc:
            done(None, exc)
            return
        gets = self._gets
        if gets is None:
            gets = self._gets = _Gets(store, None)
        index = len(gets.dones)
        gets.dones.append(done)
        gets.keys.append(k)
        gets.partitions.append(0)
        self._get(k, gets, index)

    def _get(self, k: bytes, gets: _Gets, index: int) -> None:
        """:meth:`get` of a checked key, told to ``gets`` by ``index`` (its key
        and partition slots exist)."""
        store = self._store
        try:
            app = store.app
            partition = app.partition_for(k)
            quorum = self._r
            if quorum < 0:
                quorum = self._r = store._read_quorum(None)
            if self._alone(partition) and app.solo(partition, quorum, False):
                value = store._solo_get(partition, k)
            else:
                gets.partitions[index] = partition
                # by position (see _start_get)
                self._rounds.add_read(
                    "get", k, PACKED, quorum, gets, index, partition, store.config.timeout
                )
                return
        except Exception as exc:
            gets.tell(index, None, exc)
            return
        gets.tell(index, value, None)

    def put(
        self,
        key: bytes,
        value: bytes,
        done: Callable[[None, BaseException | None], None],
        *,
        expires_at: float | None = None,
    ) -> None:
        """Write ``key`` (the store's W): ``done(None, None)`` or ``done(None, error)``.

        A write this node coordinates is a counted round of the batch
        (``QuorumBatch.add_counted``: no round object per key)."""
        store = self._store
        try:
            k = store._key(key)
            v = store._check_value(value)
        except Exception as exc:
            done(None, exc)
            return
        dones = self._dones
        index = len(dones.dones)
        dones.dones.append(done)
        self._put(k, v, expires_at, dones, index)

    def _put(
        self,
        k: bytes,
        v: bytes,
        expires_at: float | None,
        listener: Callable[[int, BaseException | None], None],
        index: int,
    ) -> None:
        """:meth:`put` of a checked key and value, told to ``listener(index,
        None)`` or ``listener(index, error)`` (``put_many``'s collector directly)."""
        store = self._store
        try:
            partition = store.app.partition_for(k)
            if (
                self._alone(partition)
                and store._solo_write(partition, k, v, expires_at, False) is not None
            ):
                solo = True  # acknowledged here (one node, N=1): no round
            else:
                solo = False
                begun = store._begin_write(k, v, expires_at, None, None, None, False, partition)
                if begun is not None:
                    partition, entries, _, quorum = begun
                    self._rounds.add_counted(
                        REPLICATE,
                        k,
                        pack(entries),  # the packed form: one array on the wire, not three
                        quorum,
                        listener,
                        index,
                        partition,
                        store.config.timeout,
                    )
                    return
        except Exception as exc:
            listener(index, exc)
            return
        if solo:
            listener(index, None)
            return
        # this node cannot coordinate it: forwarded, held in the batch
        self._forward(k, v, expires_at, partial(_forward_counted, listener, index), False)

    def delete(self, key: bytes, done: Callable[[bool, BaseException | None], None]) -> None:
        """Write a tombstone: ``done(existed, None)`` or ``done(False, error)``."""
        self._store._start_write(key, None, None, done, True, self._add, self)

    def _forward(
        self,
        k: bytes,
        v: bytes | None,
        expires_at: float | None,
        done: Callable[[bool, BaseException | None], None],
        want_existed: bool = True,
    ) -> None:
        """A write this node is no replica of: its ``coord_put`` held in the
        batch (:meth:`KVStore._hold_forward`). ``done(existed, None)`` or
        ``done(False, error)`` (False, without ``want_existed``)."""
        store = self._store
        store._hold_forward(
            self._rounds, k, v, expires_at, None, None, None, store.config.timeout, done,
            want_existed,
        )  # fmt: skip

    def flush(self) -> None:
        """Send the held requests (one per replica); the batch is empty after."""
        if self._dones.dones:  # the flushed rounds keep theirs
            self._dones = _Dones()
        self._gets = None
        self._shape = _UNKNOWN  # the ring may change before the next key
        self._r = -1
        self._rounds.flush()


def _settle(fut: asyncio.Future[Any], answer: Any, exc: BaseException | None) -> None:
    """A held call's outcome (``QuorumBatch.call``) to the future awaiting it."""
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(answer)


def _forward_counted(
    listener: Callable[[int, BaseException | None], None],
    index: int,
    existed: bool,
    exc: BaseException | None,
) -> None:
    listener(index, exc)


class _Forward:
    """One forwarded write (:meth:`KVStore._hold_forward`): told the
    first replica's answer to its ``coord_put``; tries the next replicas one
    by one (a task, as :meth:`KVStore._forward`) only when that one was
    certainly not reached."""

    __slots__ = ("done", "key", "ordered", "outer", "partition", "payload", "store")

    def __init__(
        self,
        store: KVStore,
        key: bytes,
        partition: int,
        ordered: list[str],
        payload: list[Any],
        outer: float,
        done: Callable[[bool, BaseException | None], None],
    ) -> None:
        self.store = store
        self.key = key
        self.partition = partition
        self.ordered = ordered
        self.payload = payload
        self.outer = outer
        self.done = done

    def __call__(self, answer: Any, exc: BaseException | None) -> None:
        if exc is None:
            self.done(answer is True, None)
        elif isinstance(exc, PeerUnavailable) and not isinstance(exc, ConnectionLost):
            self.retry(self.ordered[1:], exc)  # certainly not delivered: the next one
        else:
            self.done(False, exc)  # maybe applied there: another try would fork it

    def retry(self, ordered: list[str], last: BaseException | None) -> None:
        store = self.store
        task = asyncio.ensure_future(
            store._forward_to(ordered, self.key, self.partition, self.payload, self.outer, last)
        )
        store._background.add(task)
        task.add_done_callback(partial(store._write_task_done, self.done))


class _Dones:
    """The ``done`` callbacks of a batch's puts, in order: the one listener of
    all its counted rounds (``listener(index, error)``)."""

    __slots__ = ("dones",)

    def __init__(self) -> None:
        self.dones: list[Callable[[None, BaseException | None], None]] = []

    def __call__(self, index: int, exc: BaseException | None) -> None:
        self.dones[index](None, exc)


class _Gets:
    """The reads of a batch since its last flush (:meth:`KVBatch.get`): the
    one listener of their counted reads (``QuorumBatch.add_read``), each
    told by its index -- the answer joined from the replicas' states, and
    read repair when they differ -- to its ``done``, or to ``collect``
    (``get_many``: no callback per key)."""

    __slots__ = ("collect", "dones", "keys", "partitions", "store")

    def __init__(self, store: KVStore, collect: _Collect | None) -> None:
        self.store = store
        self.collect = collect
        self.dones: list[Callable[[bytes | None, BaseException | None], None]] = []
        self.keys: list[bytes] = []
        self.partitions: list[int] = []

    def tell(self, index: int, value: bytes | None, exc: BaseException | None) -> None:
        collect = self.collect
        if collect is not None:
            collect.done(index, value, exc)
        else:
            self.dones[index](value, exc)

    def same(self, first: Any, answer: Any) -> bool:
        return _same_state(first, answer)

    def answered(
        self,
        index: int,
        first: Any,
        others: list[tuple[str, Any]] | None,
        exc: BaseException | None,
    ) -> None:
        if exc is not None:
            self.tell(index, None, exc)
            return
        store = self.store
        try:
            if others is None and store._merge_fn is None:  # the replicas agree
                value = _agreed_value(first, store)
                self.tell(index, value, None)
                return
            entries = _decode_state(first)  # a tuple: this node's own, unpacked
            if others is not None:
                for _, answer in others:
                    other = _decode_state(answer)
                    if other != entries:
                        entries = store._join(entries, other) if entries else other
            if store._merge_fn is None:
                value = _live_value(entries, store)
            else:
                got = store._resolve(entries, store._clock().time()) if entries else None
                value = None if got is None else got[0]
        except Exception as err:
            self.tell(index, None, err)
            return
        self.tell(index, value, None)

    def completed(self, index: int, result: QuorumResult) -> None:
        if self.store.config.read_repair:
            self.store._read_repair(self.keys[index], self.partitions[index], {}, result)


def _agreed(answers: list[tuple[str, Any]]) -> Entries | None:
    """The state every one of ``answers`` is, decoded; None when they differ
    (or there are none)."""
    if not _all_same(answers):
        return None
    return _decode_state(answers[0][1])  # a tuple: this node's own, unpacked


def _all_same(answers: list[tuple[str, Any]]) -> bool:
    """Whether every one of ``answers`` is the same state (:func:`_same_state`)."""
    if not answers:
        return False
    first = answers[0][1]
    for i in range(1, len(answers)):
        answer = answers[i][1]
        if answer is not first and not _same_state(first, answer):
            return False
    return True


def _agreed_value(first: Any, store: KVStore) -> bytes | None:
    """The live value of the state the replicas agree on, ``first`` (an
    answer to a ``PACKED`` get: this node's stored tuple, or a peer's decoded
    list): a flat form (``_state.pack``'s) read in place -- its one value is
    the resolved one -- anything else decoded (:func:`_live_value`)."""
    if type(first) is tuple:
        s: tuple[Any, ...] = first
        if s and type(s[0]) is str:
            value = s[1]
            if value is None:
                return None
            exp = s[2]
            if exp is None or store._clock().time() < exp:
                return value  # type: ignore[no-any-return]
            return None
    return _live_value(_decode_state(first), store)


def _live_value(entries: Entries, store: KVStore) -> bytes | None:
    """The live value of ``entries`` (``st.live_item``'s), reading the
    store's clock only for a value that expires: a lone version is read
    field by field, with no typed tuple unpacked and none built."""
    rows: tuple[Any, ...] = entries  # untyped rows: no typed tuple unpacked
    if not rows:
        return None
    if len(rows) == 1:
        one: tuple[Any, ...] = rows[0]
        vals: tuple[Any, ...] = one[2]
        if len(vals) == 1:
            item: tuple[Any, ...] = vals[0]
            value: bytes | None = item[0]
            if value is None:
                return None
            exp = item[1]
            if exp is None or store._clock().time() < exp:
                return value
            return None
    got = st.live_item(entries, store._clock().time())
    return None if got is None else got[0]


def _same_state(first: Any, answer: Any) -> bool:
    """Whether two replicas' answers to ``get`` are the same state: equal, or
    this node's own (``Entries``, tuples) and a peer's (the same nested
    lists, decoded from the wire), compared field by field with no decoding.
    Types are compared too: an answer only ``==`` to a valid state (an int
    where a float was, a bool for an int) is not the same, so it is decoded
    and checked as any other."""
    if type(first) is type(answer):
        return bool(first == answer)
    if type(first) is list:
        first, answer = answer, first
    if type(first) is not tuple or type(answer) is not list:
        return False
    mine: tuple[Any, ...] = first
    theirs: list[Any] = answer
    if mine and type(mine[0]) is str:  # this node's stored flat form: field by field
        return _same_fields(mine, theirs)
    # this node's Entries: a state pack() leaves nested, so never a peer's
    # flat answer (every replica stores pack()'s one form of a state)
    if len(mine) != len(theirs):
        return False
    for k in range(len(mine)):
        entry: tuple[Any, ...] = mine[k]
        other: Any = theirs[k]
        if type(other) is not list or len(other) != 3:
            return False
        fields: list[Any] = other
        actor = fields[0]
        counter = fields[1]
        vals = fields[2]
        if (
            type(actor) is not str
            or type(counter) is not int
            or type(vals) is not list
            or not _str_eq(actor, entry[0])
            or not _int_eq(counter, entry[1])
        ):
            return False
        items: tuple[Any, ...] = entry[2]
        theirs_items: list[Any] = vals
        if len(theirs_items) != len(items):
            return False
        for j in range(len(items)):
            item: tuple[Any, ...] = items[j]
            v: Any = theirs_items[j]
            if type(v) is not list or len(v) != 3:
                return False
            got: list[Any] = v
            value = got[0]
            exp = got[1]
            stamp = got[2]
            mv = item[0]
            me = item[1]
            if value is None:
                if mv is not None:
                    return False
            elif type(value) is not bytes or mv is None or not _bytes_eq(value, mv):
                return False
            if exp is None:
                if me is not None:
                    return False
            elif type(exp) is not float or me is None or not _float_eq(exp, me):
                return False
            if type(stamp) is not int or not _int_eq(stamp, item[2]):
                return False
    return True


def _str_eq(a: str, b: str) -> bool:
    return a == b


def _int_eq(a: int, b: int) -> bool:
    return a == b


def _bytes_eq(a: bytes, b: bytes) -> bool:
    return a == b


def _float_eq(a: float, b: float) -> bool:
    return a == b


def _same_fields(flat: tuple[Any, ...], theirs: list[Any]) -> bool:
    """A flat stored form (``_state.pack``'s) and a peer's decoded answer
    compared field by field, types included."""
    if len(flat) != len(theirs):
        return False
    for i in range(len(flat)):
        a = flat[i]
        b = theirs[i]
        if type(a) is not type(b) or a != b:
            return False
    return True


def _decode_once(answer: Any, memo: dict[int, Entries], answers: list[tuple[str, Any]]) -> Entries:
    """``answer`` decoded, reusing the decoding of an equal answer already in
    ``memo`` (replicas that agree send equal states: one validation, and the
    later comparisons of the decoded states are identity checks)."""
    if type(answer) is list:
        for _, other in answers:
            if other is answer:
                break  # only answers before this one can have been decoded
            if type(other) is list and other == answer:
                seen = memo.get(id(other))
                if seen is not None:
                    return seen
    return _decode_state(answer)
