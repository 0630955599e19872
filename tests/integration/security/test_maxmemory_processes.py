"""``--maxmemory`` on real node processes under a write load past the limit,
driven by redis-py: no crash, no silent loss, Redis's errors and INFO fields."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from peer_ring.testing.cluster import LocalCluster

pytestmark = pytest.mark.integration

VALUE = b"v" * 2000
KEYS = 400  # ~1 MB of values: several times the limit below


def _cluster(tmp_path: Path, third: int, policy: str) -> LocalCluster:
    return LocalCluster(
        3,
        subnet=f"127.0.{third}",
        resp_port=6379,
        extra_args=["--maxmemory", "300kb", "--maxmemory-policy", policy],
        artefacts=tmp_path,
        start_timeout=60.0,
    )


def _info(client: redis.Redis, section: str) -> dict[str, object]:
    return dict(client.info(section))


@pytest.fixture
def noeviction(tmp_path: Path) -> Iterator[LocalCluster]:
    with _cluster(tmp_path, 30, "noeviction") as c:
        yield c


@pytest.fixture
def lru(tmp_path: Path) -> Iterator[LocalCluster]:
    with _cluster(tmp_path, 31, "allkeys-lru") as c:
        yield c


@pytest.fixture
def volatile(tmp_path: Path) -> Iterator[LocalCluster]:
    with _cluster(tmp_path, 32, "volatile-ttl") as c:
        yield c


def _clients(c: LocalCluster) -> list[redis.Redis]:
    return [redis.Redis(host=n.ip, port=6379, socket_timeout=10) for n in c.nodes.values()]


def test_noeviction_answers_oom_and_keeps_every_acknowledged_write(
    noeviction: LocalCluster,
) -> None:
    clients = _clients(noeviction)
    acked, errors = [], []
    for i in range(KEYS):
        try:
            clients[i % 3].set(f"k{i}", VALUE)
            acked.append(f"k{i}")
        except redis.exceptions.ResponseError as exc:
            errors.append(str(exc))
    assert errors
    # Redis's text (redis-py turns the OOM prefix into a ResponseError)
    assert {e for e in errors} == {"command not allowed when used memory > 'maxmemory'."}
    assert 0 < len(acked) < KEYS
    assert all(clients[1].get(k) == VALUE for k in acked)  # nothing lost
    assert clients[2].delete(acked[0]) == 1  # deletes are served
    mem = _info(clients[0], "memory")
    assert mem["maxmemory"] == 300 * 1024  # kb: 1024 bytes, k: 1000 (as in redis.conf)
    assert mem["maxmemory_policy"] == "noeviction"
    assert int(str(mem["oom_rejections"])) > 0
    assert mem["evicted_keys"] == 0
    assert clients[0].config_get("maxmemory*") == {
        "maxmemory": "307200",
        "maxmemory-policy": "noeviction",
    }


def test_allkeys_lru_never_refuses_and_reports_its_evictions(lru: LocalCluster) -> None:
    clients = _clients(lru)
    for i in range(KEYS):
        clients[i % 3].set(f"k{i}", VALUE)  # no error under an eviction policy
    present = sum(1 for i in range(KEYS) if clients[0].get(f"k{i}") is not None)
    evicted = sum(int(str(_info(c, "stats")["evicted_keys"])) for c in clients)
    assert 0 < present < KEYS
    assert present + evicted >= KEYS  # every missing key was evicted and counted
    assert clients[0].get(f"k{KEYS - 1}") == VALUE  # the newest survive
    for c in clients:
        mem = _info(c, "memory")
        assert int(str(mem["used_memory"])) < 1.5 * 300 * 1024


def test_volatile_ttl_evicts_only_keys_with_a_ttl(volatile: LocalCluster) -> None:
    clients = _clients(volatile)
    for i in range(40):
        clients[i % 3].set(f"keep{i}", VALUE)
    for i in range(KEYS):
        clients[i % 3].set(f"ttl{i}", VALUE, ex=3600 + i)
    assert all(clients[2].get(f"keep{i}") == VALUE for i in range(40))
    assert sum(int(str(_info(c, "memory")["evicted_keys"])) for c in clients) > 0
