"""The contract between the framework and an application (the app API).

The framework owns everything distributed -- placement, routing, replication,
moving and reconciling data. An application is a :class:`Service` registered
under a namespace; it supplies command handlers and the hooks the framework
needs to move and reconcile its data (the riak_core vnode split), and it
reaches the cluster only through the :class:`AppContext` it is given in
:meth:`Service.attach`: quorum rounds, calls to chosen replicas, coverage of
all partitions, readiness, clocks, metrics and background tasks.

Applications import these names from :mod:`peer_ring.app` (or
:mod:`peer_ring`), never from this module or any other private one; an
import-linter contract in ``make lint`` enforces it for ``peer_ring.apps``.

Threading rule for every hook: called on the node's event loop, never
concurrently with another hook of the same service for the same partition.
Hooks other than :meth:`Service.handle` must not await the network; none may
block the loop. The same holds for every :class:`AppContext` method: call it
from the node's event loop; none blocks.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol

# Built once per command on the hot path: defined in a compiled module
# (``peer_ring._build.HOT_MODULES``), where building one is a native
# constructor call rather than an interpreted ``__init__``.
from peer_ring._records import QuorumResult as QuorumResult
from peer_ring._records import Request as Request
from peer_ring.clock import Clock
from peer_ring.hlc import HLC
from peer_ring.merkle import DigestIndex

#: One record of a partition as the data-movement hooks see it: key and an
#: opaque, msgpack-encodable state (value plus causal metadata).
Record = tuple[bytes, Any]


class Service(abc.ABC):
    """Base class for applications. Subclass and register with ``node.register``."""

    #: Namespace the service is registered under; unique per node.
    namespace: str = ""

    #: Commands that only read. The framework never sends them to fallback nodes.
    read_commands: frozenset[str] = frozenset()

    #: Commands a replica refuses right after it started, until it has learned
    #: the cluster and synced the partition with its co-owners (see
    #: ``peer_ring.replication.bootstrap``): reads, so that it cannot make a
    #: read quorum with data it does not have yet, and anything that derives
    #: new state from the local copy. Default: ``read_commands``.
    @property
    def fresh_refused_commands(self) -> frozenset[str]:
        return self.read_commands

    def attach(self, app: AppContext) -> None:  # noqa: B027 - optional hook
        """Called once by ``node.register``, before the node serves requests.

        Keep ``app`` (this service's handle on the cluster) to run quorum
        rounds and calls later; do no I/O here.
        """

    @abc.abstractmethod
    def handle(self, request: Request) -> Any:
        """Apply ``request`` on this replica and return the answer.

        Called from the node's event loop for every command routed to this
        node (local or remote). Return a plain value for work done at once
        (the fast path: no task is created) or a coroutine for work that must
        wait. Raise :class:`~peer_ring.errors.UnknownCommand` for commands the
        service does not know and :class:`~peer_ring.errors.InvalidRequest`
        for bad payloads; both reach the caller as those classes.
        """

    # -- data movement and reconciliation (used by transfer, hinted
    #    handoff, read repair and anti-entropy) --------------------------
    def export_partition(self, partition: int) -> Iterator[Record]:
        """Yield every record of ``partition`` held here (for transfer).

        Called from the transfer task; must not mutate the partition.
        """
        return iter(())

    def import_records(self, partition: int, records: Sequence[Record]) -> int:
        """Merge ``records`` into ``partition``; return how many changed local state.

        Must be idempotent and commutative with local writes (merge, never
        blind overwrite): records can arrive twice, late, or out of order.
        """
        return 0

    def digest(self, partition: int) -> dict[bytes, bytes]:
        """Map each key of ``partition`` to a short hash of its state (anti-entropy)."""
        return {}

    def snapshot(self, partition: int) -> Mapping[bytes, Any]:
        """A point-in-time map ``key -> token`` of ``partition``, where a key's token
        compares equal (``==``) in two snapshots iff its state did not change.

        Called by partition transfer before and after a handoff, to re-send
        the keys written meanwhile; must be cheap (no hashing of every state
        if avoidable) and must not block. Default: :meth:`digest`.
        """
        return self.digest(partition)

    async def digest_index(self, partition: int, depth: int) -> DigestIndex:
        """``digest(partition)`` with its Merkle leaves at ``depth``, up to date now.

        Called by anti-entropy (on both sides of an exchange) and by partition
        transfer (the catch-up after a handoff), from a task. May yield to the
        loop between slices of work -- other hooks and writes run meanwhile --
        but must not await the network. The caller reads the index at once
        and never mutates it. The default builds a new index from
        :meth:`digest` in one go; a service with large partitions should keep
        one :class:`~peer_ring.merkle.DigestIndex` per partition
        and refresh it in slices (see ``KVStore``).
        """
        index = DigestIndex(depth)
        index.refresh(self.digest(partition), _same)
        return index

    def read_records(self, partition: int, keys: Iterable[bytes]) -> list[Record]:
        """The records of ``keys`` held here (to repair a replica that lacks them)."""
        return []

    def drop_partition(self, partition: int) -> int:
        """Delete every record of ``partition`` (ownership moved away); return count."""
        return 0

    def partition_size(self, partition: int) -> int:
        """Number of records held for ``partition``."""
        return 0

    def status(self) -> dict[str, Any]:
        """What ``peer-ring status`` shows for this service on this node: a
        small msgpack-encodable map of figures (counts, names), never data.

        Called on the event loop for every status query; must be cheap and
        bounded in size, must not block. Default: nothing (``{}``).
        """
        return {}

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Called when the node stops; release background tasks."""


#: ``listener(result, None)`` once the quorum is reached, ``listener(None, error)``
#: once it cannot be (the callback form of a quorum round). Called exactly once,
#: on the event loop, possibly before the call that started the round returns;
#: must not raise (an exception is logged and dropped).
RoundListener = Callable[["QuorumResult | None", "BaseException | None"], None]

#: ``on_complete(result)`` once every target of a round answered or failed.
CompleteCallback = Callable[[QuorumResult], None]


@dataclass(frozen=True, slots=True)
class Metric:
    """One figure an application exports (see :meth:`AppContext.add_metrics`).

    Exported as ``peer_ring_<namespace>_<name>``; ``kind`` is ``"counter"``
    (only ever grows) or ``"gauge"``.
    """

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    value: float


class QuorumBatch(abc.ABC):
    """Quorum rounds started together that travel as one request per replica
    (:meth:`AppContext.batch`).

    :meth:`add` starts a round exactly as :meth:`AppContext.start_quorum`
    does -- its own quorum, listener, deadline, errors; local work runs at
    once -- but holds its requests to remote replicas; :meth:`flush` sends
    them, one request per replica holding every command for it, in the order
    added. The replica applies them in that order in one pass and answers
    each command on its own, so a replica that fails or is slow fails or
    delays only the rounds of its commands (each still reaches its quorum
    from the other replicas). Per-key semantics are those of separate rounds:
    this is a transport of many rounds, not a transaction.

    Call :meth:`flush` in the same loop pass as the adds (until then held
    rounds cannot finish); a listener may be called during :meth:`add` (a
    round whose quorum this node's replica meets) or :meth:`flush`. After a
    flush the batch is empty and may be reused. Call from the node's event
    loop; nothing blocks.
    """

    @abc.abstractmethod
    def add(
        self,
        command: str,
        key: bytes,
        payload: Any,
        quorum: int,
        listener: RoundListener,
        n: int | None = None,
        partition: int | None = None,
        timeout: float | None = None,
        on_complete: CompleteCallback | None = None,
        sloppy: bool | None = None,
        applied: bool = False,
    ) -> None:
        """Start a round of ``command`` on ``key``'s replicas (the arguments and
        errors of :meth:`AppContext.start_quorum`); remote requests wait for
        :meth:`flush`."""

    def add_counted(
        self,
        command: str,
        key: bytes,
        payload: Any,
        quorum: int,
        listener: Callable[[int, BaseException | None], None],
        index: int,
        partition: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Start a round whose listener needs only its outcome, of a command this
        node already applied to its own replica (``add`` with ``applied=True``:
        a coordinating replica replicating the version it issued).
        ``listener(index, None)`` once ``quorum`` replicas acknowledged,
        ``listener(index, error)`` once they cannot (the errors of :meth:`add`);
        no :class:`QuorumResult` is built, and one listener can serve every
        round of a batch, told each one's ``index``. The node's batch keeps
        one counter record for all such rounds instead of a round object
        each. The default adds it with :meth:`add`."""
        self.add(
            command,
            key,
            payload,
            quorum,
            _CountedAdapter(listener, index),
            None,
            partition,
            timeout,
            None,
            None,
            True,
        )

    def add_read(
        self,
        command: str,
        key: bytes,
        payload: Any,
        quorum: int,
        reads: CountedReads,
        index: int,
        partition: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Start a read round (a command of the service's ``read_commands``)
        whose answers are told to ``reads`` by ``index``, the read form of
        :meth:`add_counted`: ``reads.answered(index, first, others, None)``
        once ``quorum`` replicas answered (``first`` the first answer,
        ``others`` the answers so far that are not ``reads.same`` as it, None
        when all are), ``reads.answered(index, None, None, error)`` once they
        cannot (the errors of :meth:`add`); and, once every replica answered
        or failed, ``reads.completed(index, result)`` with every answer --
        only when some answer was not the same as the first (read repair:
        replicas that all agree need none). One ``reads`` can serve every
        read of a batch. The node's batch keeps one record of the batch's
        reads, the first answer of each and only the answers that differ
        from it, instead of a round object, a :class:`QuorumResult` and
        every answer per read. The default adds it with :meth:`add`."""
        adapter = _ReadAdapter(reads, index)
        self.add(command, key, payload, quorum, adapter, None, partition, timeout, adapter.complete)

    def call(
        self,
        node_id: str,
        command: str,
        key: bytes,
        payload: Any,
        done: Callable[[Any, BaseException | None], None],
        partition: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """:meth:`AppContext.call_replica` held in the batch: ``command`` on
        ``node_id``'s replica of ``key`` leaves at :meth:`flush`, in that
        replica's request with the batch's other commands for it.
        ``done(answer, None)`` or ``done(None, error)`` exactly once, with
        the errors of ``call_replica`` (:class:`~peer_ring.errors.PeerUnavailable`
        when the request certainly did not reach the replica); a failure
        fails only this call. ``done`` must not raise.

        The default raises :class:`NotImplementedError` (the caller then calls
        the replica on its own); the node's batch holds the call."""
        raise NotImplementedError("this batch does not hold single-replica calls")

    @abc.abstractmethod
    def flush(self) -> None:
        """Send every held request: one per replica."""


class CountedReads(Protocol):
    """What a batch's counted reads are told (:meth:`QuorumBatch.add_read`),
    each by the ``index`` it was added with. Called on the event loop,
    possibly during ``add_read`` or ``flush``; must not raise (an exception
    is logged and dropped)."""

    def same(self, first: Any, answer: Any) -> bool:
        """Whether ``answer`` says what ``first`` says (then only ``first`` is
        kept): e.g. ``first == answer``, or an equality across the forms of
        this node's own answer and a peer's decoded one."""

    def answered(
        self,
        index: int,
        first: Any,
        others: list[tuple[str, Any]] | None,
        exc: BaseException | None,
    ) -> None:
        """The read's quorum answered: ``first`` and the ``(node_id, answer)``
        pairs of the others not the same as it (None: all the same); or
        ``exc`` (``first`` and ``others`` None) when the quorum cannot be
        reached."""

    def completed(self, index: int, result: QuorumResult) -> None:
        """Every replica answered or failed and some answer differed from the
        first: ``result.answers`` holds every replica's answer (``first``
        for those that said the same), ``result.errors`` the failures."""


class _ReadAdapter:
    """:meth:`QuorumBatch.add_read`'s ``reads`` as a round's listener and
    ``on_complete`` (the default ``add_read``; the node's batch for rounds
    its counted reads do not cover)."""

    __slots__ = ("index", "reads")

    def __init__(self, reads: CountedReads, index: int) -> None:
        self.reads = reads
        self.index = index

    def __call__(self, result: QuorumResult | None, exc: BaseException | None) -> None:
        if result is None:
            self.reads.answered(self.index, None, None, exc)
            return
        acks = result.acks
        first = acks[0][1]
        same = self.reads.same
        others = [pair for pair in acks[1:] if not same(first, pair[1])]
        self.reads.answered(self.index, first, others or None, None)

    def complete(self, result: QuorumResult) -> None:
        answers = result.answers
        if len(answers) > 1:
            first = answers[0][1]
            same = self.reads.same
            if any(not same(first, answer) for _, answer in answers[1:]):
                self.reads.completed(self.index, result)


def future_outcome(
    done: Callable[[Any, BaseException | None], None], fut: asyncio.Future[Any]
) -> None:
    """A finished future's outcome to ``done``: ``done(result, None)`` or
    ``done(None, error)`` (a :meth:`QuorumBatch.call` answered by a future)."""
    if fut.cancelled():
        done(None, asyncio.CancelledError())
        return
    exc = fut.exception()
    done(None if exc is not None else fut.result(), exc)


class _CountedAdapter:
    """:meth:`QuorumBatch.add_counted`'s listener as a :data:`RoundListener`."""

    __slots__ = ("index", "listener")

    def __init__(self, listener: Callable[[int, BaseException | None], None], index: int) -> None:
        self.listener = listener
        self.index = index

    def __call__(self, result: QuorumResult | None, exc: BaseException | None) -> None:
        self.listener(self.index, exc if result is None else None)


class _SerialBatch(QuorumBatch):
    """The default :meth:`AppContext.batch`: each round starts on its own (for
    app contexts that do not batch, e.g. test doubles)."""

    def __init__(self, app: AppContext) -> None:
        self._app = app

    def add(
        self,
        command: str,
        key: bytes,
        payload: Any,
        quorum: int,
        listener: RoundListener,
        n: int | None = None,
        partition: int | None = None,
        timeout: float | None = None,
        on_complete: CompleteCallback | None = None,
        sloppy: bool | None = None,
        applied: bool = False,
    ) -> None:
        self._app.start_quorum(
            command,
            key,
            payload,
            quorum=quorum,
            listener=listener,
            n=n,
            partition=partition,
            timeout=timeout,
            on_complete=on_complete,
            sloppy=sloppy,
            applied=applied,
        )

    def call(
        self,
        node_id: str,
        command: str,
        key: bytes,
        payload: Any,
        done: Callable[[Any, BaseException | None], None],
        partition: int | None = None,
        timeout: float | None = None,
    ) -> None:
        try:
            fut = self._app.call_replica(
                node_id, command, key, payload, partition=partition, timeout=timeout
            )
        except Exception as exc:
            done(None, exc)
            return
        fut.add_done_callback(partial(future_outcome, done))

    def flush(self) -> None:
        pass


class AppContext(abc.ABC):
    """A service's handle on the cluster: everything an application may use.

    Given to :meth:`Service.attach` by ``node.register``; bound to that
    service's namespace (every command below goes to the same service on
    other nodes). An application keeps it and never reaches for the node.

    Concurrency rule, for every method: call it from the node's event loop
    (the thread running the node); none blocks. Callback forms
    (:meth:`start_quorum`) may call their listener before they return.
    Methods that send raise :class:`~peer_ring.errors.ClosedError` once the
    node stopped.

    Replica commands sent through this context reach
    :meth:`Service.handle` on the chosen replicas as a :class:`Request` whose
    ``origin`` is this node's id. Every command that names a partition
    carries this node's ring epoch: a replica whose ring disagrees and that
    does not own the partition answers :class:`~peer_ring.errors.RingMismatch`
    (epoch fencing), never a silent answer from the wrong place.
    """

    # -- identity, time, defaults ----------------------------------------------------
    @property
    @abc.abstractmethod
    def namespace(self) -> str:
        """The namespace the service is registered under."""

    @property
    @abc.abstractmethod
    def node_id(self) -> str:
        """This node's id."""

    @property
    @abc.abstractmethod
    def clock(self) -> Clock:
        """The node's injected clock (``time()`` wall, ``monotonic()``, ``sleep()``)."""

    @property
    @abc.abstractmethod
    def hlc(self) -> HLC:
        """The node's hybrid logical clock (on :attr:`clock`), shared by its services."""

    @property
    @abc.abstractmethod
    def replicas(self) -> int:
        """N: how many replicas each key has (the ring's replica count)."""

    @property
    @abc.abstractmethod
    def read_quorum(self) -> int:
        """The node's default R."""

    @property
    @abc.abstractmethod
    def write_quorum(self) -> int:
        """The node's default W."""

    @property
    @abc.abstractmethod
    def request_timeout(self) -> float:
        """The default deadline of one peer request, in seconds."""

    @property
    @abc.abstractmethod
    def partitions(self) -> int:
        """Q: the fixed number of partitions of the ring."""

    # -- placement and readiness ----------------------------------------------------
    @abc.abstractmethod
    def partition_for(self, key: bytes) -> int:
        """The partition of ``key`` (the same on every node)."""

    @abc.abstractmethod
    def owners(self, partition: int, n: int | None = None) -> tuple[str, ...]:
        """The first ``n`` nodes responsible for ``partition`` (default N), best first.

        ``n`` above N extends the preference list with the partition's
        fallback nodes. The tuple is shared: do not mutate it.
        """

    @abc.abstractmethod
    def is_up(self, node_id: str) -> bool:
        """Whether the local failure detector sees ``node_id`` up (self always is)."""

    @abc.abstractmethod
    def ready(self, partition: int) -> bool:
        """Whether this node's replica of ``partition`` may serve reads and
        coordinate writes: False while the node is still learning the cluster
        or syncing the partition after a (re)start."""

    def coordinates(self, partition: int, n: int | None = None) -> bool:
        """Whether this node may coordinate a round of ``partition`` now: it is
        among the partition's first ``n`` owners (default N) and its replica is
        :meth:`ready` -- ``node_id in owners(partition, n) and ready(partition)``
        in one call (the KV store asks it per write). The default is exactly
        that expression; a context may answer it faster."""
        return self.node_id in self.owners(partition, n) and self.ready(partition)

    def solo(self, partition: int, quorum: int, write: bool) -> bool:
        """Whether a round of ``partition`` (a ``write``, or a read) with
        ``quorum`` would be decided by this node's replica alone, now: this
        node is the partition's only replica (a one-node cluster, N=1), ready,
        with nothing to stand in for or to copy to. If so the round is counted
        as started, and the caller runs the command on its own replica and
        answers at once -- the outcome :meth:`start_quorum` would give, with
        no round (the KV store's hot path on one node). False changes
        nothing. Raises :class:`~peer_ring.errors.ClosedError` once the node
        stopped. The default: never (every round is started)."""
        return False

    # -- quorum rounds ---------------------------------------------------------------
    @abc.abstractmethod
    def start_quorum(
        self,
        command: str,
        key: bytes,
        payload: Any,
        quorum: int,
        listener: RoundListener,
        n: int | None = None,
        partition: int | None = None,
        timeout: float | None = None,
        on_complete: CompleteCallback | None = None,
        sloppy: bool | None = None,
        applied: bool = False,
    ) -> None:
        """Send ``command`` to the key's ``n`` replicas (default N); tell
        ``listener`` once ``quorum`` of them answered, or once they cannot.

        Everything is sent before this returns; no task or future is made
        (the hot path of network surfaces). The round fails with
        :class:`~peer_ring.errors.QuorumNotReached` when the quorum cannot be
        reached before ``timeout`` (default :attr:`request_timeout`).
        Commands in the service's ``read_commands`` go to home replicas
        only; writes to a down owner leave a hinted copy on a fallback
        (``sloppy``: which then counts towards the quorum). ``applied``:
        this node already applied the command to its own replica (a
        coordinating replica), so it counts as an ack (answer ``None``)
        without running again. ``on_complete`` runs once every replica
        answered or failed, late answers included (read repair). Errors found
        before anything is sent (quorum < 1, no replicas, node stopped)
        raise here.

        The parameters may be passed by position, in this order (the KV
        store's hot path does: keyword arguments cost a compiled callee's
        argument parsing per call); the same holds for
        :meth:`QuorumBatch.add`.
        """

    @abc.abstractmethod
    def quorum(
        self,
        command: str,
        key: bytes,
        payload: Any,
        *,
        quorum: int,
        n: int | None = None,
        partition: int | None = None,
        timeout: float | None = None,
        on_complete: CompleteCallback | None = None,
        sloppy: bool | None = None,
        applied: bool = False,
    ) -> Coroutine[Any, Any, QuorumResult]:
        """:meth:`start_quorum` awaited (``await app.quorum(...)``): the result once
        ``quorum`` replicas answered. Everything is sent when the coroutine first
        runs.

        A round whose quorum was met before the other replicas answered
        also waits for them while the transport has a large backlog of
        unanswered requests (backpressure for W=1 loops).
        """

    def batch(self) -> QuorumBatch:
        """An empty :class:`QuorumBatch`: rounds added to it leave as one request
        per replica at its ``flush()`` (a pipeline, a multi-key command, a
        batch API call of the application).

        The default starts each round on its own; the node's context batches.
        """
        return _SerialBatch(self)

    # -- chosen replicas ---------------------------------------------------------------
    @abc.abstractmethod
    def call_replica(
        self,
        node_id: str,
        command: str,
        key: bytes,
        payload: Any,
        *,
        partition: int | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Any]:
        """Run ``command`` on ``node_id``'s replica of ``key`` (locally when it is
        this node); a future of its answer.

        Epoch fenced. Fails with :class:`~peer_ring.errors.PeerUnavailable`
        when the request certainly did not reach the replica, with
        :class:`~peer_ring.errors.RequestTimeout` when its outcome is unknown.
        """

    @abc.abstractmethod
    async def call_owners(
        self,
        command: str,
        key: bytes,
        payload: Any,
        *,
        partition: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run ``command`` on every owner of ``key``'s partition; each owner's
        answer or exception, by node id (never raises for one owner's failure)."""

    # -- coverage: every partition -------------------------------------------------------
    @abc.abstractmethod
    async def coverage(
        self,
        command: str,
        make_payload: Callable[[list[int]], Any],
        *,
        partitions: Sequence[int] | None = None,
        timeout: float | None = None,
    ) -> list[Any]:
        """Run ``command`` once per partition (default: all), on one live owner of
        each, batched per node; the answers (one per node asked).

        Each replica gets ``Request(command, b"", -1, make_payload(its partitions),
        origin)`` and must answer for exactly those partitions. A replica
        that fails (unreachable, or fenced because its ring disagrees) is
        replaced by the next owner of its partitions; when no owner of a
        partition answers, :class:`~peer_ring.errors.QuorumNotReached`.
        """

    @abc.abstractmethod
    async def broadcast(
        self, command: str, payload: Any, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Run ``command`` on every member of the ring (this node included);
        each member's answer or exception, by node id."""

    # -- lifecycle and observability -------------------------------------------------------
    @abc.abstractmethod
    def spawn(self, factory: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """Run ``factory()`` as a background task for as long as the node runs.

        Started now if the node is running, else when it starts; cancelled
        when the node stops, before :meth:`Service.close`. An exception
        other than cancellation is logged with ``name``; the task is not
        restarted.
        """

    @abc.abstractmethod
    def create_future(self) -> asyncio.Future[Any]:
        """A future on the node's event loop (cheaper than ``get_running_loop()``)."""

    @abc.abstractmethod
    def add_metrics(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Export ``collect()``'s figures on the node's ``/metrics`` (called per
        scrape, on the event loop; must be cheap and must not block)."""


def _same(dig: bytes) -> bytes:
    return dig
