"""The memory budget of one KV replica: ``maxmemory`` and Redis's policies.

``used`` counts the bytes of every state this replica holds -- the key, the
values, and fixed estimates of the objects around them (:data:`KEY_OVERHEAD`
per key for the dict slot and the key object, :func:`state_size` for the
version tuples) -- updated on every store and removal, so it is O(1) to read
and follows the data exactly, while the overheads are estimates measured
with ``sys.getsizeof`` on CPython 3.12. It is not the process's RSS
(the interpreter, buffers and caches come on top; ``INFO memory`` reports
both), so set ``maxmemory`` below the container's limit with room to spare.

Policies (what happens when a write arrives with ``used >= maxmemory``):

* ``noeviction`` -- the write is refused with :class:`OutOfMemory`; reads,
  deletes (tombstones) and data movement (transfers, hints, anti-entropy,
  read repair: copies of writes some quorum acknowledged) are still accepted,
  so acknowledged data is never dropped; ``used`` may then exceed the limit
  and ``INFO`` shows it.
* ``allkeys-lru`` -- the least recently read or written key is evicted first
  (exact LRU order of this replica, kept only under this policy).
* ``volatile-ttl`` -- among ``samples`` sampled keys with an expiry, the one
  that expires soonest is evicted; with no such key the write is refused.

An eviction is cluster-wide, like a Redis master sending DEL to its
replicas: the evicting replica drops the key and sends ``evict`` with the
dropped state to the key's other replicas, which drop theirs unless it holds
a newer write (a write racing the eviction survives). No tombstone is left:
evicted data costs no memory at once, and a replica that missed the
``evict`` (down at the time) may hand the value back through anti-entropy --
harmless for a cache decision, and never a silent loss. Each eviction is
counted (``evicted``) where it was decided. The replica coordinating a write
evicts; the others accept the replicated write up to :data:`MERGE_SLACK`
times the limit (the coordinator's evictions free their room too), so one
write costs about one eviction cluster-wide.
Invariant: this module does no I/O and keeps no reference to the store.
"""

from __future__ import annotations

from typing import Any, Final

from peer_ring.app import ConfigError
from peer_ring.apps.kv._state import Stored

__all__ = ["KEY_OVERHEAD", "POLICIES", "MemoryBudget", "parse_size", "state_size"]

#: Eviction policies (Redis's names).
POLICIES: Final = ("noeviction", "allkeys-lru", "volatile-ttl")
#: How far above maxmemory a replica accepts replicated writes under an
#: eviction policy before it evicts on its own (see ``refuses_merge``).
MERGE_SLACK: Final = 1.1
#: Estimated bytes per stored key beyond its own bytes: dict slot, bytes header.
KEY_OVERHEAD: Final = 80
#: Compact state ``(actor, value, expires_at, stamp)``: tuple, value header, int.
_COMPACT: Final = 120
#: The 5-tuple compact state (``..., stamp, counter``): a tuple slot and the
#: counter's int more.
_COUNTER: Final = 40
#: The vector form's ``(actor, counter)`` pair: two tuple slots and the
#: counter's int (actor ids are interned, shared by every key).
_PAIR: Final = 48
#: Per ``(actor, counter, items)`` entry and per ``(value, expires_at, stamp)`` item.
_ENTRY: Final = 100
_ITEM: Final = 110


def state_size(stored: Stored) -> int:
    """Estimated bytes of one stored state (values counted exactly)."""
    # tuple[Any, ...], not Entries: the compiled build indexes the tuples
    # without unboxing each one whole (stamps, expiries) to read one field
    s: tuple[Any, ...] = stored
    if s and type(s[0]) is str:
        value = s[1]
        size = len(s)
        return (
            _COMPACT
            + (len(value) if type(value) is bytes else 0)
            + (0 if size == 4 else _COUNTER + _PAIR * ((size - 5) >> 1))
        )
    total = 56 + _ENTRY * len(s)
    for entry in s:
        e: tuple[Any, ...] = entry
        items: tuple[Any, ...] = e[2]
        total += _ITEM * len(items)
        for item in items:
            it: tuple[Any, ...] = item
            v = it[0]
            if type(v) is bytes:
                total += len(v)
    return total


_UNITS: Final = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2,
                 "g": 1000**3, "gb": 1024**3}  # fmt: skip


def parse_size(text: str) -> int:
    """A Redis-style size: ``100mb``, ``1gb``, ``512k``, ``1048576`` (bytes)."""
    raw = text.strip().lower()
    digits = raw.rstrip("kmgb")
    unit = raw[len(digits) :]
    if not digits.isdigit() or unit not in _UNITS:
        raise ConfigError(f"bad size {text!r}: use bytes or a unit (k, kb, m, mb, g, gb)")
    return int(digits) * _UNITS[unit]


class MemoryBudget:
    """Byte accounting and eviction bookkeeping of one replica (see the module)."""

    __slots__ = ("evicted", "lru", "maxmemory", "oom_rejections", "policy", "samples", "used")

    def __init__(self, maxmemory: int = 0, policy: str = "noeviction", samples: int = 5) -> None:
        if maxmemory < 0:
            raise ConfigError("maxmemory must be >= 0 bytes (0: no limit)")
        if policy not in POLICIES:
            raise ConfigError(f"maxmemory policy must be one of {', '.join(POLICIES)}")
        if samples < 1:
            raise ConfigError("maxmemory samples must be >= 1")
        self.maxmemory = maxmemory
        self.policy = policy
        self.samples = samples
        self.used = 0
        self.evicted = 0
        self.oom_rejections = 0
        #: key -> partition in recency order (oldest first); allkeys-lru only
        self.lru: dict[bytes, int] | None = {} if policy == "allkeys-lru" else None

    @property
    def full(self) -> bool:
        """A limit is set and reached."""
        return 0 < self.maxmemory <= self.used

    def refuses_merge(self) -> bool:
        """Whether a replicated write arriving now (the budget being full) must
        first make room here. Under noeviction: always (it is refused). Under an
        eviction policy only above :data:`MERGE_SLACK` times the limit: the
        coordinator of the write evicts (a replicated delete that frees room
        here too), so every replica evicting on its own would delete several
        keys per write."""
        return self.policy == "noeviction" or self.used > self.maxmemory * MERGE_SLACK

    def stored(self, key: bytes, old: Stored | None, new: Stored) -> None:
        """``key``'s state became ``new`` (``old``: the state it replaced, None
        for a new key). Incremental: when the old and the new state have the
        same shape of one value -- both compact, or both one actor's entry
        with one item (every key of an LWW store: the RESP surface's) -- only
        the two values' lengths are read, the rest of the estimate cancelling
        out; otherwise each state is sized once (:func:`state_size`)."""
        if old is None:
            self.used += len(key) + KEY_OVERHEAD + state_size(new)
            return
        o: tuple[Any, ...] = old
        n: tuple[Any, ...] = new
        if o and n:
            if type(o[0]) is str:
                if type(n[0]) is str and len(o) == len(n):  # both compact, one shape
                    ov = o[1]
                    nv = n[1]
                    self.used += (len(nv) if type(nv) is bytes else 0) - (
                        len(ov) if type(ov) is bytes else 0
                    )
                    return
            elif len(o) == 1 and len(n) == 1 and type(n[0]) is not str:
                oe: tuple[Any, ...] = o[0]
                ne: tuple[Any, ...] = n[0]
                oi: tuple[Any, ...] = oe[2]
                ni: tuple[Any, ...] = ne[2]
                if len(oi) == 1 and len(ni) == 1:  # one entry of one item each
                    oitem: tuple[Any, ...] = oi[0]
                    nitem: tuple[Any, ...] = ni[0]
                    ov = oitem[0]
                    nv = nitem[0]
                    self.used += (len(nv) if type(nv) is bytes else 0) - (
                        len(ov) if type(ov) is bytes else 0
                    )
                    return
        self.used += state_size(new) - state_size(old)

    def removed(self, key: bytes, old: Stored) -> None:
        self.used -= len(key) + KEY_OVERHEAD + state_size(old)
        if self.lru is not None:
            self.lru.pop(key, None)

    def touch(self, key: bytes, partition: int) -> None:
        """``key`` was read or written (allkeys-lru: move it to the young end)."""
        lru = self.lru
        if lru is not None:
            lru.pop(key, None)
            lru[key] = partition

    def reset(self) -> None:
        self.used = 0
        if self.lru is not None:
            self.lru.clear()

    def info(self) -> dict[str, int | str]:
        return {
            "used_memory_dataset": self.used,
            "maxmemory": self.maxmemory,
            "maxmemory_policy": self.policy,
            "evicted_keys": self.evicted,
            "oom_rejections": self.oom_rejections,
        }
