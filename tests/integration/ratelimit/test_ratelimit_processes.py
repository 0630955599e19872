"""The rate limiter in three real node processes, over every wire surface.

RESP ``CL.THROTTLE`` with redis-py and redis-cli; gubernator's gRPC V1 and
Envoy's RateLimitService with real gRPC clients built from the protos;
gubernator's HTTP JSON ``POST /v1/GetRateLimits`` with aiohttp; and
``peer-ring ratelimit hit``. Clients on every node, one hot key: the
cluster admits exactly the limit.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
import redis.asyncio as aioredis

from peer_ring.server.grpc_api.protos import gubernator_pb2 as gpb
from peer_ring.server.grpc_api.protos import gubernator_pb2_grpc as gpb_grpc
from peer_ring.server.grpc_api.protos.envoy.extensions.common.ratelimit.v3 import (
    ratelimit_pb2 as rl_common,
)
from peer_ring.server.grpc_api.protos.envoy.service.ratelimit.v3 import rls_pb2 as rls
from peer_ring.server.grpc_api.protos.envoy.service.ratelimit.v3 import rls_pb2_grpc as rls_grpc
from peer_ring.testing.cluster import LocalCluster
from tests.integration._cluster import wait_one_ring

pytestmark = pytest.mark.integration

RESP = 6379
HTTP = 8080
GRPC = 8081

LIMITS = {
    "domain": "api",
    "descriptors": [{"key": "user", "rate_limit": {"unit": "hour", "requests_per_unit": 2}}],
}


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    tmp = tmp_path_factory.mktemp("ratelimit")
    limits = tmp / "limits.json"
    limits.write_text(json.dumps(LIMITS))
    c = LocalCluster(
        3,
        subnet="127.0.44",
        resp_port=RESP,
        http_port=HTTP,
        partitions=64,
        artefacts=tmp,
        extra_args=["--ratelimit-limits", str(limits)],
    )
    for n in c.nodes.values():
        n.args += ["--grpc", f"{n.ip}:{GRPC}"]
    try:
        c.start()
        asyncio.run(wait_one_ring(c))
        yield c
    finally:
        c.close()


def clients(cluster: LocalCluster) -> list[aioredis.Redis]:
    return [aioredis.Redis(host=n.ip, port=RESP, socket_timeout=5) for n in cluster.nodes.values()]


async def test_cl_throttle_admits_exactly_the_burst_from_every_node(three: LocalCluster) -> None:
    cs = clients(three)
    try:
        replies = []
        for i in range(9):  # max_burst 4: 5 pass at once, 1 per 60 s after
            replies.append(await cs[i % 3].execute_command("CL.THROTTLE", "hot", 4, 1, 60))
        limited = [r[0] for r in replies]
        assert limited == [0, 0, 0, 0, 0, 1, 1, 1, 1]
        assert all(r[1] == 5 for r in replies)
        assert [r[2] for r in replies[:5]] == [4, 3, 2, 1, 0]
        assert all(r[3] in (59, 60) for r in replies[5:])  # retry_after, whole seconds
        assert replies[0][3] == -1
        peek = await cs[2].execute_command("CL.THROTTLE", "hot", 4, 1, 60, 0)
        assert peek[2] == 0  # redis-cell: a peek (quantity 0) takes nothing
        again = await cs[1].execute_command("CL.THROTTLE", "hot", 4, 1, 60)
        assert again[0] == 1
    finally:
        for c in cs:
            await c.aclose()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["k", "x", "1", "60"], "not an integer"),
        (["k", "4", "0", "60"], "positive"),
        (["k", "4", "1", "0"], "positive"),
        (["k", "-1", "1", "60"], "must not be negative"),
        (["k", "4", "1", "99999999999999999999"], "not an integer"),
        (["k", "4", "1"], "wrong number of arguments"),
        (["k", "4", "1", "60", "1", "extra"], "wrong number of arguments"),
        (["k", "4", "1", str(2**62)], "period"),
    ],
)
async def test_cl_throttle_bad_input_is_an_error_reply(
    three: LocalCluster, args: list[str], match: str
) -> None:
    c = clients(three)[0]
    try:
        with pytest.raises(aioredis.ResponseError, match=match):
            await c.execute_command("CL.THROTTLE", *args)
        assert await c.ping()  # the connection survives
    finally:
        await c.aclose()


def test_redis_cli_speaks_cl_throttle(three: LocalCluster) -> None:
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli not installed (apt-get install redis-tools)")
    node = three["n2"]
    out = subprocess.run(
        [cli, "-h", node.ip, "-p", str(RESP), "CL.THROTTLE", "cli-key", "1", "10", "60", "2"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout.split()
    assert out == ["0", "2", "0", "-1", "12"]  # burst 2 taken; 6 s per token: full in 12 s
    err = subprocess.run(
        [cli, "-h", node.ip, "-p", str(RESP), "CL.THROTTLE", "cli-key", "1", "0", "60"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert "ERR" in err.stdout + err.stderr


async def _post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with session.post(
        url, data=json.dumps(body) if not isinstance(body, bytes) else body
    ) as r:
        return r.status, await r.json()


async def test_gubernator_http_json_from_every_node(three: LocalCluster) -> None:
    urls = [f"http://{n.ip}:{HTTP}/v1/GetRateLimits" for n in three.nodes.values()]
    req = {"name": "http", "unique_key": "acct:1", "hits": "1", "limit": "3", "duration": 60_000}
    async with aiohttp.ClientSession() as s:
        answers = [await _post(s, urls[i % 3], {"requests": [req]}) for i in range(5)]
        assert all(code == 200 for code, _ in answers)
        statuses = [body["responses"][0]["status"] for _, body in answers]
        assert statuses == ["UNDER_LIMIT"] * 3 + ["OVER_LIMIT"] * 2
        first = answers[0][1]["responses"][0]
        assert first["limit"] == "3"
        assert first["remaining"] == "2"
        assert int(first["reset_time"]) > 0
        # bad input: 400 with a JSON error, nothing counted
        for bad in (
            {"requests": [{**req, "limit": 0}]},
            {"requests": [{**req, "duration": -1}]},
            {"requests": [{**req, "algorithm": "MAGIC"}]},
            {"requests": [{**req, "hits": "9" * 30}]},
            {"requests": [req] * 1001},
            {"requests": "nope"},
            b"{not json",
        ):
            code, body = await _post(s, urls[1], bad)
            assert code == 400, bad
            assert body["error"]


def test_cli_ratelimit_hit(three: LocalCluster) -> None:
    node = three["n3"]
    cmd = [sys.executable, "-m", "peer_ring", "ratelimit", "hit", "cli:1", "--limit", "1",
           "--period", "60", "--node", node.address]  # fmt: skip
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["remaining"] == 0
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert json.loads(second.stdout)["allowed"] is False
    bad = subprocess.run([*cmd[:7], "0", *cmd[8:]], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2
    assert "limit must be in" in bad.stderr


def test_metrics_show_limiter_figures(three: LocalCluster) -> None:
    import urllib.request

    text = ""
    for n in three.nodes.values():
        with urllib.request.urlopen(f"http://{n.ip}:{HTTP}/metrics", timeout=5) as r:
            text += r.read().decode()
    assert "peer_ring_ratelimit_decisions" in text
    assert "peer_ring_ratelimit_counters_rebuilt" in text


def grpc_targets(cluster: LocalCluster) -> list[str]:
    return [f"{n.ip}:{GRPC}" for n in cluster.nodes.values()]


async def test_gubernator_grpc_client_on_every_node(three: LocalCluster) -> None:
    channels = [grpc.aio.insecure_channel(t) for t in grpc_targets(three)]
    try:
        stubs = [gpb_grpc.V1Stub(ch) for ch in channels]
        req = gpb.RateLimitReq(
            name="grpc", unique_key="acct:9", hits=1, limit=4, duration=60_000,
            algorithm=gpb.SLIDING_WINDOW,
        )  # fmt: skip
        answers = []
        for i in range(7):
            got = await stubs[i % 3].GetRateLimits(gpb.GetRateLimitsReq(requests=[req]), timeout=5)
            answers.append(got.responses[0])
        assert [a.status for a in answers] == [gpb.UNDER_LIMIT] * 4 + [gpb.OVER_LIMIT] * 3
        assert [a.remaining for a in answers[:4]] == [3, 2, 1, 0]
        assert all(a.limit == 4 and a.error == "" and a.reset_time > 0 for a in answers)
        health = await stubs[1].HealthCheck(gpb.HealthCheckReq(), timeout=5)
        assert health.status == "healthy"
        assert health.peer_count == 3
        bad_requests = [
            gpb.RateLimitReq(name="g", unique_key="k", hits=1, limit=0, duration=1000),
            gpb.RateLimitReq(name="g", unique_key="k", hits=1, limit=5, duration=-1),
            gpb.RateLimitReq(name="", unique_key="k", hits=1, limit=5, duration=1000),
            gpb.RateLimitReq(name="g", unique_key="k", limit=5, duration=1000, algorithm=42),
            gpb.RateLimitReq(name="g", unique_key="k", limit=5, duration=1000, behavior=4),
        ]
        for bad in bad_requests:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stubs[0].GetRateLimits(gpb.GetRateLimitsReq(requests=[req, bad]), timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "requests[1]" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stubs[0].GetRateLimits(gpb.GetRateLimitsReq(requests=[req] * 1001), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # nothing of a refused batch was counted
        after = await stubs[2].GetRateLimits(
            gpb.GetRateLimitsReq(requests=[gpb.RateLimitReq(
                name="grpc", unique_key="acct:9", hits=0, limit=4, duration=60_000,
                algorithm=gpb.SLIDING_WINDOW)]),
            timeout=5,
        )  # fmt: skip
        assert after.responses[0].remaining == 0
    finally:
        for ch in channels:
            await ch.close()


def _descriptor(*entries: tuple[str, str], override: tuple[int, int] | None = None) -> Any:
    d = rl_common.RateLimitDescriptor(
        entries=[rl_common.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )
    if override is not None:
        d.limit.requests_per_unit, d.limit.unit = override
    return d


async def test_envoy_should_rate_limit_with_a_descriptor_file(three: LocalCluster) -> None:
    channels = [grpc.aio.insecure_channel(t) for t in grpc_targets(three)]
    try:
        stubs = [rls_grpc.RateLimitServiceStub(ch) for ch in channels]

        async def ask(i: int, *descs: Any, domain: str = "api") -> Any:
            req = rls.RateLimitRequest(domain=domain, descriptors=list(descs))
            return await stubs[i % 3].ShouldRateLimit(req, timeout=5)

        codes = [(await ask(i, _descriptor(("user", "ann")))).overall_code for i in range(3)]
        assert codes == [rls.RateLimitResponse.OK] * 2 + [rls.RateLimitResponse.OVER_LIMIT]
        got = await ask(0, _descriptor(("user", "bob")), _descriptor(("unknown", "x")))
        assert got.overall_code == rls.RateLimitResponse.OK
        assert got.statuses[0].current_limit.requests_per_unit == 2
        assert got.statuses[0].current_limit.unit == rls.RateLimitResponse.RateLimit.HOUR
        assert got.statuses[0].limit_remaining == 1
        assert got.statuses[0].duration_until_reset.seconds > 0
        assert not got.statuses[1].HasField("current_limit")  # no limit: OK
        # an override (1 per minute, unit MINUTE = 2) replaces the configured limit
        first = await ask(1, _descriptor(("user", "cy"), override=(1, 2)))
        second = await ask(2, _descriptor(("user", "cy"), override=(1, 2)))
        assert first.overall_code == rls.RateLimitResponse.OK
        assert second.overall_code == rls.RateLimitResponse.OVER_LIMIT
        for bad in (
            ask(0, _descriptor(("user", "x")), domain="nope"),
            ask(0, rl_common.RateLimitDescriptor()),
            ask(0, _descriptor(("user", "x"), override=(0, 2))),
            ask(0),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await bad
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        for ch in channels:
            await ch.close()


def test_status_shows_limiter_figures(three: LocalCluster) -> None:
    node = three["n1"]
    cmd = [sys.executable, "-m", "peer_ring", "status", "--node", node.address]
    out = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=30, check=True)
    figures = json.loads(out.stdout)["ratelimit"]
    assert {"decisions", "over_limit", "counters_rebuilt", "lease_grants"} <= set(figures)
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    assert "rate limiter:" in text


async def test_gubernator_global_behavior_answers_from_copies_within_its_bound(
    three: LocalCluster,
) -> None:
    channels = [grpc.aio.insecure_channel(t) for t in grpc_targets(three)]
    try:
        stubs = [gpb_grpc.V1Stub(ch) for ch in channels]
        req = gpb.RateLimitReq(
            name="glob", unique_key="k", hits=1, limit=10, duration=3_600_000,
            algorithm=gpb.FIXED_WINDOW, behavior=gpb.GLOBAL,
        )  # fmt: skip
        batch = gpb.GetRateLimitsReq(requests=[req])
        answers = await asyncio.gather(
            *(stubs[i % 3].GetRateLimits(batch, timeout=5) for i in range(45))
        )
        admitted = sum(a.responses[0].status == gpb.UNDER_LIMIT for a in answers)
        assert 10 <= admitted <= 10 + 2 * 10  # the documented (n - 1) x L bound
        assert all(a.responses[0].error == "" for a in answers)
    finally:
        for ch in channels:
            await ch.close()
