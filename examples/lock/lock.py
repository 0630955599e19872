"""A distributed lock with fencing tokens, built on peer-ring's public app API only.

The walk-through is ``docs/apps.md`` ("Write your own app"); the tests in
``tests/examples/test_lock.py`` run this file.

A lock is a key. Each replica keeps, per lock, ``[token, holder, expires_at]``:
``token`` is the lock's fencing token (it only grows), ``holder`` who holds it
(``None`` when free), ``expires_at`` the wall-clock instant the lease ends.

* ``acquire(name, holder, ttl)`` reads the lock from R replicas, and if it is
  free (no holder, or the lease expired) asks every replica to *claim* token
  ``t + 1``. A replica grants a claim only for a token greater than the one
  it holds, so two clients racing for the same token cannot both collect W
  grants when R + W > N and W > N / 2 (their replica sets intersect). The
  winner gets the token. A split vote (each racing claim granted by fewer
  than W replicas) grants nobody, and the partial claims keep the lock taken
  until their leases end: safety first, liveness after ``ttl``. A storage
  service that rejects writes carrying an older token than one it has seen
  is safe even against a holder that was paused past its lease (Kleppmann's
  fencing argument).
* ``release(name, holder, token)`` frees the lock at the same token.
* Data movement: replicas merge by token (higher wins; at an equal token a
  release wins), so handoff, hinted copies and anti-entropy never lower a
  token -- the framework calls ``export_partition``/``import_records``/
  ``digest`` and does the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from peer_ring.app import (
    AppContext,
    ClosedError,
    InvalidRequest,
    QuorumNotReached,
    Record,
    Request,
    Service,
    UnknownCommand,
)

#: One lock's state on a replica: [token, holder or None, expires_at].
State = list[Any]


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted lock: present ``token`` to whatever the lock protects."""

    name: bytes
    holder: str
    token: int
    expires_at: float


class LockService(Service):
    """Replica side (``handle`` and the data hooks) and client side in one class."""

    namespace = "lock"
    read_commands = frozenset({"read"})

    def __init__(self) -> None:
        self._parts: dict[int, dict[bytes, State]] = {}
        self._app: AppContext | None = None

    def attach(self, app: AppContext) -> None:
        self._app = app

    @property
    def app(self) -> AppContext:
        if self._app is None:
            raise ClosedError("LockService is not registered on a node")
        return self._app

    # -- replica side -----------------------------------------------------------
    def handle(self, request: Request) -> Any:
        part = self._parts.setdefault(request.partition, {})
        state = part.get(request.key)
        if request.command == "read":
            return state
        if request.command == "claim":  # payload: [token, holder, expires_at]
            token, holder, expires_at = _state(request.payload)
            if state is not None and token <= state[0]:
                return False  # a claim for this token (or a later one) was granted here
            part[request.key] = [token, holder, expires_at]
            return True
        if request.command == "release":  # payload: [token, holder]
            token, holder = request.payload
            if state is not None and state[0] == token and state[1] == holder:
                part[request.key] = [token, None, 0.0]
                return True
            return False
        raise UnknownCommand(f"lock has no command {request.command!r}")

    def export_partition(self, partition: int) -> Iterator[Record]:
        return iter(list(self._parts.get(partition, {}).items()))

    def import_records(self, partition: int, records: Sequence[Record]) -> int:
        part = self._parts.setdefault(partition, {})
        changed = 0
        for key, incoming in records:
            merged = _merge(part.get(key), _state(incoming))
            if merged != part.get(key):
                part[key] = merged
                changed += 1
        return changed

    def digest(self, partition: int) -> dict[bytes, bytes]:
        return {
            k: hashlib.blake2b(repr(v).encode(), digest_size=8).digest()
            for k, v in self._parts.get(partition, {}).items()
        }

    def read_records(self, partition: int, keys: Iterable[bytes]) -> list[Record]:
        part = self._parts.get(partition, {})
        return [(k, part[k]) for k in keys if k in part]

    def drop_partition(self, partition: int) -> int:
        return len(self._parts.pop(partition, {}))

    def partition_size(self, partition: int) -> int:
        return len(self._parts.get(partition, {}))

    # -- client side --------------------------------------------------------------
    async def acquire(self, name: bytes, holder: str, ttl: float) -> Lease | None:
        """The lock for ``ttl`` seconds, or None when someone else holds it."""
        app = self.app
        now = app.clock.time()
        read = await app.quorum("read", name, None, quorum=app.read_quorum)
        current: State | None = None
        for _, answer in read.acks:
            if answer is not None:
                current = _merge(current, _state(answer))
        if current is not None and current[1] is not None and current[2] > now:
            return None  # held, lease still running
        token = (current[0] if current is not None else 0) + 1
        expires_at = now + ttl
        try:
            result = await app.quorum(
                "claim", name, [token, holder, expires_at], quorum=app.write_quorum
            )
        except QuorumNotReached:
            return None  # replicas unreachable: not granted
        granted = sum(1 for _, ok in result.acks if ok is True)
        if granted < app.write_quorum:
            # The round counts answers; a claim needs W *grants*. Collect the
            # late answers too before giving up on a racing claim.
            answers = await result.complete if result.complete is not None else result.acks
            granted = sum(1 for _, ok in answers if ok is True)
        if granted < app.write_quorum:
            return None  # another client claimed this token first
        return Lease(name, holder, token, expires_at)

    async def release(self, lease: Lease) -> bool:
        """Free the lock if ``lease`` still holds it; True when W replicas agreed."""
        app = self.app
        result = await app.quorum(
            "release", lease.name, [lease.token, lease.holder], quorum=app.write_quorum
        )
        return sum(1 for _, ok in result.acks if ok is True) >= app.write_quorum


def _state(raw: Any) -> State:
    """Validate a state from the wire: [token >= 0, holder or None, expires_at]."""
    if (
        not isinstance(raw, list | tuple)
        or len(raw) != 3
        or type(raw[0]) is not int
        or raw[0] < 0
        or (raw[1] is not None and type(raw[1]) is not str)
        or type(raw[2]) not in (int, float)
    ):
        raise InvalidRequest("a lock state is [token, holder or nil, expires_at]")
    return [raw[0], raw[1], float(raw[2])]


def _merge(a: State | None, b: State) -> State:
    """Join two replicas' states: the higher token wins; at an equal token a
    release (no holder) wins. Commutative, associative, idempotent."""
    if a is None or b[0] > a[0]:
        return b
    if a[0] > b[0]:
        return a
    return a if a[1] is None else b if b[1] is None else max(a, b, key=repr)
