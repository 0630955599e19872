"""A replica that misbehaves on purpose: proof that the fault checkers can fail.

A harness that has never failed proves nothing. :class:`Misbehaving` wraps
a registered service's replica side (its ``handle(Request)``) and breaks one
promise on purpose; ``peer-ring node --testing --misbehave MODE[:RATE]``
registers the KV store behind it. ``tests/fault/test_misbehaving.py`` runs
the whole fault harness against such nodes and expects each checker to catch
its bug:

* ``drop-writes`` -- a forwarded write (replica command ``coord_put``) is
  acknowledged and thrown away, and a replicated write (``merge``, ``repl``) is
  acknowledged without being applied: acknowledged writes go missing
  (:func:`~peer_ring.testing.checker.check_lost_writes`).
* ``stale-reads`` -- replica reads (``get``) are answered from a copy of the
  key taken up to ``LAG`` (1 s) earlier, a cache never invalidated by writes:
  reads miss writes acknowledged before they began
  (:func:`~peer_ring.testing.checker.check_stale_reads`).
* ``duplicate-appends`` -- a forwarded write whose value is a list
  (``"a;b;c;"``, what ``APPEND`` of the workload writes) is applied with its
  last element twice, as a replayed append would
  (:func:`~peer_ring.testing.checker.check_list_order`).

``RATE`` (default 1) is the share of eligible commands that misbehave,
drawn from a seeded random generator. The wrapper delegates every other
hook (transfer, anti-entropy, hinted handoff) to the real service untouched.
It is installed only with the explicit testing flag, by the node runner (the
``--testing`` surface of ``peer-ring node``): it sits above the service
layer, which :mod:`peer_ring.testing` (the harness, a lower layer) may not
import; it never changes the KV store's code.

Invariants: the wrapper keeps the inner service's namespace, read and
refused commands; ``attach`` and ``close`` reach the inner service once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from peer_ring.errors import ConfigError
from peer_ring.service import AppContext, Record, Request, Service

if TYPE_CHECKING:
    from peer_ring.merkle import DigestIndex

MODES: Final = ("drop-writes", "stale-reads", "duplicate-appends")

#: Seconds a ``stale-reads`` replica keeps answering from the same copy of a key.
LAG: Final = 1.0


def parse_spec(spec: str) -> tuple[str, float]:
    """``"MODE[:RATE]"`` -> (mode, rate); bad input raises :class:`ConfigError`."""
    mode, _, rate_text = spec.partition(":")
    if mode not in MODES:
        raise ConfigError(f"--misbehave mode must be one of {', '.join(MODES)}, not {mode!r}")
    try:
        rate = float(rate_text) if rate_text else 1.0
    except ValueError:
        raise ConfigError(
            f"--misbehave rate must be a number in (0, 1], not {rate_text!r}"
        ) from None
    if not 0.0 < rate <= 1.0:
        raise ConfigError(f"--misbehave rate must be in (0, 1], not {rate}")
    return mode, rate


class Misbehaving(Service):
    """``inner``'s replica side, broken on purpose in ``mode`` (see the module docstring)."""

    def __init__(
        self, inner: Service, mode: str, *, rate: float = 1.0, seed: int | None = None
    ) -> None:
        mode, _ = parse_spec(mode)
        if not 0.0 < rate <= 1.0:
            raise ConfigError(f"misbehaviour rate must be in (0, 1], not {rate}")
        self.inner = inner
        self.mode = mode
        self.rate = rate
        self.namespace = inner.namespace
        self.read_commands = inner.read_commands
        self._rng = random.Random(seed)
        self._clock: Any = None
        #: stale-reads: (key, payload) -> (when copied, the answer then); by the
        #: payload too: a quorum read (PACKED) and a probe (nil) get different forms
        self._copies: dict[tuple[bytes, Any], tuple[float, Any]] = {}
        #: how many commands misbehaved, by mode
        self.misbehaved = 0

    @property
    def fresh_refused_commands(self) -> frozenset[str]:
        return self.inner.fresh_refused_commands

    def attach(self, host: AppContext) -> None:
        """Attach the inner service to ``host`` (what ``node.register`` passes);
        only its ``clock`` is used here."""
        self._clock = host.clock
        self.inner.attach(host)

    def _now(self) -> float:
        assert self._clock is not None, "attach() first"
        now: float = self._clock.monotonic()
        return now

    def _roll(self) -> bool:
        if self.rate >= 1.0 or self._rng.random() < self.rate:
            self.misbehaved += 1
            return True
        return False

    # -- the replica side, broken -------------------------------------------------
    def handle(self, request: Request) -> Any:
        command = request.command
        mode = self.mode
        if mode == "drop-writes":
            if command == "coord_put" and self._roll():
                return _acknowledged()
            if command == "merge" and self._roll():
                return False  # "applied; nothing was there before"
            if command == "repl" and self._roll():
                return None  # "applied" (a plain write's fan-out answers nil)
        elif mode == "stale-reads" and command == "get":
            now = self._now()
            copy = self._copies.get((request.key, request.payload))
            if copy is not None and now - copy[0] < LAG:
                return copy[1]
            answer = self.inner.handle(request)
            if self._roll():
                self._copies[(request.key, request.payload)] = (now, answer)
            return answer
        elif mode == "duplicate-appends" and command == "coord_put":
            payload = request.payload
            if type(payload) is list and payload and type(payload[0]) is bytes:
                value: bytes = payload[0]
                parts = value.split(b";")
                if len(parts) > 1 and parts[-1] == b"" and parts[-2] and self._roll():
                    twice = value + parts[-2] + b";"
                    request = Request(
                        command, request.key, request.partition, [twice, *payload[1:]],
                        request.origin,
                    )  # fmt: skip
        return self.inner.handle(request)

    # -- every other hook: the real service's ---------------------------------------
    def export_partition(self, partition: int) -> Iterator[Record]:
        return self.inner.export_partition(partition)

    def import_records(self, partition: int, records: Sequence[Record]) -> int:
        return self.inner.import_records(partition, records)

    def digest(self, partition: int) -> dict[bytes, bytes]:
        return self.inner.digest(partition)

    def snapshot(self, partition: int) -> Mapping[bytes, Any]:
        return self.inner.snapshot(partition)

    async def digest_index(self, partition: int, depth: int) -> DigestIndex:
        return await self.inner.digest_index(partition, depth)

    def read_records(self, partition: int, keys: Iterable[bytes]) -> list[Record]:
        return self.inner.read_records(partition, keys)

    def drop_partition(self, partition: int) -> int:
        return self.inner.drop_partition(partition)

    def partition_size(self, partition: int) -> int:
        return self.inner.partition_size(partition)

    async def close(self) -> None:
        await self.inner.close()


def _acknowledged() -> asyncio.Future[bool]:
    """The answer of a ``coord_put`` that "succeeded" (a future, as the store answers)."""
    fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    fut.set_result(False)
    return fut
