"""Connection timeouts and output limits of the RESP server (a watchdog).

One :class:`Watchdog` per server wakes every ``RespConfig.watchdog_interval``
seconds (on the server's clock, so tests drive it with a ManualClock) and
closes connections that:

* are **idle** -- nothing received for ``RespConfig.timeout`` seconds, no
  command running (a blocking read counts as running) or queued, and not
  subscribed to pub/sub channels [Redis ``timeout``, which exempts blocked
  and pub/sub clients too; 0 disables];
* hold a **slow request** -- a request begun but not completed for
  ``RespConfig.request_timeout`` seconds: a slowloris client trickling one
  byte at a time cannot keep a connection (and its buffers) for ever;
* exceed the **output buffer limit** -- more than
  ``RespConfig.output_buffer_limit`` reply bytes the client has not read
  [Redis ``client-output-buffer-limit normal``]; the execution of its
  requests already pauses above ``write_buffer_high``, this closes a client
  that stopped reading altogether with a huge reply pending.

The server calls :meth:`Watchdog.note_input` / :meth:`note_request` from
``data_received`` (two attribute stores: the clock is read once per tick,
not per packet). Counters land in :attr:`Watchdog.closed` and ``INFO``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sized
from typing import Any, Protocol

from peer_ring.clock import Clock
from peer_ring.server.resp._config import RespConfig

log = logging.getLogger("peer_ring.server.resp")

__all__ = ["Watchdog"]


class _Parser(Protocol):
    @property
    def buffered(self) -> int: ...


class RespConnection(Protocol):
    """What the watchdog reads of a connection (``_server.RespConnection``;
    structural, so this module does not import the server: no cycle)."""

    id: int
    addr: str
    input_tick: int
    progress_tick: int

    @property
    def transport(self) -> Any: ...

    @property
    def parser(self) -> _Parser: ...

    @property
    def queue(self) -> Sized: ...

    @property
    def subscribed(self) -> bool: ...

    def running(self) -> bool: ...


class RespServer(Protocol):
    """What the watchdog reads of its server (``_server.RespServer``)."""

    @property
    def config(self) -> RespConfig: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def connections(self) -> Mapping[int, Any]: ...


class Watchdog:
    """Closes idle, slow and non-reading connections of one server (see the module)."""

    def __init__(self, server: RespServer) -> None:
        self.server = server
        cfg = server.config
        self.interval = cfg.watchdog_interval
        self.timeout = cfg.timeout
        self.request_timeout = cfg.request_timeout
        self.output_limit = cfg.output_buffer_limit
        #: the watchdog's tick count; connections copy it when input arrives
        self.tick = 0
        self.closed = {"idle": 0, "slow_request": 0, "output_buffer": 0}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        clock = self.server.clock
        while True:
            await clock.sleep(self.interval)
            self.tick += 1
            self.check()

    def check(self) -> None:
        """One pass over the connections (the task calls it every tick)."""
        tick, interval = self.tick, self.interval
        conn: RespConnection
        for conn in list(self.server.connections.values()):
            transport = conn.transport
            if transport is None or transport.is_closing():
                continue
            if self.output_limit and transport.get_write_buffer_size() > self.output_limit:
                self._close(conn, "output_buffer")
                continue
            partial = conn.parser.buffered > 0
            if partial and (tick - conn.progress_tick) * interval >= self.request_timeout:
                self._close(conn, "slow_request")
                continue
            if (
                self.timeout
                and not partial
                and not conn.queue
                and not conn.running()
                and not conn.subscribed
                and (tick - conn.input_tick) * interval >= self.timeout
            ):
                self._close(conn, "idle")

    def _close(self, conn: RespConnection, why: str) -> None:
        self.closed[why] += 1
        log.info("closing RESP client %s (id %d): %s", conn.addr, conn.id, why.replace("_", " "))
        transport = conn.transport
        if transport is not None:
            transport.abort()  # no flush: the client is not reading, or holds nothing
