"""The workload against an in-process single-copy RESP server, and fault construction."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, TryAgainError

from peer_ring.apps.kv.local import LocalKV
from peer_ring.errors import ConfigError
from peer_ring.server.resp import RespServer
from peer_ring.testing.checker import check_invented_values, check_lost_writes, summarize
from peer_ring.testing.cluster import LocalCluster
from peer_ring.testing.faults import (
    ClockOffset,
    LinkFault,
    bridge,
    message_loss,
    partition,
    slow_node,
)
from peer_ring.testing.history import History
from peer_ring.testing.workload import (
    Endpoint,
    WorkloadConfig,
    classify,
    final_reads,
    owners_of,
    run_workload,
)


async def test_workload_on_a_single_copy_store_loses_nothing(tmp_path: Path) -> None:
    async with RespServer(LocalKV(), host="127.0.0.1", port=0) as server:
        ep = Endpoint("local", "127.0.0.1", server.port)
        history = History(tmp_path / "h.jsonl")
        cfg = WorkloadConfig(clients=4, max_ops=400, duration=30.0, seed=7)
        result = await run_workload([ep], history, cfg)
        final = await final_reads([ep], sorted(result.keys))
    history.close()
    assert result.ops == 400  # the op budget, not the duration, ended the run
    assert summarize(History.load(tmp_path / "h.jsonl"))["ops"] == 400
    assert result.ok == 400
    assert not final.unread
    lost = check_lost_writes(history.events, final.values, mode="lww")
    assert lost.ok, str(lost)
    assert lost.data["acknowledged"] > 100
    assert check_invented_values(history.events, final.values).ok
    # and the checker does see a lost append in this very history
    key = sorted(result.append_keys)[0]
    damaged = dict(final.values)
    damaged[key] = [";".join(final.values[key][0].split(";")[1:])]
    assert not check_lost_writes(history.events, damaged, mode="lww").ok


async def test_workload_records_unreachable_node_as_failed(tmp_path: Path) -> None:
    # nothing listens on this loopback port: connects are refused
    ep = Endpoint("gone", "127.0.0.1", 1)
    history = History()
    cfg = WorkloadConfig(clients=2, max_ops=6, duration=10.0, op_timeout=1.0)
    result = await run_workload([ep], history, cfg)
    assert result.ok == 0
    assert result.failed == 6
    assert {op.status for op in history.operations()} == {"fail"}


def test_classify() -> None:
    assert classify(TryAgainError("quorum")) == "unknown"
    assert classify(ResponseError("ERR syntax")) == "fail"
    assert classify(RedisConnectionError("Error 111 connecting to 127.0.0.1:1.")) == "fail"
    assert classify(RedisConnectionError("Connection closed by server.")) == "unknown"
    assert classify(TimeoutError()) == "unknown"


@pytest.mark.parametrize(
    "kw",
    [{"clients": 0}, {"duration": 0}, {"append_ratio": 0.8, "read_ratio": 0.5}],
)
def test_bad_workload_config(kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        WorkloadConfig(**kw)  # type: ignore[arg-type]


def test_link_faults_cut_exactly_the_links_between_groups(tmp_path: Path) -> None:
    cluster = LocalCluster(5, subnet="127.0.0", artefacts=tmp_path)  # not started
    h = History()
    cut = partition(cluster, h, ["n1", "n2", "n3"], ["n4", "n5"])
    assert len(cut.links) == 12
    assert ("n1", "n4") in cut.links
    assert ("n4", "n1") in cut.links
    assert ("n1", "n2") not in cut.links
    one_way = partition(cluster, h, ["n1"], ["n2"], one_way=True)
    assert one_way.links == [("n1", "n2")]
    br = bridge(cluster, h, ["n1", "n2"], ["n3"], ["n4", "n5"])
    assert not any("n3" in link for link in br.links)
    assert len(br.links) == 8
    assert len(message_loss(cluster, h, 0.05).links) == 20
    slow = slow_node(cluster, h, "n2", delay=0.1)
    assert all("n2" in link for link in slow.links)
    assert len(slow.links) == 8
    with pytest.raises(ConfigError):
        LinkFault(cluster, h, [("n1", "n9")], drop=1.0)
    with pytest.raises(ConfigError):
        LinkFault(cluster, h, [("n1", "n2")], drop=2.0)
    with pytest.raises(ConfigError):
        partition(cluster, h, ["n1"])


async def test_heal_of_a_fault_never_started_is_a_no_op(tmp_path: Path) -> None:
    cluster = LocalCluster(3, subnet="127.0.0", artefacts=tmp_path)  # not started
    h = History()
    fault = ClockOffset(cluster, h, "n1", 60.0)
    await fault.heal()
    await fault.heal()
    assert h.events == []


def test_owners_are_distinct_nodes() -> None:
    owners = owners_of(["n1", "n2", "n3", "n4"], ["a", "b"], partitions=64, replicas=3)
    assert all(len(set(v)) == 3 for v in owners.values())
