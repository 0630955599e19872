"""Registration records, backend configs and EndpointSlice parsing (no I/O)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from peer_ring.errors import ConfigError
from peer_ring.membership._registry import Backoff, RecordError, decode_record, encode_record
from peer_ring.membership.base import Member
from peer_ring.membership.etcd import EtcdConfig
from peer_ring.membership.kubernetes import KubernetesConfig, KubernetesDiscovery
from peer_ring.membership.zookeeper import ZooKeeperConfig


def test_record_round_trip_carries_version_zone_and_meta() -> None:
    member = Member("n1", "127.0.0.2:7100", zone="z", incarnation=7, meta={"k": "v"})
    raw = encode_record(member)
    assert json.loads(raw)["v"] == 1
    back = decode_record(raw)
    assert back == member
    assert dict(back.meta) == {"k": "v"}


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe",
        b"not json",
        b"[1, 2]",
        b'{"id": "a", "addr": "127.0.0.1:1"}',
        b'{"v": 2, "id": "a", "addr": "127.0.0.1:1"}',
        b'{"v": "1", "id": "a", "addr": "127.0.0.1:1"}',
        b'{"v": true, "id": "a", "addr": "127.0.0.1:1"}',
        b'{"v": 1, "addr": "127.0.0.1:1"}',
        b'{"v": 1, "id": "a", "addr": "no-port"}',
        b'{"v": 1, "id": "a", "addr": "127.0.0.1:1", "meta": [1]}',
        b'{"v": 1, "id": "a", "addr": "127.0.0.1:1", "w": -1}',
    ],
)
def test_bad_records_raise_record_error(raw: bytes) -> None:
    with pytest.raises(RecordError):
        decode_record(raw)


def test_record_error_is_a_config_error() -> None:
    assert issubclass(RecordError, ConfigError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"endpoints": ()},
        {"endpoints": ("https://127.0.0.1:2379",)},
        {"endpoints": ("http://127.0.0.1",)},
        {"prefix": "relative"},
        {"prefix": "/"},
        {"lease_ttl": 1},
        {"start_timeout": 0},
        {"retry_initial": 2.0, "retry_max": 1.0},
    ],
)
def test_bad_etcd_config_is_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        EtcdConfig(**kwargs)


def test_etcd_config_from_cli_options() -> None:
    cfg = EtcdConfig.from_options("http://127.0.0.1:2379, http://127.0.0.2:2379", "/x")
    assert cfg.endpoints == ("http://127.0.0.1:2379", "http://127.0.0.2:2379")
    assert cfg.members_prefix == b"/x/members/"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hosts": ()},
        {"hosts": ("nohost",)},
        {"path": "x"},
        {"path": "/a//b"},
        {"session_timeout": 0.5},
    ],
)
def test_bad_zookeeper_config_is_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ZooKeeperConfig(**kwargs)


def test_zookeeper_config_from_cli_options() -> None:
    cfg = ZooKeeperConfig.from_options("127.0.0.1:2181,127.0.0.2:2181", "/ring/")
    assert cfg.hosts == ("127.0.0.1:2181", "127.0.0.2:2181")
    assert cfg.members_path == "/ring/members"


@pytest.mark.parametrize("kwargs", [{"service": ""}, {"namespace": ""}, {"watch_timeout": 0}])
def test_bad_kubernetes_config_is_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        KubernetesConfig(**kwargs)


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets() -> None:
    b = Backoff(0.1, 0.4, rng=random.Random(1))
    delays = [b.next() for _ in range(5)]
    for delay, nominal in zip(delays, [0.1, 0.2, 0.4, 0.4, 0.4], strict=True):
        assert nominal / 2 <= delay <= nominal
    b.reset()
    assert b.next() <= 0.1


def slice_event(kind: str, endpoints: list[Any], rv: str = "5") -> dict[str, Any]:
    obj = {
        "metadata": {"name": "s1", "resourceVersion": rv},
        "addressType": "IPv4",
        "ports": [{"name": "peer", "port": 7100}, {"name": "http", "port": 8080}],
        "endpoints": endpoints,
    }
    return {"type": kind, "raw_object": obj, "object": obj}


def ep(name: str, ip: str, **conditions: Any) -> dict[str, Any]:
    return {
        "addresses": [ip],
        "conditions": conditions,
        "targetRef": {"kind": "Pod", "name": name, "uid": f"u-{name}"},
    }


async def test_endpoint_conditions_decide_membership() -> None:
    d = KubernetesDiscovery(KubernetesConfig(namespace="ns"), api_client=object())
    d._local = Member("p0", "10.0.0.1:7100")
    d._apply(
        slice_event(
            "ADDED",
            [
                ep("p0", "10.0.0.1"),  # nil conditions: ready
                ep("p1", "10.0.0.2", ready=True, serving=True, terminating=False),
                ep("p2", "10.0.0.3", ready=False, serving=False),
                ep("p3", "10.0.0.4", ready=True, serving=True, terminating=True),
                {"addresses": [], "conditions": {}},
                "not a map",
            ],
        )
    )
    assert set(d.members()) == {"p0", "p1"}
    assert d.members()["p1"].address == "10.0.0.2:7100"
    assert d.ready
    assert d.skipped == 2
    assert d.resource_version == "5"
    d._apply({"type": "BOOKMARK", "raw_object": {"metadata": {"resourceVersion": "9"}}})
    assert d.resource_version == "9"
    assert set(d.members()) == {"p0", "p1"}
    d._apply({"type": "WHATEVER", "raw_object": {}})
    d._apply("garbage line")
    assert set(d.members()) == {"p0", "p1"}
    d._apply(slice_event("DELETED", [], rv="10"))
    assert set(d.members()) == set()
    assert d.resource_version == "10"
