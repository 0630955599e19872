"""Real node processes on loopback aliases, over tcp and grpc."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer_ring.testing.cluster import LocalCluster
from tests.conftest import wait_for
from tests.integration._cluster import states, status, transport_of, wait_one_ring

pytestmark = pytest.mark.integration


@pytest.fixture(params=["tcp", "grpc"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalCluster]:
    subnet_third = 10 if request.param == "tcp" else 11  # keep the two runs apart
    with LocalCluster(
        3,
        subnet=f"127.0.{subnet_third}",
        transport=request.param,
        http_port=8080,
        artefacts=tmp_path,
    ) as c:
        yield c


async def test_three_processes_form_one_ring(cluster: LocalCluster) -> None:
    transport = transport_of(cluster)
    await wait_one_ring(cluster)
    st = await status(cluster["n2"].address, transport)
    assert set(states(st).values()) == {"up"}
    assert sum(m["partitions"] for m in st["members"]) == 256 * 3


async def test_killed_node_is_down_then_up_after_restart(cluster: LocalCluster) -> None:
    transport = transport_of(cluster)
    a1 = cluster["n1"].address

    async def all_up() -> bool:
        s = await status(a1, transport)
        return len(s["members"]) == 3 and set(states(s).values()) == {"up"}

    await wait_for(all_up, timeout=15, interval=0.2, message="all up")
    cluster.kill("n3")

    async def n3_down() -> bool:
        return states(await status(a1, transport)).get("n3") == "down"

    await wait_for(n3_down, timeout=10, interval=0.2, message="n3 marked down")
    # down is not gone: n3 keeps its partitions in the ring
    st = await status(a1, transport)
    assert any(m["id"] == "n3" and m["partitions"] > 0 for m in st["members"])
    old_incarnation = next(m["incarnation"] for m in st["members"] if m["id"] == "n3")
    cluster.restart("n3")

    async def n3_back() -> bool:
        s = await status(a1, transport)
        m = next(m for m in s["members"] if m["id"] == "n3")
        return m["state"] == "up" and m["incarnation"] > old_incarnation

    await wait_for(n3_back, timeout=15, interval=0.2, message="n3 up with a new incarnation")


async def test_sigterm_stops_gracefully_and_quickly(cluster: LocalCluster) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    code = await asyncio.to_thread(cluster.stop, "n2", 10.0)
    assert code == 0
    assert loop.time() - started < 8.0
    assert '"stopped"' not in cluster["n2"].log_tail()  # stdout carries events, not the log


async def test_http_health_and_metrics(cluster: LocalCluster) -> None:
    http = cluster["n1"].http
    assert http is not None
    host, port = http.rsplit(":", 1)

    async def get(path: str) -> tuple[int, str]:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        head, _, body = data.decode().partition("\r\n\r\n")
        return int(head.split()[1]), body

    assert await get("/healthz") == (200, "ok\n")
    assert (await get("/readyz"))[0] == 200
    code, body = await get("/metrics")
    assert code == 200
    assert 'peer_ring_members{state="up"}' in body
    code, body = await get("/admin/faults")
    assert code == 403  # not started with --testing


def test_cli_status_prints_a_table(cluster: LocalCluster) -> None:
    transport = transport_of(cluster)
    out = subprocess.run(
        [sys.executable, "-m", "peer_ring", "status", "--node", cluster["n1"].address,
         "--transport", transport],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "ring epoch" in out
    assert "n1" in out


def test_cli_status_of_unreachable_node_is_a_clear_error() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "peer_ring", "status", "--node", "127.0.0.9:1", "--timeout", "1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 1
    assert "cannot query 127.0.0.9:1" in res.stderr


def test_node_with_bad_flags_exits_with_usage_error() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "peer_ring", "node", "--id", "x", "--listen", "nonsense"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 2
    assert "HOST:PORT" in res.stderr


async def test_leave_hands_partitions_over_then_exits(tmp_path: Path) -> None:
    with LocalCluster(3, subnet="127.0.14", partitions=64, artefacts=tmp_path) as c:
        await wait_one_ring(c)
        res = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "peer_ring", "leave", "--node", c["n3"].address],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert "left the cluster" in res.stdout
        proc = c["n3"].proc
        assert proc is not None
        assert await asyncio.to_thread(proc.wait, 20) == 0

        async def two() -> bool:
            sts = [await status(c[n].address) for n in ("n1", "n2")]
            return all({m["id"] for m in s["members"]} == {"n1", "n2"} for s in sts)

        await wait_for(two, timeout=20, interval=0.2, message="n3 gone from both views")


def test_nodes_die_with_the_harness_that_started_them(tmp_path: Path) -> None:
    """kill -9 of the process running a LocalCluster leaves no node behind."""
    import os
    import signal
    import time

    script = (
        "import sys, time\n"
        "from peer_ring.testing.cluster import LocalCluster\n"
        f"c = LocalCluster(1, subnet='127.0.15', partitions=16, artefacts={str(tmp_path)!r})\n"
        "c.start()\n"
        "print(c['n1'].pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    harness = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert harness.stdout is not None
        node_pid = int(harness.stdout.readline())
        os.kill(harness.pid, signal.SIGKILL)
        harness.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(node_pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(node_pid, signal.SIGKILL)
        pytest.fail(f"node {node_pid} outlived its harness")
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait()
        if harness.stdout is not None:
            harness.stdout.close()
