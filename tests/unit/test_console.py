"""The web console's endpoints: page, snapshot shape, event stream, admin guard.

Nodes run on the memory transport; the console's HTTP server is real
(aiohttp on 127.0.0.1:0). The browser test with real processes is
``tests/integration/core/test_console_browser.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import aiohttp
import pytest

from peer_ring.apps.kv import KVStore
from peer_ring.config import NodeConfig, ReplicationConfig
from peer_ring.node import Node
from peer_ring.replication.coordinator import LatencySamples
from peer_ring.replication.transfer import TransferProgress
from peer_ring.server.console import SECURITY_HEADERS, STATIC_FILES
from peer_ring.server.console.snapshot import Rates, build, ring_picture
from peer_ring.server.http import HttpServer
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for

TOKEN = "console-admin-token-0123"
Q = 32


def _config(i: int) -> NodeConfig:
    return NodeConfig.local(
        f"n{i}",
        listen=f"10.0.0.{i}:7400",
        transport="memory",
        seeds=("10.0.0.1:7400",),
        replication=ReplicationConfig(partitions=Q, replicas=2),
    )


@pytest.fixture
async def pair() -> AsyncIterator[list[tuple[Node, KVStore]]]:
    net = MemoryNetwork()
    nodes = [Node(_config(i), network=net) for i in (1, 2)]
    stores = [node.register(KVStore()) for node in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    await wait_for(lambda: all(len(n.members) == 2 for n in nodes), message="two members")
    await asyncio.gather(*(n.wait_ready() for n in nodes))
    yield list(zip(nodes, stores, strict=True))
    await asyncio.gather(*(n.stop() for n in nodes))


async def _serve(node: Node, **kw: Any) -> tuple[HttpServer, str]:
    http = HttpServer(node, "127.0.0.1:0", **kw)
    await http.start()
    return http, f"http://127.0.0.1:{http.port}"


async def test_the_page_and_its_files_are_served_with_a_strict_policy(
    pair: list[tuple[Node, KVStore]],
) -> None:
    http, base = await _serve(pair[0][0], admin_token=TOKEN)  # the page holds no data
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/") as r:
                assert r.status == 200
                assert r.content_type == "text/html"
                assert "/console/console.js" in await r.text()
                assert (
                    r.headers["Content-Security-Policy"]
                    == SECURITY_HEADERS["Content-Security-Policy"]
                )
                assert r.headers["X-Frame-Options"] == "DENY"
            for name, kind in STATIC_FILES.items():
                async with session.get(f"{base}/console/{name}") as r:
                    assert r.status == 200
                    assert r.content_type == kind
            for bad in ("secrets.txt", "..%2F__init__.py", "snapshot.py"):
                async with session.get(f"{base}/console/{bad}") as r:
                    assert r.status == 404
    finally:
        await http.close()


def test_the_package_ships_exactly_the_served_files() -> None:
    static = resources.files("peer_ring.server.console").joinpath("static")
    assert sorted(p.name for p in static.iterdir()) == sorted(STATIC_FILES)


async def test_snapshot_shows_members_ring_load_and_apps_of_every_node(
    pair: list[tuple[Node, KVStore]],
) -> None:
    (n1, kv1), (_n2, _) = pair
    n1.coordinator.sample_mask = 0  # time every round
    for i in range(20):
        await kv1.put(b"k%d" % i, b"v")
    http, base = await _serve(n1)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(base + "/console/api/snapshot") as r,
        ):
            assert r.status == 200
            snap = await r.json()
    finally:
        await http.close()
    assert snap["version"] == 1
    assert snap["node"] == "n1"
    assert (snap["partitions"], snap["replicas"]) == (Q, 2)
    assert snap["failure_bound"] == pytest.approx(2 * 0.25 + 0.5)  # the local preset
    assert {m["id"]: m["state"] for m in snap["members"]} == {"n1": "up", "n2": "up"}
    for m in snap["members"]:
        assert {"address", "zone", "incarnation", "partitions", "primaries"} <= set(m)
    ring = snap["ring"]
    assert ring["nodes"] == ["n1", "n2"]
    assert len(ring["owners"]) == Q
    assert [ring["nodes"][o] for o in ring["owners"]] == [
        n1.ring.preference_list(p)[0] for p in range(Q)
    ]
    assert ring["moving"] == []
    assert snap["actions"]["enabled"] is False
    assert "read-only" in snap["actions"]["why"]
    assert set(snap["nodes"]) == {"n1", "n2"}
    for nid in ("n1", "n2"):  # n2's figures came over the peer transport
        view = snap["nodes"][nid]
        assert view["reachable"] is True
        assert view["apps"]["kv"]["keys"] == 20  # N=2 on two nodes: every key on both
        assert view["apps"]["kv"]["memory_used_bytes"] > 0
        assert {"round", "position", "owned", "ae_exchanges"} <= set(view["antientropy"])
        assert {"rounds", "requests_in", "requests_out", "latency"} <= set(view["load"])
    lat = snap["nodes"]["n1"]["load"]["latency"]
    assert snap["nodes"]["n1"]["load"]["rounds"] == 20
    assert lat["samples"] == 20
    assert lat["p50"] is not None
    assert lat["p50"] <= lat["p99"] <= lat["max"]
    assert snap["services"] == ["kv"]


async def test_one_quorum_round_in_eight_is_timed(pair: list[tuple[Node, KVStore]]) -> None:
    (n1, kv1), _ = pair
    for i in range(16):
        await kv1.put(b"k%d" % i, b"v")
    load = n1.load()
    assert load["rounds"] == 16
    assert load["latency"]["samples"] == 2


async def test_events_stream_outlives_the_request_deadline(
    pair: list[tuple[Node, KVStore]],
) -> None:
    http, base = await _serve(pair[0][0], request_timeout=0.3, console_interval=0.1)
    seen: list[dict[str, Any]] = []
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(base + "/console/api/events") as r,
        ):
            assert r.status == 200
            assert r.content_type == "text/event-stream"
            event = None
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "snapshot":
                    seen.append(json.loads(line[6:]))
                    if len(seen) == 6:  # 0.5 s or more: past the 0.3 s deadline
                        break
        # the stream ends when the browser goes (its next write fails)
        await wait_for(lambda: http.console.watchers == 0, message="the stream to end")
    finally:
        await http.close()
    assert len(seen) == 6
    assert all(s["node"] == "n1" and len(s["members"]) == 2 for s in seen)


async def test_without_an_admin_token_the_console_is_read_only(
    pair: list[tuple[Node, KVStore]],
) -> None:
    http, base = await _serve(pair[0][0])
    try:
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
                async with session.post(
                    base + "/console/api/decommission", json={"node": "n2"}, headers=headers
                ) as r:
                    assert r.status == 403
                    assert "read-only" in (await r.json())["error"]
    finally:
        await http.close()
    assert pair[1][0].id in pair[0][0].members  # nothing happened


async def test_actions_need_the_admin_token_and_only_that_token(
    pair: list[tuple[Node, KVStore]],
) -> None:
    (n1, _), _ = pair
    calls: list[str] = []

    async def decommission() -> dict[str, Any]:
        calls.append(n1.id)
        return {"node": n1.id, "transfers": 3, "records": 0}

    http, base = await _serve(n1, admin_token=TOKEN, decommission=decommission)
    url = base + "/console/api/decommission"
    good = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/console/api/snapshot", "/console/api/events"):
                async with session.get(base + path) as r:
                    assert r.status == 401  # the data is guarded like /status
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                async with session.post(url, json={"node": "n1"}, headers=headers) as r:
                    assert r.status == 401
                    assert "admin token" in (await r.json())["error"]
            assert calls == []
            async with session.post(url, data=b"not json", headers=good) as r:
                assert r.status == 400
            async with session.post(url, json={"node": "n9"}, headers=good) as r:
                assert r.status == 404
            async with session.post(url, json={"node": "n1"}, headers=good) as r:
                assert r.status == 202
                assert (await r.json())["accepted"] is True

            async def done() -> bool:
                async with session.get(base + "/console/api/snapshot", headers=good) as r:
                    log = (await r.json())["actions_log"]
                return bool(log) and log[-1]["state"] == "done"

            await wait_for(done, message="the decommission's outcome in the snapshot")
            async with session.get(base + "/console/api/snapshot", headers=good) as r:
                snap = await r.json()
    finally:
        await http.close()
    assert calls == ["n1"]
    assert snap["actions"]["enabled"] is True
    entry = snap["actions_log"][-1]
    assert (entry["action"], entry["node"]) == ("decommission", "n1")
    assert "3 partition transfers" in entry["detail"]


async def test_a_down_member_cannot_be_decommissioned(
    pair: list[tuple[Node, KVStore]],
) -> None:
    (n1, _), (n2, _) = pair
    await n2.stop()
    n1.detector.failure("n2", definite=True)
    http, base = await _serve(n1, admin_token=TOKEN)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                base + "/console/api/decommission",
                json={"node": "n2"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as r:
                assert r.status == 409
                assert "down" in (await r.json())["error"]
            async with session.get(
                base + "/console/api/snapshot", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as r:
                snap = await r.json()
    finally:
        await http.close()
    assert snap["nodes"]["n2"] == {"reachable": False, "error": "down"}


# -- the pure parts ------------------------------------------------------------------


def _status(nid: str, rounds: int, **extra: Any) -> dict[str, Any]:
    return {
        "node": nid,
        "address": f"{nid}:1",
        "epoch": "e",
        "partitions": 4,
        "replicas": 1,
        "members": [],
        "services": [],
        "load": {"rounds": rounds, "requests_in": 0, "requests_out": 0},
        **extra,
    }


def test_rates_come_from_two_readings_and_survive_a_restart() -> None:
    rates = Rates(min_gap=0.5)
    assert rates.update("n1", 10.0, {"rounds": 100}) == {}
    assert rates.update("n1", 10.1, {"rounds": 900}) == {}  # too close: no rate yet
    assert rates.update("n1", 12.0, {"rounds": 300})["rounds_per_second"] == pytest.approx(100)
    # the counter went back (the node restarted): no negative rate
    assert rates.update("n1", 13.0, {"rounds": 5})["rounds_per_second"] == 0.0
    assert rates.update("n1", 14.0, {"rounds": 25})["rounds_per_second"] == pytest.approx(20)


def test_snapshot_merges_transfers_and_marks_their_partitions_moving() -> None:
    running = {"namespace": "kv", "partition": 2, "from": "n1", "to": "n3", "records": 5,
               "total": 10}  # fmt: skip
    done = {**running, "partition": 1, "outcome": "done", "ago": 3.0}
    snap = build(
        _status("n1", 0, transfers=[running]),
        {"n2": _status("n2", 0, transfers_recent=[done]), "n3": "down"},
        preference_lists=[("n1",), ("n2",), ("n1",), ()],
        holders_moving={3},
        rates=Rates(),
        now=1.0,
        interval=1.0,
        actions={"enabled": False, "why": "x"},
    )
    assert [(t["partition"], t["state"]) for t in snap["transfers"]] == [
        (2, "running"),
        (1, "done"),
    ]
    assert snap["transfer_summary"] == {"n3": {"running": 1, "done": 1, "failed": 0}}
    assert snap["transfers_finished"] == 1
    assert snap["ring"] == {"nodes": ["n1", "n2"], "owners": [0, 1, 0, -1], "moving": [2, 3]}
    assert snap["nodes"]["n3"] == {"reachable": False, "error": "down"}
    assert snap["nodes"]["n2"]["reachable"] is True


def test_snapshot_lists_the_newest_finished_transfers_and_counts_them_all() -> None:
    rows = [
        {"namespace": "kv", "partition": p, "from": "n1", "to": "n2", "records": 1, "total": 1,
         "outcome": "failed" if p == 0 else "done", "ago": float(p)}
        for p in range(40)
    ]  # fmt: skip
    snap = build(
        _status("n1", 0, transfers_recent=rows),
        {},
        preference_lists=[("n1",)],
        holders_moving=set(),
        rates=Rates(),
        now=1.0,
        interval=1.0,
        actions={"enabled": False, "why": "x"},
    )
    assert [t["partition"] for t in snap["transfers"]] == list(range(12))  # newest first
    assert snap["transfers_finished"] == 40
    assert snap["transfer_summary"] == {"n2": {"running": 0, "done": 39, "failed": 1}}


def test_ring_picture_indexes_owners_by_sorted_id() -> None:
    pic = ring_picture([("b", "a"), ("a", "b"), ("c",)], set())
    assert pic == {"nodes": ["a", "b", "c"], "owners": [1, 0, 2], "moving": []}


def test_latency_percentiles_cover_the_window_only() -> None:
    samples = LatencySamples(size=1000)
    for i in range(100):
        samples.add(at=50.0, seconds=(i + 1) / 1000, ok=i != 0)
    samples.add(at=1.0, seconds=9.0, ok=True)  # long ago: outside the window
    s = samples.summary(now=55.0, window=10.0)
    assert s["samples"] == 100
    assert s["failed"] == 1
    assert s["p50"] == pytest.approx(51.0)
    assert s["p99"] == pytest.approx(100.0)
    assert s["max"] == pytest.approx(100.0)
    empty = LatencySamples().summary(now=0.0, window=1.0)
    assert empty["samples"] == 0
    assert empty["p50"] is None


def test_transfer_progress_reports_time_left() -> None:
    t = TransferProgress("kv", 3, "n1", "n2", started=10.0, records=250, total=1000)
    d = t.as_dict(now=15.0)
    assert d["records_per_second"] == pytest.approx(50)
    assert d["seconds_left"] == pytest.approx(15)
    assert (
        TransferProgress("kv", 3, "n1", "n2", 10.0, total=5).as_dict(10.0)["seconds_left"] is None
    )  # nothing moved yet: no estimate
