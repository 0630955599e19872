"""What the registry backends (etcd, ZooKeeper, Kubernetes) share.

* the registration record: JSON of :meth:`Member.to_wire` plus a format
  version ``"v"``; entries that are malformed or of another major version are
  rejected with :class:`RecordError` (backends skip and count them);
* :class:`Backoff` for reconnects;
* task helpers that do not trust client libraries to honour cancellation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Mapping
from typing import Any

from peer_ring.errors import ConfigError
from peer_ring.membership.base import Member

log = logging.getLogger(__name__)

#: Major version of the registration record format shared by the registry backends.
RECORD_VERSION = 1


class RecordError(ConfigError):
    """A registry entry is malformed or from an incompatible format version."""


def encode_record(member: Member) -> bytes:
    """The registry value for ``member``: JSON of ``Member.to_wire()`` plus ``"v"``."""
    return json.dumps({"v": RECORD_VERSION, **member.to_wire()}, sort_keys=True).encode()


def decode_record(raw: bytes) -> Member:
    """Decode a registry value; raises :class:`RecordError` on anything unexpected."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"record is not JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise RecordError(f"record must be a JSON object, got {type(data).__name__}")
    version = data.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise RecordError(f"record has no integer format version 'v' (got {version!r})")
    if version != RECORD_VERSION:
        raise RecordError(f"record format version {version} is not {RECORD_VERSION}")
    try:
        return Member.from_wire(data)
    except ConfigError as exc:
        raise RecordError(str(exc)) from exc


class Backoff:
    """Capped exponential backoff with full jitter in ``[d/2, d]``."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial
        self._rng = rng or random.Random()

    def reset(self) -> None:
        self._next = self.initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self.maximum, self._next * 2)
        return delay * (0.5 + self._rng.random() / 2)


def unwrap_group(exc: BaseException) -> BaseException:
    """The first leaf of a (nested) ExceptionGroup raised by a TaskGroup, for logs."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def bounded(coro: Any, timeout: float) -> Any:
    """Await ``coro`` for at most ``timeout`` seconds without trusting it to
    honour cancellation (some client close paths swallow CancelledError):
    on timeout the task is cancelled and abandoned, and TimeoutError raised."""
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise TimeoutError(f"gave up after {timeout}s")
    return task.result()


async def cancel_and_wait(task: asyncio.Task[Any], grace: float = 1.0) -> None:
    """Cancel ``task`` and wait until it is done, cancelling again every
    ``grace`` seconds: a single cancellation can be swallowed by library code
    (or by ``asyncio.wait_for`` on Python 3.11, cpython gh-86296)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=grace)
    if not task.cancelled() and task.exception() is not None:
        log.debug("background task ended with %r", task.exception())
