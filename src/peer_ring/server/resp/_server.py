"""The RESP server: connections, pipelining, backpressure, dispatch.

Each client connection is an :class:`asyncio.Protocol`. ``data_received``
parses and queues complete requests; one synchronous step,
:meth:`RespConnection._advance`, executes the queue strictly in order, and
every request -- lone or pipelined, GET or CLIENT LIST, inside EXEC or not
-- goes through the same dispatch, :meth:`RespConnection._execute`: look the
command up, check auth, arity and subcommand, queue it under MULTI, then
*start* it. A started command is in flight until it *completes*
(:meth:`RespConnection.complete`, which appends the reply and advances the
queue); the next request starts only then.

How a command starts is the one choice, made by its table entry
(:class:`~peer_ring.server.resp._table.CommandSpec`):

* **Callback form** (``spec.start``; GET and plain ``SET key value`` on a
  store offering :class:`~peer_ring.apps.kv.api.KVCallbacks`): started
  straight from wherever the queue advanced (``data_received``, the previous
  command's completion), completed by the store's callback. No task wake-up,
  future or coroutine chain per request -- what every non-pipelined client's
  GET/SET costs, and pipelined ones alike.
* **Coroutine handler** (``spec.handler``; everything else, and every command
  on a store without the callback API such as ``LocalKV``): handed to the
  connection's worker task, which awaits it and completes it. A worker that
  just completed a command starts the next itself, so a pipeline of
  coroutine commands costs one task wake-up, not one per request.

So callback completion is the general mechanism and the worker task is only
the executor of coroutines (and the owner of the connection's end: it closes
the transport once nothing is in flight after QUIT, a protocol error,
shutdown or a lost client). EXEC does not run its transaction itself: it
answers the array header and puts the queued requests at the head of the
line, ahead of anything received later, where they go through the same
dispatch.

Requests are queued as they were read (one list per network read), and
replies are appended to a list that is written with *one*
``transport.write`` per read's worth of requests -- a pipeline of 100 GETs
arriving in one read costs one syscall to answer, and a lone request is
answered as soon as it completes.

Invariants:

* Replies leave in request order; a request starts only after the previous
  one on the same connection finished (Redis semantics). At most one command
  per connection is in flight, so a completion is attributed to the request
  that started it without any per-request object.
* Memory per connection is bounded: the parser's own limits bound a partial
  request; complete requests waiting for execution are bounded by
  ``max_pipeline_bytes`` (reading pauses above it until the queue drains);
  unwritten replies by ``write_buffer_high`` (no request starts while the
  transport's buffer is above it, until the client reads).
* A protocol error answers ``-ERR Protocol error: ...`` after the replies to
  the requests before it, then closes that connection only. An exception in
  a handler becomes an error reply; nothing a client sends stops the server.
* A client that disconnects mid-request loses only that request; a command
  already executing runs to completion (its reply is dropped), and so does
  the rest of a transaction whose EXEC began.

Pushed frames (pub/sub messages and (un)subscribe confirmations,
:meth:`RespConnection.push`) are not replies: a frame is written at once
when nothing of the connection waits to be written and no command is
executing (or the one executing is a blocking read, which may wait long);
otherwise it is appended to the unwritten replies and leaves with them. So
frames and replies leave in the order they were produced, a frame never
lands inside a reply or ahead of the reply of a command that ran before it,
and the replies of one read still leave in one write. While a RESP2
connection is subscribed, :meth:`RespConnection._execute` refuses every
command but (P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE, PING, QUIT and RESET, and a
subscribed connection never uses callback forms (its commands run on the
worker, like blocking stream reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

from peer_ring.apps.kv.api import KVApi, KVBatchApi, KVBatches, KVCallbacks
from peer_ring.clock import Clock, SystemClock
from peer_ring.errors import (
    ClosedError,
    InvalidRequest,
    NotOwner,
    OutOfMemory,
    PeerRingError,
    QuorumNotReached,
    RingMismatch,
    TransportError,
)
from peer_ring.server.resp._acl import Acl
from peer_ring.server.resp._config import RespConfig
from peer_ring.server.resp._limits import Watchdog
from peer_ring.server.resp._parser import RespParser, RespProtocolError
from peer_ring.server.resp._reply import NIL2, NIL3, bulk, error
from peer_ring.server.resp._table import ALL_SPECS, COMMANDS, CommandError, CommandSpec, lookup

__all__ = ["RespConnection", "RespServer", "RespStats"]

log = logging.getLogger("peer_ring.server.resp")

# ``Final``: compiled, module constants are static, not a dict lookup per use
_QUEUED: Final = b"+QUEUED\r\n"
_OK: Final = b"+OK\r\n"
_COMMANDS: Final = COMMANDS
#: Commands that run immediately even inside MULTI.
_MULTI_CONTROL: Final = frozenset({"exec", "discard", "multi", "watch", "unwatch", "quit", "reset"})
#: Commands a RESP2 connection may run while subscribed (Redis's rule).
_SUBSCRIBED_OK: Final = frozenset(
    {
        "subscribe", "unsubscribe", "psubscribe", "punsubscribe", "ssubscribe", "sunsubscribe",
        "ping", "quit", "reset",
    }
)  # fmt: skip


class _Count:
    """One command's count of calls (:attr:`RespStats.calls`)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class RespStats:
    """Plain counters, read by INFO and by whoever exports metrics.

    Updated from the event loop thread only; reading them from elsewhere
    gives a possibly stale but never torn value.
    """

    __slots__ = (
        "calls",
        "commands_processed",
        "connections_received",
        "error_replies",
        "protocol_errors",
        "rejected_connections",
    )

    def __init__(self) -> None:
        self.commands_processed = 0  #: requests executed (including failed ones)
        self.error_replies = 0  #: error replies sent (protocol errors included)
        self.protocol_errors = 0  #: connections closed for malformed input
        self.connections_received = 0  #: connections accepted
        self.rejected_connections = 0  #: connections refused (max_clients)
        #: per command, by CommandSpec.index (a counter object each: compiled,
        #: counting is a native increment, not a new int object per call)
        self.calls = [_Count() for _ in ALL_SPECS]

    def per_command(self) -> dict[str, int]:
        """Calls per top-level command name (only those called at least once)."""
        return {spec.name: c.n for spec, c in zip(ALL_SPECS, self.calls, strict=True) if c.n}

    def reset(self) -> None:
        """Zero every counter (CONFIG RESETSTAT)."""
        self.__init__()  # type: ignore[misc]


#: what a connection holds when no command is in flight (never mutated)
_NO_ARGS: Final[list[bytes]] = []
#: what a connection holds when no read's requests are left (never mutated)
_NO_BATCH: Final[list[list[bytes]]] = []


class RespServer:
    """Serves a :class:`~peer_ring.apps.kv.api.KVApi` over RESP2/RESP3.

    ``port=0`` binds an ephemeral port; read :attr:`port` after
    :meth:`start`. ``clock`` gives TTL arithmetic (``time()``) and uptime
    (``monotonic()``); it must be the clock the KV store uses. ``apps`` maps
    a namespace to another service whose commands the server offers
    (``{"streams": Streams, "pubsub": PubSub}`` enables the stream and
    pub/sub commands).
    """

    def __init__(
        self,
        kv: KVApi,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        config: RespConfig | None = None,
        clock: Clock | None = None,
        apps: Mapping[str, Any] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.kv = kv
        #: other services by namespace, for their commands (``streams``, ``pubsub``)
        self.apps: dict[str, Any] = dict(apps or {})
        #: TLS for every connection (``--resp-tls``); None: plaintext
        self.ssl_context = ssl_context
        self.host = host
        self._port = port
        self.config = config if config is not None else RespConfig()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.stats = RespStats()
        self.connections: dict[int, RespConnection] = {}
        self.run_id = os.urandom(20).hex()
        self.started_at = self.clock.monotonic()
        self.closing = False
        self._server: asyncio.AbstractServer | None = None
        self._ids = itertools.count(1)
        #: the store's callback API, used by commands' callback forms (None:
        #: every command runs as a coroutine handler)
        self.callbacks: KVCallbacks | None = kv if isinstance(kv, KVCallbacks) else None
        #: the store's batch API: a pipeline's GETs and SETs are grouped through it
        #: (None: each starts on its own)
        self.batches: KVBatches | None = kv if isinstance(kv, KVBatches) else None
        #: users and their permissions (_acl.py)
        self.acl = Acl.from_config(self.config)
        #: idle, slow-request and output-buffer limits (_limits.py)
        self.watchdog = Watchdog(self)
        limits = kv.limits
        self.max_bulk = min(
            self.config.max_bulk_len, max(limits.max_value_size, limits.max_key_size)
        )

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`), else the configured one."""
        return self._port

    async def start(self) -> None:
        """Bind and start accepting connections."""
        if self._server is not None:
            raise InvalidRequest("RespServer already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: RespConnection(self), self.host, self._port, reuse_address=True,
            ssl=self.ssl_context,
        )  # fmt: skip
        sockets = cast(Any, self._server).sockets  # a list under uvloop, a tuple in typeshed
        self._port = sockets[0].getsockname()[1]
        self.started_at = self.clock.monotonic()
        self.watchdog.start()

    async def close(self) -> None:
        """Stop accepting, let in-flight commands finish (up to
        ``config.shutdown_grace``), flush replies and close every connection."""
        if self.closing:
            return
        self.closing = True
        await self.watchdog.stop()
        if self._server is not None:
            self._server.close()
        conns = list(self.connections.values())
        for conn in conns:
            conn.shutdown()
        workers = [c.worker for c in conns if c.worker is not None and not c.worker.done()]
        if workers:
            sleeper: asyncio.Future[Any] = asyncio.ensure_future(
                self.clock.sleep(self.config.shutdown_grace)
            )
            gathered: asyncio.Future[Any] = asyncio.gather(*workers, return_exceptions=True)
            await asyncio.wait({sleeper, gathered}, return_when=asyncio.FIRST_COMPLETED)
            sleeper.cancel()
            for w in workers:
                w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gathered
        for conn in conns:
            conn.abort_if_open()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> RespServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def map_error(exc: BaseException) -> str:
    """The error reply text for an exception raised by the KV store.

    ``TRYAGAIN``: the cluster could not complete the request now (quorum,
    timeout, unreachable or overloaded peers, ring change); for writes the
    outcome is unknown. ``ERR``: the request is invalid or the server closing.
    """
    if isinstance(exc, OutOfMemory):  # Redis's exact text: clients match on it
        return "OOM command not allowed when used memory > 'maxmemory'."
    if isinstance(exc, QuorumNotReached):
        return f"TRYAGAIN {exc} (a write may or may not have been applied)"
    if isinstance(exc, TransportError | NotOwner | RingMismatch):
        return f"TRYAGAIN {type(exc).__name__}: {exc}"
    if isinstance(exc, ClosedError):
        return f"ERR server is shutting down: {exc}"
    if isinstance(exc, InvalidRequest):
        return f"ERR {exc}"
    if isinstance(exc, PeerRingError):
        return f"ERR {type(exc).__name__}: {exc}"
    return f"ERR internal error: {type(exc).__name__}"


class RespConnection(asyncio.Protocol):
    """One client connection (protocol state, session state, worker task).

    Session state read by command handlers: ``resp3``, ``nil`` (the null
    reply of the negotiated protocol), ``authenticated``, ``name``,
    ``lib_name``, ``lib_ver``, ``id``, ``multi`` (queued requests inside
    MULTI or None), ``callbacks`` (the store's callback API or None),
    ``pubsub`` (the pub/sub session while subscribed, else None).

    Completion of the command in flight, for callback forms: :meth:`complete`
    with an encoded reply, or the adapters with the
    :class:`~peer_ring.apps.kv.api.KVCallbacks` ``done(value, error)``
    signature, :meth:`reply_bulk` and :meth:`reply_ok`. Exactly one of them
    is called once per started command, on the event loop, possibly before
    the starter returns.
    """

    def __init__(self, server: RespServer) -> None:
        self.server = server
        self.kv = server.kv
        self.callbacks: KVCallbacks | None = server.callbacks
        self.batches: KVBatches | None = server.batches
        #: the open group's batch (see the module docstring), else None
        self.group: KVBatchApi | None = None
        self._group_keys: set[bytes] = set()
        self._slots = 0  # replies of the group not filled in yet
        self._group_wait = False  # the group closed; the connection waits for its slots
        self._slot_at = -1  # the place of the reply the starting command reserved
        #: the completions handed out last (see slot_ok), reused once answered
        self._ok_slot = _OkSlot(self)
        self._bulk_slot = _BulkSlot(self)
        self.id = next(server._ids)
        cfg = server.config
        self.parser = RespParser(
            max_bulk_len=server.max_bulk,
            max_multibulk_len=cfg.max_multibulk_len,
            max_inline_len=cfg.max_inline_len,
            max_request_size=cfg.max_request_size,
        )
        self.transport: asyncio.Transport | None = None
        self.worker: asyncio.Task[None] | None = None
        #: the requests of the read being executed, and the next one's index
        self._batch: list[list[bytes]] = _NO_BATCH
        self._next = 0
        #: later reads' requests, and a protocol error closing the stream
        self.queue: deque[list[list[bytes]] | RespProtocolError] = deque()
        self.resp3 = False
        self.nil = NIL2
        self.authenticated = server.acl.open
        #: the AUTH user; ``perms`` its permissions when restricted (then
        #: ``authenticated`` stays False and every command is checked in dispatch)
        self.user = "default"
        self.perms: frozenset[str] | None = None
        self.name = b""
        self.lib_name = b""
        self.lib_ver = b""
        self.addr = ""
        self.laddr = ""
        self.created = server.clock.monotonic()
        self.last_command = "NULL"
        self.multi: list[list[bytes]] | None = None
        self.multi_dirty = False
        self.quit = False
        self._lost = False
        self._txn: deque[list[bytes]] = deque()  # the rest of an EXEC's transaction
        self._out: list[bytes] = []  # replies not written yet
        self._busy = False  # a command is in flight
        self._current: list[bytes] = _NO_ARGS  # its arguments
        self._pending: CommandSpec | None = None  # its coroutine handler, for the worker
        #: the command name of the last known request as sent, and its spec (_spec_of)
        self._last_name = b""
        self._last_spec: CommandSpec | None = None
        self._blocking = False  # the worker awaits a blocking command (XREAD BLOCK)
        #: the pub/sub session while subscribed (``_pubsub.Session``), else None
        self.pubsub: Any = None
        self._advancing = False  # _advance is on the stack (a synchronous completion)
        self._waiter: asyncio.Future[None] | None = None  # the idle worker waits on it
        self._writing_paused = False
        self._reading_paused = False
        self._queued_bytes = 0
        self._max_pipeline_bytes = cfg.max_pipeline_bytes
        #: watchdog ticks of the last input and of the last request boundary
        #: (a request parsed or completed: see ``complete``)
        self.input_tick = self.progress_tick = server.watchdog.tick
        self._watchdog = server.watchdog

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        server = self.server
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.addr = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.laddr = f"{sock[0]}:{sock[1]}" if sock else "?"
        if server.closing or len(server.connections) >= server.config.max_clients:
            server.stats.rejected_connections += 1
            transport.write(error("ERR max number of clients reached"))
            transport.close()
            self._lost = True
            return
        server.stats.connections_received += 1
        server.connections[self.id] = self
        high = server.config.write_buffer_high
        transport.set_write_buffer_limits(high=high, low=high // 4)
        self.worker = asyncio.get_running_loop().create_task(self._run())

    def data_received(self, data: bytes) -> None:
        if self._lost or self.quit:
            return
        tick = self.input_tick = self.server.watchdog.tick
        if not self.parser.buffered:  # a new request begins
            self.progress_tick = tick
        try:
            requests = self.parser.feed(data)
        except RespProtocolError as exc:
            if exc.parsed:
                self._receive(exc.parsed)
            self.queue.append(exc)
            self._pause_reading()
            self._advance()
            return
        if requests:
            self.progress_tick = tick
            self._receive(requests)
            self._queued_bytes += len(data)
            if self._queued_bytes > self._max_pipeline_bytes:
                self._pause_reading()
            self._advance()

    def _receive(self, requests: list[list[bytes]]) -> None:
        """Queue one read's requests (their replies leave in one write)."""
        if not self._busy and self._next >= len(self._batch) and not self.queue:
            self._batch = requests  # idle: nothing runs or waits before them
            self._next = 0
        else:
            self.queue.append(requests)

    def eof_received(self) -> bool | None:
        return None  # close the transport (we do not support half-closed clients)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.server.connections.pop(self.id, None)
        if self.pubsub is not None:
            self.pubsub.close()
        self._wake()

    def running(self) -> bool:
        """A command of this client is in flight (a blocking read included, as
        Redis does not idle-close a blocked client) or received requests wait
        to start (the unstarted rest of the read being executed, or of an
        EXEC's transaction; later reads are in ``queue``). A connection that
        only waits for its client to read its replies is not running: the
        watchdog may close it."""
        return self._busy or self._next < len(self._batch) or bool(self._txn)

    @property
    def subscribed(self) -> bool:
        """In pub/sub mode: the watchdog never idle-closes it (as Redis)."""
        return self.pubsub is not None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._advance()

    # -- the dispatch path (see the module docstring) -------------------------

    def _advance(self) -> None:
        """Start queued requests in order until one is in flight or none is left.

        Called when requests arrive, when the command in flight completes and
        when the transport drains. Re-entered from a completion that happens
        while it runs (a callback form that answers before returning), it
        returns at once and the running loop goes on. Groups (see the module
        docstring) open and close inside one call: none is left open when it
        returns.
        """
        if self._advancing:
            return
        self._advancing = True
        queue = self.queue
        txn = self._txn
        try:
            while not self._busy:
                if txn:
                    args = txn[0]
                    spec = self._spec_of(args)
                    if self._grouping(args, spec, txn[1] if len(txn) > 1 else None):
                        continue
                    txn.popleft()
                    self._execute(args, spec)
                    continue
                if self.quit or self._lost:
                    self._drop()
                batch = self._batch
                i = self._next
                if i < len(batch):
                    if self._writing_paused:
                        self._close_group()
                        break  # resume_writing advances again
                    args = batch[i]
                    spec = self._spec_of(args)
                    if self._grouping(args, spec, batch[i + 1] if i + 1 < len(batch) else None):
                        continue
                    self._next = i + 1
                    self._execute(args, spec)
                    continue
                if self._close_group():
                    continue  # the replies of the group first
                self._flush()  # the end of one read's requests
                if not queue:  # everything received has run
                    self._batch = _NO_BATCH
                    self._next = 0
                    self._queued_bytes = 0
                    if self._reading_paused and not self._writing_paused and not self.quit:
                        self._reading_paused = False
                        transport = self.transport
                        if transport is not None and not self._lost:
                            transport.resume_reading()
                    break
                if self._writing_paused:
                    break
                item = queue.popleft()
                if isinstance(item, list):
                    self._batch = item
                    self._next = 0
                else:
                    stats = self.server.stats
                    stats.protocol_errors += 1
                    stats.error_replies += 1
                    self._out.append(error(f"ERR Protocol error: {item}"))
                    self.quit = True
        finally:
            self._advancing = False
        if (self.quit or self._lost) and not self._busy:
            self._wake()  # the worker closes the connection

    def _spec_of(self, args: list[bytes]) -> CommandSpec | None:
        """The command of a request in any letter case (one dict lookup for the
        usual all-lower or all-upper spelling), None if unknown; the spelling
        the previous request used is recognised by comparing bytes (a
        pipeline repeats its commands), without hashing the name."""
        name = args[0]
        if name == self._last_name:
            return self._last_spec
        spec = _COMMANDS.get(name)
        if spec is None:
            spec = lookup(name)
            if spec is None:
                return None
        self._last_name = name
        self._last_spec = spec
        return spec

    def _grouping(
        self, args: list[bytes], spec: CommandSpec | None, following: list[bytes] | None
    ) -> bool:
        """Before ``args`` (whose command is ``spec``) runs: let it join the
        open group, open one, or close the open one. True when a group was
        closed (the caller looks again: the connection may now wait for the
        group's replies)."""
        group = self.group
        if group is None:
            # open a group only for two groupable requests in a row: a lone
            # request keeps its callback form
            if following is None or self.batches is None or self.pubsub is not None:
                return False
            if (
                spec is None
                or spec.group_arity != len(args)
                or self.multi is not None
                or _group_key(following) is None
            ):
                return False
            self.group = self.batches.batch()
            return False
        # the keys of the group's commands still waiting for their replies
        # (_execute records them: one answered at once, as a one-node store
        # answers, has nothing to wait for and costs no hashing)
        keys = self._group_keys
        if spec is not None and spec.group_arity == len(args) and not (keys and args[1] in keys):
            return False
        # another kind of request, or a key of the group waiting for its reply
        # (its second command waits for the first's reply, as without groups)
        return self._close_group()

    def _close_group(self) -> bool:
        """Flush the open group's batch; if replies are still missing the
        connection is busy until the last one arrives. False if none was open."""
        group = self.group
        if group is None:
            return False
        self.group = None
        self._group_keys.clear()
        group.flush()  # may fill slots before it returns
        if self._slots:
            self._busy = True
            self._group_wait = True
        return True

    def _slot(self) -> int:
        """Reserve the place of a grouped command's reply among the replies
        (``b""`` until it is filled: no reply is empty)."""
        out = self._out
        out.append(b"")
        self._slots += 1
        index = self._slot_at = len(out) - 1
        return index

    def slot_bulk(self) -> Callable[[bytes | None, BaseException | None], None]:
        """For a command joining the open group: its completion with a bulk
        string, nil for ``None``, or the error (:meth:`reply_bulk`'s replies).
        The one handed out before, if it was answered already, is handed out
        again: a store that answers in place (one node) costs no object per
        command."""
        slot = self._bulk_slot
        if slot.index >= 0:  # still waits for its answer: a new one
            slot = self._bulk_slot = _BulkSlot(self)
        slot.index = self._slot()
        return slot

    def slot_ok(self) -> Callable[[None, BaseException | None], None]:
        """For a command joining the open group: its completion with ``+OK``
        or the error (reused as :meth:`slot_bulk`'s)."""
        slot = self._ok_slot
        if slot.index >= 0:
            slot = self._ok_slot = _OkSlot(self)
        slot.index = self._slot()
        return slot

    def _fill(self, index: int, reply: bytes) -> None:
        self._out[index] = reply
        self._slots -= 1
        if not self._slots and self._group_wait:
            self._group_wait = False
            self._busy = False
            self.progress_tick = self._watchdog.tick
            self._advance()

    def _execute(self, args: list[bytes], spec: CommandSpec | None) -> None:
        """Dispatch one request (``spec``: its command, looked up by
        :func:`_spec_of`, None if unknown): the reply is appended now
        (errors, QUEUED) or when the started command completes."""
        stats = self.server.stats
        stats.commands_processed += 1
        try:
            if spec is None:
                raise CommandError(_unknown_command(args))
            stats.calls[spec.index].n += 1
            # restricted users (``perms`` set) stay unauthenticated for the
            # fast check and are checked per command below
            if not self.authenticated and not spec.no_auth and self.perms is None:
                raise CommandError("NOAUTH Authentication required.")
            n = len(args)
            arity = spec.arity
            if (arity > 0 and n != arity) or n < -arity:
                raise CommandError(f"ERR wrong number of arguments for '{spec.name}' command")
            if spec.subcommands:
                spec = _subcommand(spec, args)
            if self.perms is not None:  # on the resolved subcommand, before any start
                Acl.check(self.user, self.perms, spec)
            if self.pubsub is not None and not self.resp3 and spec.name not in _SUBSCRIBED_OK:
                raise CommandError(
                    f"ERR Can't execute '{spec.name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE "
                    "/ PING / QUIT / RESET are allowed in this context"
                )
            multi = self.multi
            if multi is not None and spec.name not in _MULTI_CONTROL:
                if "no_multi" in spec.flags:
                    raise CommandError("ERR Command not allowed inside a transaction")
                multi.append(args)
                self._out.append(_QUEUED)
                return
        except CommandError as exc:
            stats.error_replies += 1
            if self.multi is not None and (spec is None or spec.name not in _MULTI_CONTROL):
                self.multi_dirty = True  # a request failed to queue: EXEC will abort
            self._out.append(error(exc.message))
            return
        self.last_command = spec.name
        self._busy = True
        self._current = args
        start = spec.start
        if start is not None and self.pubsub is None:
            self._slot_at = -1
            try:
                if start(self, args):
                    if self.group is not None:  # it joined the group: its slot waits
                        self._busy = False
                        self._current = _NO_ARGS
                        at = self._slot_at
                        if at >= 0 and not self._out[at]:
                            self._group_keys.add(args[1])  # not answered yet
                    return
            except Exception as exc:  # raised before it handed its completion over
                self.complete(self._failed(exc))
                return
        self._pending = spec
        self._wake()

    def complete(self, reply: bytes) -> None:
        """Complete the command in flight with its encoded reply."""
        self._busy = False
        self._current = _NO_ARGS  # do not keep a large value alive
        # a request boundary: a partial request parsed behind this one (or
        # unread while reading was paused for it) is not the client's delay
        self.progress_tick = self._watchdog.tick
        self._out.append(reply)
        self._advance()

    def reply_bulk(self, value: bytes | None, exc: BaseException | None) -> None:
        """Complete with a bulk string, nil for ``None``, or the error."""
        if exc is not None:
            reply = self._failed(exc)
        elif value is None:
            reply = self.nil
        else:
            reply = bulk(value)
        self.complete(reply)

    def reply_ok(self, _: None, exc: BaseException | None) -> None:
        """Complete with ``+OK``, or the error."""
        self.complete(_OK if exc is None else self._failed(exc))

    def push(self, frame: bytes) -> None:
        """Send ``frame``, which is not the reply to a request (a pub/sub
        message or confirmation), keeping the order of everything produced.

        Written at once when no reply waits to be written and no command
        executes (or the one executing is a blocking read); otherwise queued
        behind the replies produced so far, to leave with them (see the
        module docstring).
        """
        transport = self.transport
        if self._lost or transport is None or transport.is_closing():
            return
        out = self._out
        if out or (self._busy and not self._blocking):
            out.append(frame)
        else:
            transport.write(frame)

    def run_next(self, requests: list[list[bytes]]) -> None:
        """Execute ``requests`` (an EXEC's transaction) right after the command
        in flight, before anything else received; they run to the end even if
        the connection quits or is lost meanwhile."""
        self._txn.extend(requests)

    def _drop(self) -> None:
        """Forget every request not started (the connection quits)."""
        self.queue.clear()
        self._batch = _NO_BATCH
        self._next = 0

    def _flush(self) -> None:
        out = self._out
        if out:
            transport = self.transport
            if not self._lost and transport is not None and not transport.is_closing():
                transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    # -- internals ---------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def shutdown(self) -> None:
        """Called by :meth:`RespServer.close`: stop reading, finish, close."""
        self._pause_reading()
        self.quit = True
        self._drop()
        self._wake()

    def abort_if_open(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def _run(self) -> None:
        """The worker: awaits coroutine handlers; closes the connection once
        it quits or is lost and nothing is in flight."""
        transport = self.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                spec = self._pending
                if spec is not None:
                    self._pending = None
                    self._blocking = "blocking" in spec.flags
                    try:
                        reply = await spec.handler(self, self._current)
                    except Exception as exc:
                        reply = self._failed(exc)
                    self._blocking = False
                    self.complete(reply)  # may hand this worker the next handler
                    continue
                if (self.quit or self._lost) and not self._busy:
                    break
                self._waiter = loop.create_future()
                await self._waiter
                self._waiter = None
        finally:
            if not transport.is_closing():
                transport.close()

    def _failed(self, exc: BaseException) -> bytes:
        """The error reply for an exception the command in flight raised."""
        self.server.stats.error_replies += 1
        if isinstance(exc, CommandError):
            return error(exc.message)
        if not isinstance(exc, PeerRingError):
            name = self._current[0][:64] if self._current else b"?"
            log.error("RESP command %r failed", name, exc_info=exc)
        return error(map_error(exc))

    def set_protocol(self, resp3: bool) -> None:
        self.resp3 = resp3
        self.nil = NIL3 if resp3 else NIL2

    def info_line(self) -> str:
        """This client's line in CLIENT LIST / CLIENT INFO."""
        now = self.server.clock.monotonic()
        age = int(now - self.created)
        name = self.name.decode("utf-8", "replace")
        flags = "x" if self.multi is not None else "N"
        return (
            f"id={self.id} addr={self.addr} laddr={self.laddr} fd=-1 name={name} age={age} "
            f"idle=0 flags={flags} db=0 sub=0 psub=0 ssub=0 multi="
            f"{-1 if self.multi is None else len(self.multi)} qbuf={self.parser.buffered} "
            f"argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r "
            f"cmd={self.last_command} user={self.user} redir=-1 resp={3 if self.resp3 else 2} "
            f"lib-name={self.lib_name.decode('utf-8', 'replace')} "
            f"lib-ver={self.lib_ver.decode('utf-8', 'replace')}"
        )


class _OkSlot:
    """The completion of a grouped command answered ``+OK`` (or its error):
    fills its reserved place among the connection's replies, ``index`` (-1
    once answered: the connection may hand it out again). A native object
    where a bound method and a ``partial`` were two, and only while the
    answer is awaited."""

    __slots__ = ("conn", "index")

    def __init__(self, conn: RespConnection) -> None:
        self.conn = conn
        self.index = -1

    def __call__(self, _: None, exc: BaseException | None) -> None:
        conn = self.conn
        index = self.index
        self.index = -1
        conn._fill(index, _OK if exc is None else conn._failed(exc))


class _BulkSlot:
    """The completion of a grouped command answered with a bulk string, nil
    for ``None``, or its error (:meth:`RespConnection.reply_bulk`'s replies)."""

    __slots__ = ("conn", "index")

    def __init__(self, conn: RespConnection) -> None:
        self.conn = conn
        self.index = -1  # as _OkSlot's

    def __call__(self, value: bytes | None, exc: BaseException | None) -> None:
        conn = self.conn
        index = self.index
        self.index = -1
        if exc is not None:
            reply = conn._failed(exc)
        elif value is None:
            reply = conn.nil
        else:
            reply = bulk(value)
        conn._fill(index, reply)


def _group_key(args: list[bytes]) -> bytes | None:
    """The key of a request that may join a group (its command's
    ``group_arity`` matches), else None."""
    spec = _COMMANDS.get(args[0])
    if spec is None or spec.group_arity != len(args):
        return None
    return args[1]


def _subcommand(spec: CommandSpec, args: list[bytes]) -> CommandSpec:
    sub = spec.subcommands.get(args[1])
    if sub is None:
        sub = spec.subcommands.get(args[1].lower())
    if sub is None:
        name = args[1].decode("utf-8", "replace")[:128]
        raise CommandError(f"ERR unknown subcommand '{name}'. Try {spec.name.upper()} HELP.")
    n = len(args)
    if (sub.arity > 0 and n != sub.arity) or n < -sub.arity:
        raise CommandError(f"ERR wrong number of arguments for '{sub.name}' command")
    return sub


def _unknown_command(args: list[bytes]) -> str:
    rest = ""
    for arg in args[1:]:
        if len(rest) >= 128:
            break
        rest += "'" + arg.decode("utf-8", "replace")[: 128 - len(rest)] + "' "
    name = args[0].decode("utf-8", "replace")[:128]
    return f"ERR unknown command '{name}', with args beginning with: {rest}"
