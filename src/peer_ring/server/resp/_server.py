"""The RESP server: connections, pipelining, backpressure, dispatch.

Each client connection is an :class:`asyncio.Protocol` with one worker task.
``data_received`` only parses (no awaiting, no replies); complete requests go
to a queue that the worker executes strictly in order, appending each encoded
reply to a list that is written with *one* ``transport.write`` when the queue
runs dry -- a pipeline of 100 GETs arriving in one read costs one syscall to
answer.

Fast lane: a lone ``GET key`` or ``SET key value`` arriving while the worker
is idle (the shape of every request of a non-pipelined client) is started
from ``data_received`` through the store's callback API
(:class:`~peer_ring.apps.kv.api.KVCallbacks`), and its reply is written from
the callback that completes it: no task wake-up, future or coroutine chain
per request. Requests arriving meanwhile queue for the worker, which is woken
only once the fast request has answered, so order is kept.

Invariants:

* Replies leave in request order; a request starts only after the previous
  one on the same connection finished (Redis semantics).
* Memory per connection is bounded: the parser's own limits bound a partial
  request; complete requests waiting for execution are bounded by
  ``max_pipeline_bytes`` (reading pauses above it); unwritten replies by
  ``write_buffer_high`` (execution pauses above it until the client reads).
* A protocol error answers ``-ERR Protocol error: ...`` after the replies to
  the requests before it, then closes that connection only. An exception in
  a handler becomes an error reply; nothing a client sends stops the server.
* A client that disconnects mid-request loses only that request; a command
  already executing runs to completion (its reply is dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import ssl
from collections import deque
from typing import Any, cast

from peer_ring.apps.kv.api import KVApi, KVCallbacks
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
from peer_ring.server.resp._reply import NIL2, NIL3, error
from peer_ring.server.resp._table import ALL_SPECS, COMMANDS, CommandError, CommandSpec, lookup

__all__ = ["RespConnection", "RespServer", "RespStats"]

log = logging.getLogger("peer_ring.server.resp")

_QUEUED = b"+QUEUED\r\n"
_OK = b"+OK\r\n"
#: Commands that run immediately even inside MULTI.
_MULTI_CONTROL = frozenset({"exec", "discard", "multi", "watch", "unwatch", "quit", "reset"})


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
        self.calls = [0] * len(ALL_SPECS)  #: per command, by CommandSpec.index

    def per_command(self) -> dict[str, int]:
        """Calls per top-level command name (only those called at least once)."""
        return {spec.name: n for spec, n in zip(ALL_SPECS, self.calls, strict=True) if n}

    def reset(self) -> None:
        """Zero every counter (CONFIG RESETSTAT)."""
        self.__init__()  # type: ignore[misc]


#: what a connection holds when no fast-lane request is in flight (never mutated)
_NO_ARGS: list[bytes] = []


class RespServer:
    """Serves a :class:`~peer_ring.apps.kv.api.KVApi` over RESP2/RESP3.

    ``port=0`` binds an ephemeral port; read :attr:`port` after
    :meth:`start`. ``clock`` gives TTL arithmetic (``time()``) and uptime
    (``monotonic()``); it must be the clock the KV store uses.
    """

    def __init__(
        self,
        kv: KVApi,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        config: RespConfig | None = None,
        clock: Clock | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.kv = kv
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
        #: the store's callback API, for the fast lane (None: worker only)
        self.fast: KVCallbacks | None = kv if isinstance(kv, KVCallbacks) else None
        #: users and their permissions (_acl.py)
        self.acl = Acl.from_config(self.config)
        #: idle, slow-request and output-buffer limits (_limits.py)
        self.watchdog = Watchdog(self)
        self.get_spec = COMMANDS.get(b"get")
        self.set_spec = COMMANDS.get(b"set")
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
    MULTI or None).
    """

    def __init__(self, server: RespServer) -> None:
        self.server = server
        self.kv = server.kv
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
        self.queue: deque[list[bytes] | RespProtocolError] = deque()
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
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._queued_bytes = 0
        self._max_pipeline_bytes = cfg.max_pipeline_bytes
        self._busy = False  # a fast-lane request is in flight
        self._held: list[bytes] = _NO_ARGS  # its arguments
        self._fast = server.fast
        #: watchdog ticks of the last input and of the last request boundary
        self.input_tick = self.progress_tick = server.watchdog.tick

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
            self.queue.extend(exc.parsed)
            self.queue.append(exc)
            self._pause_reading()
            if not self._busy:  # else the fast-lane reply wakes the worker, in order
                self._wake()
            return
        if requests:
            self.progress_tick = tick
            waiter = self._waiter
            idle = waiter is not None and not waiter.done() and not self._busy
            if (
                idle
                and len(requests) == 1
                and self._fast is not None
                and self._start_fast(requests[0])
            ):
                return
            self.queue.extend(requests)
            self._queued_bytes += len(data)
            if self._queued_bytes > self._max_pipeline_bytes:
                self._pause_reading()
            if idle:
                assert waiter is not None
                waiter.set_result(None)

    def eof_received(self) -> bool | None:
        return None  # close the transport (we do not support half-closed clients)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.server.connections.pop(self.id, None)
        self._wake()
        if self._write_paused is not None and not self._write_paused.done():
            self._write_paused.set_result(None)

    def running(self) -> bool:
        """A command of this client executes (waiting for the client to read
        its replies does not count: the watchdog may close such a client)."""
        paused = self._write_paused
        return self._busy or (self._waiter is None and (paused is None or paused.done()))

    def pause_writing(self) -> None:
        if self._write_paused is None or self._write_paused.done():
            self._write_paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._write_paused is not None and not self._write_paused.done():
            self._write_paused.set_result(None)

    # -- fast lane (see the module docstring) ------------------------------

    def _start_fast(self, args: list[bytes] | RespProtocolError) -> bool:
        """Start a lone GET / plain SET through the callback API; False if not one."""
        if args.__class__ is not list or not self.authenticated or self.multi is not None:
            return False
        assert isinstance(args, list)
        server = self.server
        spec = COMMANDS.get(args[0])
        n = len(args)
        if spec is server.get_spec and n == 2:
            is_get = True
        elif spec is server.set_spec and n == 3:
            is_get = False
        else:
            return False
        assert spec is not None
        if self._write_paused is not None and not self._write_paused.done():
            return False
        fast = self._fast
        assert fast is not None
        stats = server.stats
        stats.commands_processed += 1
        stats.calls[spec.index] += 1
        self.last_command = spec.name
        self._busy = True
        # one request in flight per connection (_busy): its arguments wait
        # here, so the completion callback is a plain bound method
        self._held = args
        if is_get:
            fast.start_get(args[1], self._got)
        else:
            fast.start_put(args[1], args[2], self._put)
        return True

    def _got(self, value: bytes | None, exc: BaseException | None) -> None:
        if exc is not None:
            reply = self._failed(exc, self._held)
        elif value is None:
            reply = self.nil
        else:
            reply = b"$%d\r\n%b\r\n" % (len(value), value)
        self._fast_reply(reply)

    def _put(self, _: None, exc: BaseException | None) -> None:
        self._fast_reply(_OK if exc is None else self._failed(exc, self._held))

    def _fast_reply(self, reply: bytes) -> None:
        self._busy = False
        self._held = _NO_ARGS  # do not keep a large value alive
        transport = self.transport
        if not self._lost and transport is not None and not transport.is_closing():
            transport.write(reply)
        if self.queue or self.quit:
            self._wake()

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
        self.queue.clear()
        self._wake()

    def abort_if_open(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def _run(self) -> None:
        queue = self.queue
        transport = self.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        out: list[bytes] = []
        stats = self.server.stats
        calls = stats.calls
        commands_get = COMMANDS.get
        try:
            while True:
                while queue:
                    item = queue.popleft()
                    if item.__class__ is list:
                        # Fast path (inlined dispatch): a known command with the
                        # right arity on an authenticated connection outside MULTI.
                        spec = commands_get(item[0])
                        n = len(item)
                        if (
                            spec is not None
                            and (n == spec.arity or (spec.arity < 0 and n >= -spec.arity))
                            and not spec.subcommands
                            and self.authenticated
                            and self.multi is None
                        ):
                            stats.commands_processed += 1
                            calls[spec.index] += 1
                            self.last_command = spec.name
                            try:
                                out.append(await spec.handler(self, item))
                            except Exception as exc:
                                out.append(self._failed(exc, item))
                        else:
                            out.append(await self.dispatch(item))
                    else:
                        stats.protocol_errors += 1
                        stats.error_replies += 1
                        out.append(error(f"ERR Protocol error: {item}"))
                        self.quit = True
                    if self.quit:
                        queue.clear()
                        break
                if out and not self._lost:
                    transport.write(out[0] if len(out) == 1 else b"".join(out))
                out.clear()
                if self.quit or self._lost:
                    while self._busy and not self._lost:  # let a fast-lane reply go out
                        self._waiter = loop.create_future()
                        await self._waiter
                        self._waiter = None
                    break
                self._queued_bytes = 0
                if self._write_paused is not None:
                    await self._write_paused
                    self._write_paused = None
                    continue
                if self._reading_paused:
                    self._reading_paused = False
                    transport.resume_reading()
                if not queue:
                    self._waiter = loop.create_future()
                    await self._waiter
                    self._waiter = None
        finally:
            if not transport.is_closing():
                transport.close()

    async def dispatch(self, args: list[bytes]) -> bytes:
        """Execute one request and return its encoded reply (never raises)."""
        server = self.server
        stats = server.stats
        stats.commands_processed += 1
        spec = lookup(args[0])
        try:
            if spec is None:
                raise CommandError(_unknown_command(args))
            stats.calls[spec.index] += 1
            if not self.authenticated and not spec.no_auth and self.perms is None:
                raise CommandError("NOAUTH Authentication required.")
            n = len(args)
            arity = spec.arity
            if (arity > 0 and n != arity) or n < -arity:
                raise CommandError(f"ERR wrong number of arguments for '{spec.name}' command")
            if spec.subcommands:
                spec = _subcommand(spec, args)
            if self.perms is not None:
                Acl.check(self.user, self.perms, spec)
            if self.multi is not None and spec.name not in _MULTI_CONTROL:
                if "no_multi" in spec.flags:
                    raise CommandError("ERR Command not allowed inside a transaction")
                self.multi.append(args)
                return _QUEUED
            self.last_command = spec.name
            return await spec.handler(self, args)
        except CommandError as exc:
            stats.error_replies += 1
            if self.multi is not None and (spec is None or spec.name not in _MULTI_CONTROL):
                self.multi_dirty = True  # a request failed to queue: EXEC will abort
            return error(exc.message)
        except Exception as exc:
            return self._failed(exc, args)

    def _failed(self, exc: BaseException, args: list[bytes]) -> bytes:
        """The error reply for an exception a handler raised."""
        self.server.stats.error_replies += 1
        if isinstance(exc, CommandError):
            return error(exc.message)
        if not isinstance(exc, PeerRingError):
            log.exception("RESP command %r failed", args[0][:64])
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
            f"cmd={self.last_command} user=default redir=-1 resp={3 if self.resp3 else 2} "
            f"lib-name={self.lib_name.decode('utf-8', 'replace')} "
            f"lib-ver={self.lib_ver.decode('utf-8', 'replace')}"
        )


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
