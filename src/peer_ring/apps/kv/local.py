"""A single-process reference implementation of :class:`KVApi`.

:class:`LocalKV` keeps every key in one ``dict``: no replication, no
quorums, no network. It exists so that the network surfaces (RESP, gRPC) and
users' own tests can run against the exact semantics of the KV contract
without a cluster.

Invariants:

* An expired key is invisible to every read (``get``, ``get_entry``,
  ``get_many``, ``scan``, ``count``, ``set_expiry``) from the instant
  ``clock.time() >= expires_at``. Its memory is reclaimed lazily when a read
  touches it, or in bulk by :meth:`LocalKV.sweep`.
* No method ever suspends (they are ``async`` only to match the contract), so
  a read-modify-write done by one task with no other ``await`` in between is
  atomic here. The replicated store gives no such guarantee; code that relies
  on it is only correct against ``LocalKV``.
* ``scan`` orders keys by a 63-bit hash and its cursor is "the next hash to
  visit": every key present for the whole iteration is returned at least
  once whatever is inserted or deleted meanwhile, as the KVApi requires
  (the guarantee of Redis's SCAN).
* Causal ``context`` values are accepted and ignored: with a single copy of
  each key there are no siblings to supersede (last writer wins).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from typing import NoReturn

import xxhash
from mypy_extensions import mypyc_attr

from peer_ring.app import Clock, InvalidRequest, SystemClock
from peer_ring.apps.kv.api import Entry, Limits

__all__ = ["LocalKV", "compile_glob", "glob_match"]

_NO_CONTEXT = b""


# A stored key: (value, expires_at or None, version). A tuple, not an object:
# it is built on every write, the hottest path of a benchmark.
_Item = tuple[bytes, float | None, int]


@mypyc_attr(allow_interpreted_subclasses=True)  # an extension point; tests subclass it
class LocalKV:
    """Dict-backed :class:`~peer_ring.apps.kv.api.KVApi`.

    ``clock`` decides expiry (``clock.time()``, wall-clock seconds);
    ``limits`` the key and value size limits (:class:`InvalidRequest` above).
    """

    def __init__(self, *, clock: Clock | None = None, limits: Limits | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._limits = limits if limits is not None else Limits()
        self._max_key = self._limits.max_key_size
        self._max_value = self._limits.max_value_size
        self._data: dict[bytes, _Item] = {}
        self._version = 0
        # Sorted (hash, key) of every stored key, rebuilt lazily for scan.
        self._order: list[tuple[int, bytes]] | None = None

    @property
    def limits(self) -> Limits:
        return self._limits

    # -- helpers -----------------------------------------------------------

    def _check_key(self, key: bytes) -> None:
        if key.__class__ is not bytes or len(key) > self._max_key:
            self._bad("key", key, self._max_key)

    def _check_value(self, value: bytes) -> None:
        if value.__class__ is not bytes or len(value) > self._max_value:
            self._bad("value", value, self._max_value)

    @staticmethod
    def _bad(what: str, data: object, limit: int) -> NoReturn:
        if not isinstance(data, bytes):
            raise InvalidRequest(f"{what} must be bytes, not {type(data).__name__}")
        raise InvalidRequest(f"{what} too large: {len(data)} bytes, the limit is {limit}")

    def _live(self, key: bytes) -> _Item | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires_at = item[1]
        if expires_at is not None and self._clock.time() >= expires_at:
            del self._data[key]
            self._order = None
            return None
        return item

    def _expiry(self, ttl: float | None, expires_at: float | None) -> float | None:
        if ttl is not None and expires_at is not None:
            raise InvalidRequest("ttl and expires_at are exclusive")
        if ttl is not None:
            if not ttl > 0:
                raise InvalidRequest(f"ttl must be > 0 seconds, got {ttl}")
            return self._clock.time() + ttl
        return expires_at

    def _store(self, key: bytes, value: bytes, expires_at: float | None) -> None:
        self._version += 1
        if self._order is not None and key not in self._data:
            self._order = None
        self._data[key] = (value, expires_at, self._version)

    # -- KVApi -------------------------------------------------------------

    async def get(self, key: bytes) -> bytes | None:
        if key.__class__ is not bytes or len(key) > self._max_key:
            self._bad("key", key, self._max_key)
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] is not None and self._clock.time() >= item[1]:
            return None if self._live(key) is None else item[0]
        return item[0]

    async def get_entry(self, key: bytes) -> Entry | None:
        self._check_key(key)
        item = self._live(key)
        if item is None:
            return None
        return Entry(item[0], item[1], item[2].to_bytes(8, "big"))

    async def put(
        self,
        key: bytes,
        value: bytes,
        *,
        ttl: float | None = None,
        expires_at: float | None = None,
        context: bytes | None = None,
    ) -> None:
        if key.__class__ is not bytes or len(key) > self._max_key:
            self._bad("key", key, self._max_key)
        if value.__class__ is not bytes or len(value) > self._max_value:
            self._bad("value", value, self._max_value)
        if ttl is not None or expires_at is not None:
            expires_at = self._expiry(ttl, expires_at)
        self._store(key, value, expires_at)

    async def delete(self, key: bytes, *, context: bytes | None = None) -> bool:
        self._check_key(key)
        existed = self._live(key) is not None
        if existed:
            del self._data[key]
            self._order = None
        return existed

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        for key in keys:
            self._check_key(key)
        out: list[bytes | None] = []
        for key in keys:
            item = self._live(key)
            out.append(None if item is None else item[0])
        return out

    async def put_many(
        self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None = None
    ) -> None:
        for key, value in items:
            self._check_key(key)
            self._check_value(value)
        expires_at = self._expiry(ttl, None)
        for key, value in items:
            self._store(key, value, expires_at)

    async def delete_many(self, keys: Sequence[bytes]) -> list[bool]:
        for key in keys:
            self._check_key(key)
        return [await self.delete(key) for key in keys]

    async def set_expiry(
        self, key: bytes, expires_at: float | None, *, context: bytes | None = None
    ) -> bool:
        self._check_key(key)
        item = self._live(key)
        if item is None:
            return False
        self._version += 1
        self._data[key] = (item[0], expires_at, self._version)
        return True

    async def scan(
        self, cursor: int, count: int, match: bytes | None = None
    ) -> tuple[int, list[bytes]]:
        if cursor < 0:
            raise InvalidRequest(f"invalid cursor {cursor}")
        if count < 1:
            raise InvalidRequest(f"count must be >= 1, got {count}")
        matcher = compile_glob(match).fullmatch if match is not None else None
        order = self._order
        if order is None:
            order = self._order = sorted((_scan_hash(k), k) for k in self._data)
        i = bisect.bisect_left(order, (cursor, b""))
        now = self._clock.time()
        keys: list[bytes] = []
        visited = 0
        n = len(order)
        while i < n:
            h, key = order[i]
            # Stop only between two different hashes, so a cursor never splits
            # a group of keys sharing a hash.
            if visited >= count and h != order[i - 1][0]:
                return h, keys
            visited += 1
            i += 1
            item = self._data.get(key)
            if item is None or (item[1] is not None and now >= item[1]):
                continue
            if matcher is None or matcher(key) is not None:
                keys.append(key)
        return 0, keys

    async def count(self) -> int:
        now = self._clock.time()
        return sum(1 for item in self._data.values() if item[1] is None or now < item[1])

    async def flush(self) -> None:
        self._data.clear()
        self._order = None

    # -- maintenance -------------------------------------------------------

    def sweep(self) -> int:
        """Delete every expired key now; return how many were reclaimed.

        Call it periodically (or from tests after advancing a ManualClock);
        it is O(number of keys) and must not be called per request.
        """
        now = self._clock.time()
        dead = [k for k, it in self._data.items() if it[1] is not None and now >= it[1]]
        for key in dead:
            del self._data[key]
        if dead:
            self._order = None
        return len(dead)

    def __len__(self) -> int:
        """Stored keys, expired-but-not-swept ones included."""
        return len(self._data)


def _scan_hash(key: bytes) -> int:
    # Hashes start at 1 so that cursor 0 always means "from the beginning".
    return (xxhash.xxh3_64_intdigest(key) >> 1) + 1


_GLOB_CACHE: dict[bytes, re.Pattern[bytes]] = {}


def compile_glob(pattern: bytes) -> re.Pattern[bytes]:
    """Compile a Redis glob pattern (KEYS, SCAN MATCH) to a regex; use ``fullmatch``.

    Redis semantics (``stringmatchlen``): ``*`` any run of bytes, ``?`` one
    byte, ``[abc]`` / ``[a-z]`` / ``[^a]`` classes, ``\\x`` a literal ``x``
    (also inside classes). An unterminated ``[`` matches a literal ``[``.
    """
    cached = _GLOB_CACHE.get(pattern)
    if cached is not None:
        return cached
    out: list[bytes] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i : i + 1]
        if c == b"*":
            while i + 1 < n and pattern[i + 1 : i + 2] == b"*":
                i += 1
            out.append(b".*")
        elif c == b"?":
            out.append(b".")
        elif c == b"\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i : i + 1]))
        elif c == b"[":
            end, cls = _glob_class(pattern, i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                out.append(cls)
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    compiled = re.compile(b"".join(out), re.DOTALL)
    if len(_GLOB_CACHE) > 256:
        _GLOB_CACHE.clear()
    _GLOB_CACHE[pattern] = compiled
    return compiled


def _glob_class(pattern: bytes, i: int) -> tuple[int, bytes]:
    """Parse a ``[...]`` class starting after ``[``; return (index of ``]``, regex)."""
    n = len(pattern)
    negate = i < n and pattern[i : i + 1] == b"^"
    if negate:
        i += 1
    items: list[bytes] = []
    while i < n:
        c = pattern[i : i + 1]
        if c == b"]":
            body = b"".join(items)
            if not body:
                return i, (b"[^\\x00-\\xff]" if not negate else b"[\\x00-\\xff]")
            return i, b"[" + (b"^" if negate else b"") + body + b"]"
        if c == b"\\" and i + 1 < n:
            i += 1
            c = pattern[i : i + 1]
        if i + 2 < n and pattern[i + 1 : i + 2] == b"-" and pattern[i + 2 : i + 3] != b"]":
            lo, hi = c, pattern[i + 2 : i + 3]
            if lo > hi:
                lo, hi = hi, lo
            items.append(re.escape(lo) + b"-" + re.escape(hi))
            i += 3
            continue
        items.append(re.escape(c))
        i += 1
    return -1, b""


def glob_match(pattern: bytes, key: bytes) -> bool:
    """True if ``key`` matches the Redis glob ``pattern``."""
    return compile_glob(pattern).fullmatch(key) is not None
