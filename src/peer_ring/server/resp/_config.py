"""Configuration of the RESP server (:class:`RespConfig`)."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from peer_ring.errors import ConfigError

__all__ = ["RespConfig", "Throttler"]


class Throttler(Protocol):
    """What ``CL.THROTTLE`` needs: the rate limiter's redis-cell call
    (:meth:`peer_ring.apps.ratelimit.RateLimiter.throttle`)."""

    def throttle(
        self, key: str, max_burst: int, count: int, period: int, quantity: int = 1
    ) -> Awaitable[tuple[int, int, int, int, int]]: ...


_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RespConfig:
    """Limits and switches of :class:`peer_ring.server.resp.RespServer`.

    Sizes are bytes, durations float seconds. Defaults follow Redis 7.2 where
    Redis has the same knob (named in brackets).
    """

    #: Longest bulk string a client may send [``proto-max-bulk-len``]. The
    #: effective limit is ``min(max_bulk_len, max(kv.limits.max_value_size,
    #: kv.limits.max_key_size))``: with the KV default that is 16 MiB. A longer
    #: bulk closes the connection with ``-ERR Protocol error: invalid bulk
    #: length`` before any of its bytes are buffered.
    max_bulk_len: int = 512 * _MIB
    #: Most arguments in one request (command name included). Redis accepts up
    #: to 2^31-1; each argument costs ~40 bytes of overhead here, so the default
    #: (1 Mi arguments, ~40 MiB) is lower. More closes the connection.
    max_multibulk_len: int = 1024 * 1024
    #: Longest inline request line (bytes) [``PROTO_INLINE_MAX_SIZE``].
    max_inline_len: int = 64 * 1024
    #: Most bulk payload bytes in one request [``client-query-buffer-limit``,
    #: 1 GiB in Redis]. Bounds the memory one connection can pin with a single
    #: huge MSET. More closes the connection.
    max_request_size: int = 256 * _MIB
    #: Complete requests buffered per connection awaiting execution (bytes as
    #: received). A client pipelining faster than the store answers is paused
    #: (the socket stops being read; TCP pushes back) above this and resumed
    #: when its queue drains.
    max_pipeline_bytes: int = 4 * _MIB
    #: Write buffer high-water mark per connection (bytes). Above it the
    #: server stops executing that client's requests until the client reads.
    write_buffer_high: int = 4 * _MIB
    #: Most simultaneous client connections [``maxclients``]. One more gets
    #: ``-ERR max number of clients reached`` and is closed.
    max_clients: int = 10_000
    #: Password of the ``default`` user [``requirepass``]. ``None``: no
    #: authentication; every connection starts authenticated.
    requirepass: str | None = None
    #: A users file [``aclfile``]: ``user <name> <rules...>`` lines (see
    #: ``peer_ring.server.resp._acl``); users beyond ``default``.
    users_file: str | None = None
    #: Whether FLUSHDB/FLUSHALL are allowed. They delete every key of the
    #: *cluster*, so production deployments may want them off.
    allow_flush: bool = True
    #: Close a client after this many seconds without input while no command
    #: of it runs [``timeout``]; 0 never closes idle clients. As in Redis,
    #: clients subscribed to pub/sub or blocked in a read are never idle.
    timeout: float = 0.0
    #: Close a client whose request has been incomplete this long (a
    #: slowloris trickling bytes) -- seconds; the watchdog's tick rounds it.
    request_timeout: float = 30.0
    #: Close a client with more unread reply bytes than this
    #: [``client-output-buffer-limit normal``]; 0: no limit (the execution of
    #: its requests still pauses above ``write_buffer_high``).
    output_buffer_limit: int = 64 * _MIB
    #: Seconds between two passes of the connection watchdog (the resolution
    #: of the three limits above).
    watchdog_interval: float = 1.0
    #: How long :meth:`RespServer.close` lets in-flight commands finish
    #: before cancelling them (seconds, on the server's clock).
    shutdown_grace: float = 5.0
    #: The rate limiter ``CL.THROTTLE`` answers from (redis-cell's command);
    #: ``None``: CL.THROTTLE answers ``-ERR`` (no limiter on this node).
    throttler: Throttler | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_bulk_len",
            "max_multibulk_len",
            "max_inline_len",
            "max_request_size",
            "max_pipeline_bytes",
            "write_buffer_high",
            "max_clients",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"RespConfig.{name} must be a positive integer, got {value!r}")
        if self.timeout < 0 or self.output_buffer_limit < 0:
            raise ConfigError("RespConfig.timeout and output_buffer_limit must be >= 0")
        if not self.request_timeout > 0 or not self.watchdog_interval > 0:
            raise ConfigError("RespConfig.request_timeout and watchdog_interval must be > 0")
        if self.shutdown_grace < 0:
            raise ConfigError(f"RespConfig.shutdown_grace must be >= 0, got {self.shutdown_grace}")
        if self.requirepass is not None and not self.requirepass:
            raise ConfigError("RespConfig.requirepass must be non-empty or None")
