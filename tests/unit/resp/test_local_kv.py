"""LocalKV: the single-process reference KVApi."""

from __future__ import annotations

import pytest

from peer_ring.apps.kv.api import KVApi, Limits
from peer_ring.apps.kv.local import LocalKV, glob_match
from peer_ring.clock import ManualClock
from peer_ring.errors import InvalidRequest


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def kv(clock: ManualClock) -> LocalKV:
    return LocalKV(clock=clock, limits=Limits(max_key_size=8, max_value_size=16))


def test_local_kv_satisfies_the_protocol(kv: LocalKV) -> None:
    api: KVApi = kv
    assert api.limits.max_key_size == 8


async def test_expired_keys_are_invisible_and_swept(kv: LocalKV, clock: ManualClock) -> None:
    await kv.put(b"a", b"1", ttl=5)
    await kv.put(b"b", b"2", expires_at=clock.time() + 10)
    await kv.put(b"c", b"3")
    entry = await kv.get_entry(b"a")
    assert entry is not None
    assert entry.expires_at == clock.time() + 5
    await clock.advance(5)
    assert await kv.get(b"a") is None
    assert await kv.get_many([b"a", b"b", b"c"]) == [None, b"2", b"3"]
    assert await kv.count() == 2
    await clock.advance(5)
    assert await kv.count() == 1
    assert await kv.scan(0, 100) == (0, [b"c"])
    assert len(kv) == 2  # "b" expired but not yet reclaimed ("a" was, by the read)
    assert kv.sweep() == 1
    assert len(kv) == 1
    assert await kv.set_expiry(b"b", None) is False


async def test_delete_and_set_expiry_report_whether_the_key_lived(kv: LocalKV) -> None:
    assert await kv.delete(b"x") is False
    await kv.put(b"x", b"v")
    assert await kv.set_expiry(b"x", 2e9) is True
    assert await kv.delete(b"x") is True
    assert await kv.set_expiry(b"x", None) is False


async def test_limits_and_bad_arguments_raise_invalid_request(kv: LocalKV) -> None:
    with pytest.raises(InvalidRequest, match="key too large"):
        await kv.put(b"k" * 9, b"v")
    with pytest.raises(InvalidRequest, match="value too large"):
        await kv.put(b"k", b"v" * 17)
    with pytest.raises(InvalidRequest, match="exclusive"):
        await kv.put(b"k", b"v", ttl=1, expires_at=2e9)
    with pytest.raises(InvalidRequest, match="ttl must be > 0"):
        await kv.put(b"k", b"v", ttl=0)
    with pytest.raises(InvalidRequest, match="key too large"):
        await kv.get(b"k" * 9)
    with pytest.raises(InvalidRequest, match="value too large"):
        await kv.put_many([(b"a", b"1"), (b"b", b"v" * 17)])
    assert await kv.get(b"a") is None  # put_many validates everything first


async def test_scan_returns_every_stable_key_despite_concurrent_writes(kv: LocalKV) -> None:
    stable = {b"s%d" % i for i in range(200)}
    for key in stable:
        await kv.put(key, b"v")
    seen: set[bytes] = set()
    cursor = 0
    step = 0
    while True:
        cursor, keys = await kv.scan(cursor, 7)
        seen.update(keys)
        # Churn between calls: add and remove other keys.
        await kv.put(b"n%d" % step, b"v")
        await kv.delete(b"n%d" % (step - 1))
        step += 1
        if cursor == 0:
            break
    assert stable <= seen
    assert step > 20


async def test_scan_match_and_flush(kv: LocalKV) -> None:
    for key in (b"user:1", b"user:2", b"order:1"):
        await kv.put(key, b"v")
    _, keys = await kv.scan(0, 100, b"user:*")
    assert sorted(keys) == [b"user:1", b"user:2"]
    await kv.flush()
    assert await kv.count() == 0


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        (b"*", b"", True),
        (b"h?llo", b"hello", True),
        (b"h?llo", b"hllo", False),
        (b"h*llo", b"heeeello", True),
        (b"h[ae]llo", b"hallo", True),
        (b"h[ae]llo", b"hillo", False),
        (b"h[^e]llo", b"hallo", True),
        (b"h[^e]llo", b"hello", False),
        (b"h[a-b]llo", b"hbllo", True),
        (b"h\\*llo", b"h*llo", True),
        (b"h\\*llo", b"hello", False),
        (b"a.b", b"axb", False),
        (b"x[", b"x[", True),
        (b"*\n*", b"a\nb", True),
    ],
)
def test_glob_follows_redis_semantics(pattern: bytes, key: bytes, expected: bool) -> None:
    assert glob_match(pattern, key) is expected
