"""Quorum fan-out: send one command to a key's replicas, wait for R or W answers.

The coordinator sends the command to the first ``n`` nodes of the key's
preference list -- every one of them, even when fewer answers are needed (a
write acknowledged at W=1 still reaches all N replicas) -- and resolves as soon
as ``quorum`` replicas answered successfully. If so many replicas fail that
the quorum can no longer be reached, or the deadline passes first, it raises
:class:`~peer_ring.errors.QuorumNotReached` with the required and acked counts:
fewer answers are never a silent success.

Remote requests are sent before the local replica runs, and nothing waits for
the local work before sending, so local and remote work overlap. Answers that
arrive after the quorum are still collected: once every replica answered or
failed, ``on_complete`` runs with all the answers (read repair uses it), or
``QuorumResult.complete`` resolves with them.

Sloppy quorum (the default, as in Riak; ``sloppy=False`` per call for a
strict quorum): a preference-list node the failure detector sees down is
replaced by the next live node of ``ring.fallbacks(p)``, which receives the
command as a hinted request and keeps the result for the owner
(:mod:`peer_ring.replication.hints`); its answer counts towards the quorum.
Under a strict quorum only home replicas count. While a partition is being
handed off, its old holders also receive every command (dual-write), without
counting towards the quorum. Commands carry the ring epoch (fencing, see
``peer_ring.wire``).

Batches (:class:`RoundBatch`): rounds started together -- a RESP pipeline,
MSET/MGET, ``put_many`` -- are each a round of their own (a quorum, an
answer or error, a deadline per command), but their remote requests are held
until :meth:`RoundBatch.flush` and leave as *one* ``sb`` request per replica
holding every command for it (up to ``BATCH_MAX_COMMANDS`` per request), in
the order they were started; the replica applies them in that order in one
pass and answers each on its own. A batch's answer is one frame, bounded by
the transport's ``max_frame_size`` like any answer: reads of very large
values in one batch can exceed it where separate reads would not. One
replica's failure or slowness fails or delays the rounds of the commands it
held, never the others' answers. Local work, hinted copies and dual writes
are not held: they happen when the round starts, as for a lone round.

A round whose only target is this node (a one-node cluster, N=1), with no
stand-in and no handoff copy, is decided by the local answer at once: the
listener is told directly, with no :class:`Round` (the same result, errors
and counters). A caller that can answer such a round itself asks
:meth:`Coordinator.solo` first (``AppContext.solo``: the KV store's reads
and writes) and starts no round at all.

Dynamo (DeCandia et al., SOSP 2007), sections 4.5 and 4.6.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from peer_ring._awaitable import as_future, is_awaitable
from peer_ring.cluster import Cluster
from peer_ring.config import HandoffConfig
from peer_ring.errors import (
    InvalidRequest,
    NotOwner,
    PeerRingError,
    PeerUnavailable,
    QuorumNotReached,
    error_from_wire,
)
from peer_ring.replication.hints import HintStore
from peer_ring.replication.transfer import TransferManager
from peer_ring.ring import Ring, key_hash
from peer_ring.service import (
    CompleteCallback,
    CountedReads,
    QuorumResult,
    RoundListener,
    _ReadAdapter,
)
from peer_ring.wire import (
    BATCH_OK,
    batch_frame,
    dual_frame,
    hinted_frame,
    parse_batch_answer,
    service_frame,
)

log = logging.getLogger(__name__)

#: The ring's hash of a key (``Final``: compiled, a static, not a lookup per call).
_KEY_HASH: Final = key_hash

#: Most commands one batch request carries (a replica's answer to a batch is
#: one frame too, bounded by ``max_frame_size``); more leave as more requests.
BATCH_MAX_COMMANDS: Final = 64

#: The empty map of stand-ins, shared (read only; a round's ``result.hinted``
#: when nothing stood in).
_NO_HINTS: dict[str, str] = {}

#: Unanswered peer requests above which :meth:`Coordinator.run` waits for
#: the remaining replicas of a round whose quorum is already met.
REPLICATION_BACKLOG = 4096


class LatencySamples:
    """How long a sample of quorum rounds took, newest last (the web console's
    latency percentiles).

    The coordinator times one round in ``sample_mask + 1`` (every 8th by
    default: the other rounds pay one counter increment and a bit test) from
    its start to its outcome (quorum reached or failed). At most ``size``
    samples are kept; :meth:`summary` reads those of a recent window.
    """

    __slots__ = ("samples",)

    def __init__(self, size: int = 4096) -> None:
        #: (node clock's monotonic time at the outcome, seconds taken, quorum reached)
        self.samples: deque[tuple[float, float, bool]] = deque(maxlen=size)

    def add(self, at: float, seconds: float, ok: bool) -> None:
        self.samples.append((at, seconds, ok))

    def summary(self, now: float, window: float) -> dict[str, Any]:
        """Percentiles (milliseconds) of the rounds that ended in the last
        ``window`` seconds: ``p50``, ``p90``, ``p99``, ``max`` (None without
        samples), the sample count and how many of them failed."""
        taken = sorted(s for at, s, _ in self.samples if now - at <= window)
        failed = sum(1 for at, _, ok in self.samples if not ok and now - at <= window)
        out: dict[str, Any] = {"samples": len(taken), "failed": failed, "window": window}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            out[name] = taken[min(len(taken) - 1, int(q * len(taken)))] * 1e3 if taken else None
        out["max"] = taken[-1] * 1e3 if taken else None
        return out


class QuorumStats:
    """Counts of one coordinator's quorum rounds (``peer_ring_quorum_*_total``).

    ``rounds`` -- rounds started; ``failures`` -- rounds that ended in
    :class:`~peer_ring.errors.QuorumNotReached` (too few replicas answered
    before the deadline, or too few existed); ``batch_requests`` -- peer
    requests a :class:`RoundBatch` flush sent (one per replica and run of
    commands, or one per command sent alone): what a batch costs on the
    wire, without the failure detector's and membership's own requests that
    the transport's ``requests_out`` also counts. Updated on the event loop
    only.
    """

    __slots__ = ("batch_requests", "failures", "rounds")

    def __init__(self) -> None:
        self.rounds = 0
        self.failures = 0
        self.batch_requests = 0


class _Held:
    """What the answers to a command held in a :class:`RoundBatch` are told:
    its :class:`Round`, or the batch's tally with the command's slot in it
    (a Round ignores the slot)."""

    __slots__ = ()

    def held_ok(self, slot: int, node_id: str, value: Any) -> None:
        """``node_id`` answered the held command in ``slot``."""
        raise NotImplementedError

    def held_fail(self, slot: int, node_id: str, exc: BaseException) -> None:
        """``node_id`` failed the held command in ``slot``."""
        raise NotImplementedError

    def held_answer(self, slot: int, node_id: str, value: Any, exc: BaseException | None) -> None:
        """A replica's answer to a held command sent on its own
        (``Transport.request_callback``)."""
        if exc is None:
            self.held_ok(slot, node_id, value)
        else:
            self.held_fail(slot, node_id, exc)


class Round(_Held):
    """One quorum round (:meth:`Coordinator.start`); ``done`` is None with a listener."""

    __slots__ = (
        "complete",
        "dispatching",
        "done",
        "errors",
        "finished",
        "listener",
        "on_complete",
        "quorum",
        "remaining",
        "result",
        "stats",
        "timer",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        targets: tuple[str, ...],
        quorum: int,
        listener: RoundListener | None,
        on_complete: CompleteCallback | None,
        hinted: dict[str, str] | None = None,
        stats: QuorumStats | None = None,
    ) -> None:
        self.quorum = quorum
        self.stats = stats
        self.remaining = len(targets)
        self.result = QuorumResult(targets, _NO_HINTS if hinted is None else hinted, [], {}, [])
        self.errors = self.result.errors
        self.finished = False
        self.listener = listener
        self.on_complete = on_complete
        # With a listener nobody awaits: no future (an unretrieved failed future
        # would be reported at garbage collection). With on_complete nobody
        # needs the complete future either: the callback is called directly.
        self.done: asyncio.Future[QuorumResult] | None = (
            loop.create_future() if listener is None else None
        )
        self.complete: asyncio.Future[list[tuple[str, Any]]] | None = None
        if listener is None and on_complete is None:
            self.complete = self.result.complete = loop.create_future()
        self.timer: asyncio.TimerHandle | None = None
        #: True while :meth:`Coordinator.start` is still sending: a failure then
        #: cannot end the round yet, the local replica may still answer
        self.dispatching = True

    def dispatched(self) -> None:
        """Every target was asked: fail now if the quorum can no longer be reached."""
        self.dispatching = False
        if not self.finished and len(self.result.acks) + self.remaining < self.quorum:
            self._fail()

    def ok(self, node_id: str, value: Any) -> None:
        self.remaining -= 1
        pair = (node_id, value)  # one tuple in both lists: an object less per answer
        self.result.answers.append(pair)
        if not self.finished:
            self.result.acks.append(pair)
            if len(self.result.acks) >= self.quorum:
                self._finish()
        if self.remaining == 0:
            self._complete()

    def fail(self, node_id: str, exc: BaseException) -> None:
        self.remaining -= 1
        self.errors[node_id] = exc
        if (
            not self.finished
            and not self.dispatching
            and len(self.result.acks) + self.remaining < self.quorum
        ):
            self._fail()
        if self.remaining == 0:
            self._complete()

    def on_done(self, node_id: str, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            self.fail(node_id, PeerUnavailable("request cancelled"))
            return
        exc = fut.exception()
        if exc is None:
            self.ok(node_id, fut.result())
        else:
            self.fail(node_id, exc)

    def answer(self, node_id: str, value: Any, exc: BaseException | None) -> None:
        """A remote replica's answer (``Transport.request_callback``)."""
        if exc is None:
            self.ok(node_id, value)
        else:
            self.fail(node_id, exc)

    def held_ok(self, slot: int, node_id: str, value: Any) -> None:
        self.ok(node_id, value)

    def held_fail(self, slot: int, node_id: str, exc: BaseException) -> None:
        self.fail(node_id, exc)

    def expire(self) -> None:
        if not self.finished:
            self._fail()

    def _finish(self) -> None:
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        if self.done is not None:
            self.done.set_result(self.result)
        else:
            self._tell(self.result, None)

    def _fail(self) -> None:
        self.finished = True
        if self.stats is not None:
            self.stats.failures += 1
        if self.timer is not None:
            self.timer.cancel()
        exc = QuorumNotReached(self.quorum, len(self.result.acks), dict(self.errors))
        if self.done is not None:
            self.done.set_exception(exc)
        else:
            self._tell(None, exc)

    def _tell(self, result: QuorumResult | None, exc: BaseException | None) -> None:
        assert self.listener is not None
        try:
            self.listener(result, exc)
        except Exception:  # a broken listener must not break the round
            log.exception("quorum round listener failed")

    def _complete(self) -> None:
        if self.on_complete is not None:
            try:
                self.on_complete(self.result)
            except Exception:  # e.g. read repair: best effort, never breaks the round
                log.exception("quorum round on_complete callback failed")
        elif self.complete is not None and not self.complete.done():
            self.complete.set_result(list(self.result.answers))


#: ``listener(index, None)`` once a counted round's quorum acknowledged,
#: ``listener(index, error)`` once it cannot (:meth:`RoundBatch.add_counted`).
CountedListener = Callable[[int, "BaseException | None"], None]


class _Counts(_Held):
    """What the two batch tallies share (:class:`_Tally`, :class:`_ReadTally`):
    one object for all the counted rounds of a batch, a slot per round in
    parallel lists -- answers still needed for the quorum, targets still to
    answer, the quorum -- instead of a :class:`Round` and a
    :class:`QuorumResult` per round; the errors seen and the start times of
    timed sample rounds only for the slots that have them. Each slot is
    told once: after ``quorum`` answers, or as :class:`QuorumNotReached`
    (with every error seen) once the answers still possible cannot make it."""

    __slots__ = ("coordinator", "errors", "left", "need", "quorum", "timed")

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        #: answers still needed; 0 once told (reached or failed)
        self.need: list[int] = []
        #: targets that have not answered yet (a failure counts as an answer)
        self.left: list[int] = []
        self.quorum: list[int] = []
        #: slot -> node -> error, only for slots that saw one
        self.errors: dict[int, dict[str, BaseException]] | None = None
        #: slot -> start time of a timed sample round
        self.timed: dict[int, float] | None = None

    def _slot(self, quorum: int, targets: int) -> int:
        slot = len(self.need)
        self.need.append(quorum)
        self.left.append(targets)
        self.quorum.append(quorum)
        return slot

    def time(self, slot: int) -> None:
        """Time ``slot`` into the coordinator's latency samples (a sampled round)."""
        if self.timed is None:
            self.timed = {}
        self.timed[slot] = self.coordinator.cluster.clock.monotonic()

    def held_fail(self, slot: int, node_id: str, exc: BaseException) -> None:
        self.fail(slot, node_id, exc)

    def fail(self, slot: int, node_id: str, exc: BaseException, dispatching: bool = False) -> None:
        """``node_id`` failed the round in ``slot`` (``dispatching``: while the
        round is still being sent, when the quorum is checked only after)."""
        left = self.left[slot] - 1
        self.left[slot] = left
        errors = self.errors
        if errors is None:
            errors = self.errors = {}
        seen = errors.get(slot)
        if seen is None:
            seen = errors[slot] = {}
        seen[node_id] = exc
        if not dispatching:
            self.check(slot)
        if left == 0:
            self._last(slot)

    def check(self, slot: int) -> None:
        """Fail the round if the answers still possible cannot reach its quorum
        (after every target was asked: the local replica may still answer)."""
        need = self.need[slot]
        if need > 0 and self.left[slot] < need:
            self._fail(slot)

    def _fail(self, slot: int) -> None:
        need = self.need[slot]
        self.need[slot] = 0
        self.coordinator.stats.failures += 1
        quorum = self.quorum[slot]
        errors = self.errors.get(slot) if self.errors is not None else None
        self._tell(slot, QuorumNotReached(quorum, quorum - need, dict(errors) if errors else {}))

    def _tell(self, slot: int, exc: BaseException | None) -> None:
        if self.timed:  # a sampled round not told yet: maybe this one
            started = self.timed.pop(slot, None)
            if started is not None:
                coordinator = self.coordinator
                now = coordinator.cluster.clock.monotonic()
                coordinator.latency.add(now, now - started, exc is None)
        self._told(slot, exc)

    def _told(self, slot: int, exc: BaseException | None) -> None:
        """Tell the round in ``slot`` its outcome (reached: ``exc`` None)."""
        raise NotImplementedError

    def _last(self, slot: int) -> None:
        """Every target of ``slot`` answered or failed."""


class _Tally(_Counts):
    """The counted write rounds of one batch (:meth:`Coordinator.start_counted`):
    :class:`_Counts` with the listener and its index per slot, told
    ``listener(index, None)`` after ``quorum`` acks or ``listener(index,
    error)``."""

    __slots__ = ("indexes", "listeners")

    def __init__(self, coordinator: Coordinator) -> None:
        super().__init__(coordinator)
        self.listeners: list[CountedListener] = []
        self.indexes: list[int] = []

    def add(self, quorum: int, targets: int, listener: CountedListener, index: int) -> int:
        slot = self._slot(quorum, targets)
        self.listeners.append(listener)
        self.indexes.append(index)
        return slot

    def ok(self, slot: int) -> None:
        self.left[slot] -= 1
        need = self.need[slot]
        if need > 0:
            need -= 1
            self.need[slot] = need
            if need == 0:
                self._tell(slot, None)

    def held_ok(self, slot: int, node_id: str, value: Any) -> None:
        self.ok(slot)

    def _told(self, slot: int, exc: BaseException | None) -> None:
        try:
            self.listeners[slot](self.indexes[slot], exc)
        except Exception:  # a broken listener must not break the round
            log.exception("quorum round listener failed")


#: A counted read's slot before its first answer (None is an answer).
_UNANSWERED: Final[Any] = object()


class _ReadTally(_Counts):
    """The counted reads of one batch (:meth:`Coordinator.start_read`):
    :class:`_Counts` with, per slot, the targets, the listener and its
    index, and the first answer. A later answer the listener finds the same
    as the first (``reads.same``) is only counted; one that differs is kept,
    with its node, in ``diffs``. Told ``reads.answered`` after ``quorum``
    answers, with the first and the differing ones, or with the error; and
    once every target answered or failed, ``reads.completed`` with all the
    answers if any differed (read repair)."""

    __slots__ = ("diffs", "first", "indexes", "reads", "targets", "timers")

    def __init__(self, coordinator: Coordinator) -> None:
        super().__init__(coordinator)
        self.targets: list[tuple[str, ...]] = []
        self.reads: list[CountedReads] = []
        self.indexes: list[int] = []
        #: the first answer per slot (``_UNANSWERED`` before it)
        self.first: list[Any] = []
        #: slot -> the (node, answer) pairs not the same as the first, only for
        #: slots that saw one
        self.diffs: dict[int, list[tuple[str, Any]]] | None = None
        #: slot -> the deadline of a local answer that comes later
        self.timers: dict[int, asyncio.TimerHandle] | None = None

    def add(self, quorum: int, targets: tuple[str, ...], reads: CountedReads, index: int) -> int:
        slot = self._slot(quorum, len(targets))
        self.targets.append(targets)
        self.reads.append(reads)
        self.indexes.append(index)
        self.first.append(_UNANSWERED)
        return slot

    def got(self, slot: int, node_id: str, value: Any) -> None:
        left = self.left[slot] - 1
        self.left[slot] = left
        first = self.first[slot]
        if first is _UNANSWERED:
            self.first[slot] = value
        elif value is not first and not self.reads[slot].same(first, value):
            diffs = self.diffs
            if diffs is None:
                diffs = self.diffs = {}
            seen = diffs.get(slot)
            if seen is None:
                diffs[slot] = [(node_id, value)]
            else:
                seen.append((node_id, value))
        need = self.need[slot]
        if need > 0:
            need -= 1
            self.need[slot] = need
            if need == 0:
                self._tell(slot, None)
        if left == 0 and self.diffs is not None:
            self._complete(slot)

    def held_ok(self, slot: int, node_id: str, value: Any) -> None:
        self.got(slot, node_id, value)

    def expire(self, slot: int) -> None:
        """The deadline of a local answer that comes later passed."""
        if self.need[slot] > 0:
            self._fail(slot)

    def local_done(self, slot: int, node_id: str, fut: asyncio.Future[Any]) -> None:
        """This node's answer that came later (a coroutine or a future)."""
        if fut.cancelled():
            self.fail(slot, node_id, PeerUnavailable("request cancelled"))
            return
        exc = fut.exception()
        if exc is None:
            self.got(slot, node_id, fut.result())
        else:
            self.fail(slot, node_id, exc)

    def _told(self, slot: int, exc: BaseException | None) -> None:
        if self.timers is not None:
            timer = self.timers.pop(slot, None)
            if timer is not None:
                timer.cancel()
        try:
            if exc is not None:
                self.reads[slot].answered(self.indexes[slot], None, None, exc)
                return
            diffs = self.diffs.get(slot) if self.diffs is not None else None
            self.reads[slot].answered(
                self.indexes[slot], self.first[slot], list(diffs) if diffs else None, None
            )
        except Exception:  # a broken listener must not break the round
            log.exception("quorum round listener failed")

    def _last(self, slot: int) -> None:
        if self.diffs is not None:
            self._complete(slot)

    def _complete(self, slot: int) -> None:
        """Every target answered or failed: with answers that differ, tell
        ``reads.completed`` all of them (the rest said the same as the first)."""
        assert self.diffs is not None
        diffs = self.diffs.get(slot)
        if not diffs:
            return
        errors = self.errors.get(slot) if self.errors is not None else None
        first = self.first[slot]
        differ = dict(diffs)
        answers: list[tuple[str, Any]] = []
        for target in self.targets[slot]:
            if errors is not None and target in errors:
                continue
            answers.append((target, differ.get(target, first)))
        result = QuorumResult(
            self.targets[slot], _NO_HINTS, answers, dict(errors) if errors else {}, answers
        )
        try:
            self.reads[slot].completed(self.indexes[slot], result)
        except Exception:  # e.g. read repair: best effort, never breaks the round
            log.exception("quorum round on_complete callback failed")


class _Outbox:
    """The commands a batch holds for one replica: their indexes in the
    batch's entries (``picks``, in the order held), and the batch's lists
    of what each entry's answers are told (``owners``, ``slots``)."""

    __slots__ = ("address", "deadline", "owners", "picks", "slots")

    def __init__(
        self, address: str, deadline: float, owners: list[_Held], slots: list[int]
    ) -> None:
        self.address = address
        self.deadline = deadline
        self.owners = owners
        self.slots = slots
        self.picks: list[int] = []


class RoundBatch:
    """Quorum rounds started together, whose remote requests leave at :meth:`flush`:
    one request per replica (``wire.batch_frame``), see the module docstring.

    Start rounds with :meth:`Coordinator.start` passing ``batch=`` (or the
    counted forms); call :meth:`flush` once, in the same loop pass (until
    then the held requests are not sent and their rounds cannot finish). A
    batch is reusable: after a flush it is empty.

    A held command is one *entry* of the batch (its fields, flat, and what
    its answers are told), shared by every replica it goes to; each
    replica's :class:`_Outbox` holds the indexes of its entries. Replicas
    whose requests hold the same run of entries (every replica of a
    cluster whose keys all have the same replicas: the usual case) share
    one encoding of it.
    """

    __slots__ = (
        "_boxes",
        "_full",
        "_items",
        "_owners",
        "_slots",
        "_timeout",
        "coordinator",
        "namespace",
        "reads",
        "tally",
    )

    def __init__(self, coordinator: Coordinator, namespace: str) -> None:
        self.coordinator = coordinator
        self.namespace = namespace
        self._boxes: dict[str, _Outbox] = {}
        #: boxes that reached BATCH_MAX_COMMANDS, in the order they filled
        self._full: list[tuple[str, _Outbox]] = []
        #: flat: command, key, partition, payload per entry (``wire.batch_frame``)
        self._items: list[Any] = []
        #: per entry: its round, or the tally holding its slot
        self._owners: list[_Held] = []
        #: per entry: its slot in its tally (-1 for a round)
        self._slots: list[int] = []
        #: the transport's request timeout, read once per batch (-1: not yet)
        self._timeout = -1.0
        #: the counted rounds started since the last flush (made by the first)
        self.tally: _Tally | None = None
        #: the counted reads started since the last flush (made by the first)
        self.reads: _ReadTally | None = None

    def __len__(self) -> int:
        """Replicas with held requests."""
        return len(self._boxes)

    def deadline(self, timeout: float | None) -> float:
        """``timeout``, or the transport's request timeout when None."""
        if timeout is not None:
            return timeout
        t = self._timeout
        if t < 0.0:
            t = self._timeout = self.coordinator.cluster.config.transport_config.request_timeout
        return t

    def entry(
        self, owner: _Held, slot: int, command: str, key: bytes, partition: int, payload: Any
    ) -> int:
        """Hold a command (sent to replicas by :meth:`send`); its index. Its
        answers are told to ``owner`` (with ``slot``)."""
        index = len(self._owners)
        self._owners.append(owner)
        self._slots.append(slot)
        items = self._items
        items.append(command)
        items.append(key)
        items.append(partition)
        items.append(payload)
        return index

    def send(self, target: str, entry: int, deadline: float, address: str = "") -> None:
        """Send held ``entry`` to ``target`` at the flush, in its request with
        a ``deadline`` (a request carries its entries' shortest). Raises
        :class:`~peer_ring.errors.PeerRingError` when ``target``'s address
        is unknown (looked up once per batch, unless ``address`` is given)."""
        box = self._boxes.get(target)
        if box is None or len(box.picks) >= BATCH_MAX_COMMANDS:
            if box is not None:  # full: it leaves with the others at flush
                self._full.append((target, box))
                address = box.address
            elif not address:
                address = self.coordinator.cluster.address_of(target)
            box = self._boxes[target] = _Outbox(address, deadline, self._owners, self._slots)
        elif deadline < box.deadline:
            box.deadline = deadline
        box.picks.append(entry)

    def hold(
        self,
        target: str,
        address: str,
        owner: _Held,
        slot: int,
        command: str,
        key: bytes,
        partition: int,
        payload: Any,
        deadline: float,
    ) -> None:
        """:meth:`entry` and :meth:`send` of a command for one replica."""
        index = self.entry(owner, slot, command, key, partition, payload)
        self.send(target, index, deadline, address)

    def flush(self) -> None:
        """Send the held requests: one per replica and ``BATCH_MAX_COMMANDS``
        commands (a lone command as a plain service command; a request that
        would exceed the transport's ``max_frame_size`` as one request per
        command). Answers are told to each command's round or tally."""
        if not self._boxes:
            return
        boxes = self._full
        boxes.extend(self._boxes.items())
        items = self._items
        total = len(self._owners)
        self._boxes = {}
        self._full = []
        self._items = []
        self._owners = []
        self._slots = []
        self._timeout = -1.0
        self.tally = None  # the next adds count into a tally of their own
        self.reads = None
        coordinator = self.coordinator
        cluster = coordinator.cluster
        stats = coordinator.stats
        limit = cluster.config.transport_config.max_frame_size
        transport = cluster.transport
        me = cluster.id
        epoch = cluster.ring.epoch
        ns = self.namespace
        # encodings by run of entries (first * 128 + count): replicas that get
        # the same commands share one
        encoded: dict[int, Any] = {}
        for target, box in boxes:
            picks = box.picks
            count = len(picks)
            first = picks[0]
            packed: Any = None
            if count > 1:
                run = picks[count - 1] - first + 1 == count  # picks only grow
                code = first * 128 + count if run else -1
                packed = encoded.get(code) if run else None
                if packed is None:
                    if run:
                        chunk = items if count == total else items[4 * first : 4 * (first + count)]
                    else:
                        chunk = []
                        for e in picks:
                            j = 4 * e
                            chunk.extend(items[j : j + 4])
                    try:
                        packed = transport.pack(batch_frame(ns, me, epoch, chunk))
                    except PeerRingError as exc:
                        _fail_all(box, target, exc)
                        continue
                    if run:
                        encoded[code] = packed
            if packed is None or len(packed.data) > limit:
                owners = box.owners
                slots = box.slots
                for e in picks:
                    j = 4 * e
                    msg = service_frame(
                        ns, items[j], items[j + 1], items[j + 2], items[j + 3], me, epoch
                    )
                    told = partial(owners[e].held_answer, slots[e], target)
                    transport.request_callback(box.address, msg, box.deadline, told)
                stats.batch_requests += len(picks)
                continue
            transport.request_callback(
                box.address, packed, box.deadline, partial(_batch_answered, target, box)
            )
            stats.batch_requests += 1


def _fail_all(box: _Outbox, target: str, exc: BaseException) -> None:
    """Every command of ``box`` failed at ``target`` with ``exc``."""
    owners = box.owners
    slots = box.slots
    for e in box.picks:
        owners[e].held_fail(slots[e], target, exc)


def _batch_answered(target: str, box: _Outbox, value: Any, exc: BaseException | None) -> None:
    """A replica's answer to a batch: each command's answer or error to its
    round or tally."""
    picks = box.picks
    if exc is None:
        try:
            answer = parse_batch_answer(value, len(picks))
        except InvalidRequest as bad:
            exc = bad
    if exc is not None:
        _fail_all(box, target, exc)
        return
    owners = box.owners
    slots = box.slots
    for k in range(len(picks)):
        e = picks[k]
        i = 2 * k
        value = answer[i + 1]
        if answer[i] == BATCH_OK:
            owners[e].held_ok(slots[e], target, value)
        else:
            owners[e].held_fail(slots[e], target, error_from_wire(value[0], value[1]))


class Coordinator:
    """Quorum operations over a node's ring. One per node, built by the node.

    ``hints`` keeps the copies for down owners; ``transfers`` knows which
    nodes still hold a partition being handed off (dual writes).
    """

    def __init__(
        self,
        cluster: Cluster,
        handoff: HandoffConfig,
        hints: HintStore,
        transfers: TransferManager,
    ) -> None:
        self.cluster = cluster
        self.handoff = handoff
        self.hints = hints
        self.transfers = transfers
        #: ``transfers.pending.holders`` (partition -> nodes still handing it
        #: off; changed in place, never replaced): read natively per round
        self._holders = transfers.pending.holders
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the ring whose preference lists ``_table`` holds (rings are immutable)
        self._ring: Ring | None = None
        self._table: tuple[tuple[str, ...], ...] = ()
        #: ``_ring``'s partition of a key is its hash shifted right by this much
        self._shift = 64
        #: this node's id (``cluster.id``, read once it is first needed)
        self._me = ""
        #: quorum rounds started and failed (``peer_ring_quorum_*_total``)
        self.stats = QuorumStats()
        #: one round in ``sample_mask + 1`` is timed into ``latency`` (a power of
        #: two minus one; 0 times every round)
        self.sample_mask = 7
        self.latency = LatencySamples()

    @property
    def rounds(self) -> int:
        """Quorum rounds started (a counter: operations per second)."""
        return self.stats.rounds

    def metrics(self) -> dict[str, int]:
        """Quorum rounds started and failed (``Node.metrics``)."""
        return {"quorum_rounds": self.stats.rounds, "quorum_failures": self.stats.failures}

    def batch(self, namespace: str) -> RoundBatch:
        """An empty :class:`RoundBatch` for ``namespace``'s rounds."""
        return RoundBatch(self, namespace)

    def running_loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop, cheaply: ``asyncio.get_running_loop()`` costs a
        ``getpid()`` system call per call on Python 3.11; the loop is cached and
        re-read only if it stopped running."""
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _use(self, ring: Ring) -> None:
        """Keep what the hot path reads of the current ring (rings are immutable)."""
        self._ring, self._table = ring, ring.preference_lists
        self._shift = 64 - (ring.partitions.bit_length() - 1)

    def partition_for(self, key: bytes) -> int:
        """``cluster.ring.partition_for(key)`` (the top ``log2(Q)`` bits of the
        key's hash), with no call into the interpreted ring per key."""
        ring = self.cluster.ring
        if ring is not self._ring:
            self._use(ring)
        try:
            return _KEY_HASH(key) >> self._shift
        except TypeError:
            return ring.partition_for(key)  # raises the ring's error

    def targets(self, partition: int, n: int | None = None) -> tuple[str, ...]:
        """The first ``n`` nodes responsible for ``partition`` (default: the ring's N).

        ``n`` above the ring's replica count extends the preference list with
        the partition's fallback nodes, in their deterministic order.
        """
        ring = self.cluster.ring
        if ring is not self._ring:
            self._use(ring)
        table = self._table
        # a native tuple index instead of a call into the (interpreted) ring
        pref = table[partition] if 0 <= partition < len(table) else ring.preference_list(partition)
        if n is None or n == len(pref):
            return pref
        if n < len(pref):
            return pref[:n]
        return (pref + ring.fallbacks(partition))[:n]

    async def run(
        self,
        namespace: str,
        key: bytes,
        command: str,
        payload: Any,
        *,
        quorum: int,
        n: int | None = None,
        timeout: float | None = None,
        partition: int | None = None,
        on_complete: CompleteCallback | None = None,
        sloppy: bool | None = None,
        applied: bool = False,
    ) -> QuorumResult:
        """Send ``command`` to the key's ``n`` replicas; return after ``quorum`` acks.

        The awaitable form of :meth:`start` (same arguments and errors). A
        round whose quorum was met before the other replicas answered (W=1 on
        a coordinating replica completes without yielding) also waits for
        them while more than ``REPLICATION_BACKLOG`` peer requests are
        unanswered: backpressure, so a loop of such calls cannot pile up
        requests until they fail as Overloaded and leave the other replicas
        to anti-entropy.
        """
        rnd = self.start(
            namespace,
            key,
            command,
            payload,
            quorum=quorum,
            n=n,
            timeout=timeout,
            partition=partition,
            on_complete=on_complete,
            sloppy=sloppy,
            applied=applied,
        )
        assert rnd is not None  # no listener: never the solo path
        assert rnd.done is not None
        result = await rnd.done
        complete = rnd.complete
        if (
            complete is not None
            and not complete.done()
            and self.cluster.transport.in_flight() > REPLICATION_BACKLOG
        ):
            await complete
        return result

    def start(
        self,
        namespace: str,
        key: bytes,
        command: str,
        payload: Any,
        *,
        quorum: int,
        n: int | None = None,
        timeout: float | None = None,
        partition: int | None = None,
        on_complete: CompleteCallback | None = None,
        sloppy: bool | None = None,
        applied: bool = False,
        listener: RoundListener | None = None,
        batch: RoundBatch | None = None,
    ) -> Round | None:
        """Start a quorum round: everything is sent before this returns.

        With ``listener`` the outcome is told to it, called directly from the
        answer that decides it (no future, no task: the hot path of network
        surfaces); without, ``await`` the returned round's ``done`` future.
        Errors found before anything is sent (no replicas, quorum < 1, node
        stopped) raise here.

        The round fails with :class:`QuorumNotReached` when the quorum cannot
        be reached before ``timeout`` (default: the transport's request
        timeout). ``sloppy`` (default ``HandoffConfig.sloppy``, False) lets fallbacks with
        hints stand in for down owners of a write and count towards the quorum;
        strict (False) counts home replicas only and still leaves a hinted copy
        on a fallback for each down owner. Reads (the service's
        ``read_commands``) always go to home replicas. ``applied``: the
        caller already applied the command to this node's replica (a
        coordinating replica that issued the new version itself); if this node
        is a target it counts as an ack (answer ``None``) without running it
        again. ``batch``: hold the requests to home replicas in it until its
        :meth:`RoundBatch.flush` (see the module docstring).
        """
        cluster = self.cluster
        cluster.raise_if_stopped()
        if partition is None:
            partition = cluster.ring.partition_for(key)
        targets = self.targets(partition, n)
        if quorum < 1:
            raise PeerRingError("quorum must be >= 1")
        if len(targets) < quorum and len(targets) == len(cluster.ring.node_ids):
            # The whole cluster is smaller than the quorum: every node holds
            # every key, so all of them is the best quorum there is (a one-node
            # development cluster answers with R = W = 1). Full N/R/W apply as
            # soon as enough nodes have joined.
            quorum = len(targets)
        self.stats.rounds += 1
        if len(targets) < quorum or not targets:
            self.stats.failures += 1
            raise QuorumNotReached(
                quorum,
                0,
                message=(
                    f"quorum not reached: only {len(targets)} replicas exist for {quorum} required"
                ),
            )
        if sloppy is None:
            sloppy = self.handoff.sloppy
        # never mutated: replaced by _substitute's maps when needed
        hinted = _NO_HINTS
        extra = _NO_HINTS
        service = cluster.find_service(namespace)
        is_read = service is not None and command in service.read_commands
        if not is_read and self.hints.enabled and cluster.any_down:
            # Down owners of a write get a hinted copy on a live fallback. Under a
            # sloppy quorum the fallback counts towards W (Dynamo); under a strict
            # one it does not (Cassandra's hints): W counts home replicas only, so
            # R + W > N keeps meaning read-your-writes. Reads never use fallbacks.
            substituted, stand_ins = self._substitute(partition, targets)
            if sloppy:
                targets, hinted = substituted, stand_ins
            else:
                extra = stand_ins
        loop = self.running_loop()
        stats = self.stats
        started = -1.0
        if not stats.rounds & self.sample_mask:  # a sampled round: time it
            started = cluster.clock.monotonic()
            if listener is not None:
                listener = partial(self._timed_listener, listener, started)
        me = cluster.id
        if (
            listener is not None
            and len(targets) == 1
            and targets[0] == me
            and not hinted
            and not extra
            and (is_read or not self.transfers.holders_of(partition))
        ):
            # A round whose only replica is this node (a one-node cluster, N=1):
            # no Round, no dispatch -- the local answer decides it at once.
            deadline = (
                cluster.config.transport_config.request_timeout if timeout is None else timeout
            )
            return self._solo(
                namespace,
                key,
                command,
                partition,
                payload,
                applied,
                listener,
                on_complete,
                deadline,
            )
        rnd = Round(loop, targets, quorum, listener, on_complete, hinted, stats)
        if started >= 0.0 and rnd.done is not None:
            rnd.done.add_done_callback(partial(self._timed_done, started))
        deadline = cluster.config.transport_config.request_timeout if timeout is None else timeout
        # Remote requests carry their own deadlines, so the round needs a timer
        # only for local work that waits (set below): one timer less per round.
        # The message is encoded once for every replica it goes to.
        transport = cluster.transport
        local = False
        # built when something is sent on its own (a batch holds the fields)
        msg: list[Any] | None = None
        packed: Any = None
        entry = -1
        for target in targets:
            if target == me:
                local = True
                continue
            try:
                address = cluster.address_of(target)
                owner = hinted.get(target)
                if owner is None and batch is not None:
                    if entry < 0:  # one entry for every replica it goes to
                        entry = batch.entry(rnd, -1, command, key, partition, payload)
                    batch.send(target, entry, deadline, address)
                    continue
                if msg is None:
                    msg = service_frame(
                        namespace, command, key, partition, payload, me, cluster.ring.epoch
                    )
                if owner is None:
                    if packed is None:
                        packed = transport.pack(msg)
                    out = packed
                else:
                    out = hinted_frame(owner, msg)
            except PeerRingError as exc:
                rnd.fail(target, exc)
                continue
            transport.request_callback(address, out, deadline, partial(rnd.answer, target))
        if (not is_read and self.transfers.holders_of(partition)) or extra:
            if msg is None:
                msg = service_frame(
                    namespace, command, key, partition, payload, me, cluster.ring.epoch
                )
            if not is_read:
                self._dual_write(partition, targets, msg, deadline)
            if extra:
                self._extra_hints(extra, msg, deadline)
        if local:
            if applied and me not in hinted:
                rnd.ok(me, None)
            else:
                try:
                    if me in hinted:
                        result = self.hints.apply(
                            hinted[me], namespace, command, key, partition, payload, me
                        )
                    else:
                        result = cluster.handle_local(
                            namespace, command, key, partition, payload, me
                        )
                except Exception as exc:
                    rnd.fail(me, exc)
                else:
                    if is_awaitable(result):
                        task = as_future(result, loop)
                        task.add_done_callback(partial(rnd.on_done, me))
                        if not rnd.finished:
                            rnd.timer = loop.call_later(deadline, rnd.expire)
                    else:
                        rnd.ok(me, result)
        rnd.dispatched()
        return rnd

    def start_counted(
        self,
        batch: RoundBatch,
        key: bytes,
        command: str,
        payload: Any,
        quorum: int,
        listener: CountedListener,
        index: int,
        partition: int,
        timeout: float | None,
    ) -> None:
        """A write round in ``batch`` whose listener needs only its outcome:
        ``listener(index, None)`` once ``quorum`` replicas acknowledged,
        ``listener(index, error)`` once they cannot -- the outcomes of
        :meth:`start` with ``applied=True`` (this node, when a target, already
        applied the command and counts as an ack). Counted in the batch's
        :class:`_Tally`: no :class:`Round` or :class:`QuorumResult` per round;
        a sampled round is timed there too. The command is one entry of the
        batch for all its replicas.

        Rounds the tally does not cover take :meth:`start` (the same outcome,
        told through a :class:`Round`): a round with a stand-in or a hinted
        copy (some node down), a dual write (a handoff in progress), or a
        one-node round; and, raised as by :meth:`start`, a stopped node or a
        quorum no replica set can meet."""
        cluster = self.cluster
        targets = self.targets(partition)
        if (
            cluster.any_down
            or len(targets) < 2
            or not 1 <= quorum <= len(targets)
            or self._holders.get(partition)  # transfers.holders_of(partition)
        ):
            self.start(
                batch.namespace,
                key,
                command,
                payload,
                quorum=quorum,
                timeout=timeout,
                partition=partition,
                applied=True,
                listener=partial(_counted_told, listener, index),
                batch=batch,
            )
            return
        cluster.raise_if_stopped()
        stats = self.stats
        stats.rounds += 1
        deadline = batch.deadline(timeout)
        tally = batch.tally
        if tally is None:
            tally = batch.tally = _Tally(self)
        slot = tally.add(quorum, len(targets), listener, index)
        if not stats.rounds & self.sample_mask:  # a sampled round: time it
            tally.time(slot)
        me = self._me
        if not me:
            me = self._me = cluster.id
        entry = -1
        for target in targets:
            if target == me:
                tally.ok(slot)  # applied here already
                continue
            if entry < 0:
                entry = batch.entry(tally, slot, command, key, partition, payload)
            try:
                batch.send(target, entry, deadline)
            except PeerRingError as exc:
                tally.fail(slot, target, exc, True)
        tally.check(slot)

    def solo(self, partition: int, quorum: int, write: bool) -> bool:
        """Whether a round of ``partition`` would be decided by this node alone
        now -- its only target (a one-node cluster, N=1), with no stand-in,
        hinted copy or (for a ``write``) handoff copy, a ``quorum`` it meets
        alone -- and if so, count it as :meth:`start` would (a round started;
        a sampled round timed as taking no time): the caller then runs the
        command on its own replica and answers at once, with no round,
        listener or result object. False changes nothing: the caller starts
        the round as usual (which raises or fails it where it must). Raises
        :class:`~peer_ring.errors.ClosedError` once the node stopped, as
        :meth:`start` does."""
        cluster = self.cluster
        targets = self.targets(partition)
        me = self._me
        if not me:
            me = self._me = cluster.id
        if len(targets) != 1 or targets[0] != me:
            return False
        if quorum != 1 and (quorum < 1 or len(cluster.ring.node_ids) != 1):
            return False  # start raises (or fails) it
        if write and self._holders.get(partition):  # transfers.holders_of(partition)
            return False
        cluster.raise_if_stopped()
        stats = self.stats
        stats.rounds += 1
        if not stats.rounds & self.sample_mask:
            self.latency.add(cluster.clock.monotonic(), 0.0, True)
        return True

    def start_read(
        self,
        batch: RoundBatch,
        key: bytes,
        command: str,
        payload: Any,
        quorum: int,
        reads: CountedReads,
        index: int,
        partition: int,
        timeout: float | None,
    ) -> None:
        """A read round in ``batch`` counted in the batch's :class:`_ReadTally`
        (``QuorumBatch.add_read``): the outcomes of :meth:`start` with a
        read command -- home replicas only, this node's answer first (its
        remote requests are held until the flush), the same quorum, errors,
        deadline and counters -- told to ``reads`` by ``index``, with no
        :class:`Round`, :class:`QuorumResult` or answer list per read.

        A read whose quorum no replica set can meet, or whose quorum is
        below 1, takes :meth:`start` (which raises); a stopped node raises."""
        cluster = self.cluster
        cluster.raise_if_stopped()
        targets = self.targets(partition)
        count = len(targets)
        if count < quorum and count == len(cluster.ring.node_ids):
            quorum = count  # the whole cluster is smaller: see start()
        if quorum < 1 or count < quorum:
            adapter = _ReadAdapter(reads, index)
            self.start(
                batch.namespace,
                key,
                command,
                payload,
                quorum=quorum,
                timeout=timeout,
                partition=partition,
                on_complete=adapter.complete,
                listener=adapter,
                batch=batch,
            )
            return
        stats = self.stats
        stats.rounds += 1
        deadline = batch.deadline(timeout)
        tally = batch.reads
        if tally is None:
            tally = batch.reads = _ReadTally(self)
        slot = tally.add(quorum, targets, reads, index)
        if not stats.rounds & self.sample_mask:  # a sampled read: time it
            tally.time(slot)
        me = self._me
        if not me:
            me = self._me = cluster.id
        local = False
        entry = -1
        for target in targets:
            if target == me:
                local = True
                continue
            if entry < 0:
                entry = batch.entry(tally, slot, command, key, partition, payload)
            try:
                batch.send(target, entry, deadline)
            except PeerRingError as exc:
                tally.fail(slot, target, exc, True)
        if local:
            try:
                value = cluster.handle_local(batch.namespace, command, key, partition, payload, me)
            except Exception as exc:
                tally.fail(slot, me, exc, True)
            else:
                if is_awaitable(value):
                    loop = self.running_loop()
                    task = as_future(value, loop)
                    task.add_done_callback(partial(tally.local_done, slot, me))
                    if tally.need[slot] > 0:
                        if tally.timers is None:
                            tally.timers = {}
                        tally.timers[slot] = loop.call_later(deadline, tally.expire, slot)
                else:
                    tally.got(slot, me, value)
        tally.check(slot)

    def _solo(
        self,
        namespace: str,
        key: bytes,
        command: str,
        partition: int,
        payload: Any,
        applied: bool,
        listener: RoundListener,
        on_complete: CompleteCallback | None,
        deadline: float,
    ) -> Round | None:
        """The round of a command whose only target is this node: run it here and
        tell ``listener`` (then ``on_complete``) exactly as a one-target
        :class:`Round` would, without one. A local command that answers later
        (a coroutine) gets a :class:`Round` as in :meth:`start`, returned."""
        me = self.cluster.id
        if applied:
            value: Any = None
        else:
            try:
                value = self.cluster.handle_local(namespace, command, key, partition, payload, me)
            except Exception as exc:
                self.stats.failures += 1
                _tell(listener, None, QuorumNotReached(1, 0, {me: exc}))
                if on_complete is not None:
                    _complete(on_complete, QuorumResult((me,), _NO_HINTS, [], {me: exc}, []))
                return None
            if is_awaitable(value):
                loop = self.running_loop()
                rnd = Round(loop, (me,), 1, listener, on_complete, None, self.stats)
                task = as_future(value, loop)
                task.add_done_callback(partial(rnd.on_done, me))
                rnd.timer = loop.call_later(deadline, rnd.expire)
                rnd.dispatched()
                return rnd
        pair = (me, value)
        result = QuorumResult((me,), _NO_HINTS, [pair], {}, [pair])
        _tell(listener, result, None)
        if on_complete is not None:
            _complete(on_complete, result)
        return None

    def _timed_listener(
        self,
        listener: RoundListener,
        started: float,
        result: QuorumResult | None,
        exc: BaseException | None,
    ) -> None:
        now = self.cluster.clock.monotonic()
        self.latency.add(now, now - started, exc is None)
        listener(result, exc)

    def _timed_done(self, started: float, fut: asyncio.Future[QuorumResult]) -> None:
        now = self.cluster.clock.monotonic()
        ok = not fut.cancelled() and fut.exception() is None
        self.latency.add(now, now - started, ok)

    def _substitute(
        self, partition: int, targets: tuple[str, ...]
    ) -> tuple[tuple[str, ...], dict[str, str]]:
        """Replace down owners by the next live fallbacks (sloppy quorum)."""
        cluster = self.cluster
        if not cluster.any_down or all(cluster.is_up(t) for t in targets):
            return targets, {}
        used = set(targets)
        spare = (f for f in cluster.ring.fallbacks(partition) if f not in used and cluster.is_up(f))
        out: list[str] = []
        hinted: dict[str, str] = {}
        for target in targets:
            if cluster.is_up(target):
                out.append(target)
                continue
            fallback = next(spare, None)
            if fallback is None:
                out.append(target)  # nobody to stand in: try the owner anyway
            else:
                hinted[fallback] = target
                out.append(fallback)
        return tuple(out), hinted

    def _extra_hints(self, extra: dict[str, str], msg: list[Any], deadline: float) -> None:
        """Send hinted copies for down owners, outside the quorum (strict mode)."""
        cluster = self.cluster
        for fallback, owner in extra.items():
            if fallback == cluster.id:
                try:
                    result = self.hints.apply(owner, *msg[1:7])
                except Exception:  # best effort: anti-entropy catches what hints miss
                    continue
                if is_awaitable(result):
                    as_future(result, asyncio.get_running_loop()).add_done_callback(_consume)
                continue
            try:
                address = cluster.address_of(fallback)
            except PeerRingError:
                continue
            out = hinted_frame(owner, msg)
            cluster.transport.request_future(address, out, deadline).add_done_callback(_consume)

    def _dual_write(
        self, partition: int, targets: tuple[str, ...], msg: list[Any], deadline: float
    ) -> None:
        """Also send the command to nodes still handing the partition off (no quorum)."""
        cluster = self.cluster
        holders = self.transfers.holders_of(partition)
        if not holders:
            return
        dual = dual_frame(msg)
        for holder in list(holders):
            if holder in targets or not cluster.is_up(holder):
                continue
            if holder == cluster.id:
                if not cluster.holds(msg[1], partition):
                    self.transfers.holder_done(partition, holder)
                    continue
                try:
                    result = cluster.handle_local(*msg[1:7])
                except Exception:  # best effort: the owners are authoritative
                    continue
                if is_awaitable(result):
                    as_future(result, asyncio.get_running_loop()).add_done_callback(_consume)
                continue
            try:
                address = cluster.address_of(holder)
            except PeerRingError:
                continue
            fut = cluster.transport.request_future(address, dual, deadline)
            fut.add_done_callback(partial(_dual_done, self.transfers, partition, holder))


def _counted_told(
    listener: CountedListener, index: int, result: QuorumResult | None, exc: BaseException | None
) -> None:
    """A counted round that took :meth:`Coordinator.start`: its outcome as a
    counted listener hears it."""
    listener(index, exc if result is None else None)


def _tell(listener: RoundListener, result: QuorumResult | None, exc: BaseException | None) -> None:
    try:
        listener(result, exc)
    except Exception:  # a broken listener must not break the round
        log.exception("quorum round listener failed")


def _complete(on_complete: CompleteCallback, result: QuorumResult) -> None:
    try:
        on_complete(result)
    except Exception:  # e.g. read repair: best effort, never breaks the round
        log.exception("quorum round on_complete callback failed")


def _dual_done(
    transfers: TransferManager, partition: int, holder: str, fut: asyncio.Future[Any]
) -> None:
    """A former holder that answers NotOwner has finished its handoff: stop copying."""
    if fut.cancelled():
        return
    if isinstance(fut.exception(), NotOwner):
        transfers.holder_done(partition, holder)


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
