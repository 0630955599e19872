"""`peer-ring cluster add` and `peer-ring cluster remove` against a running
`peer-ring cluster up`, as an operator runs them: 3 -> 4 nodes and back, a
key written before survives both steps, the remove of a node below N is
refused, and Ctrl-C of the cluster stops the added node too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peer_ring.testing.control import pid_alive

pytestmark = pytest.mark.integration

IP = "127.0.32"


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peer_ring", *args],
        capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, COLUMNS="200"),
    )  # fmt: skip


def _wait_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = path.read_text(errors="replace") if path.exists() else ""
        if text in out:
            return out
        assert proc.poll() is None, f"cluster up exited early:\n{out}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n{out}"
        time.sleep(0.1)


def test_cluster_add_then_remove_keeps_the_data_and_the_supervisor_owns_new_nodes(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    out_path = tmp_path / "up.out"
    with open(out_path, "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "peer_ring", "cluster", "up", "-n", "3",
             "--first-ip", f"{IP}.2", "--partitions", "64", "--log-dir", str(logs)],
            stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, COLUMNS="200"),
        )  # fmt: skip
    pids: list[int] = []
    try:
        _wait_text(out_path, "Ctrl-C stops the cluster", up, 60)
        put = _cli("kv", "put", "scaled", "before", "--node", f"{IP}.2:7400")
        assert put.returncode == 0, put.stderr

        add = _cli("cluster", "add", "--log-dir", str(logs))
        assert add.returncode == 0, add.stdout + add.stderr
        assert f"starting n4 at {IP}.5:7400" in add.stdout
        assert "n4 joined" in add.stdout
        assert "4 nodes" in add.stdout
        state = json.loads((logs / "cluster.json").read_text())
        n4 = state["nodes"]["n4"]
        assert n4["ready"]
        assert n4["exit_code"] is None
        pids = [n["pid"] for n in state["nodes"].values()]
        _wait_text(out_path, "node n4", up, 10)

        # the first node (a seed of the others) goes: a decommission
        remove = _cli("cluster", "remove", "n1", "--log-dir", str(logs))
        assert remove.returncode == 0, remove.stdout + remove.stderr
        assert "n1 left after handing over" in remove.stdout
        assert "3 nodes remain" in remove.stdout
        text = _wait_text(out_path, "node n1", up, 30)
        assert "left the cluster; 3 node(s) keep running" in text
        assert not pid_alive(state["nodes"]["n1"]["pid"])

        get = _cli("kv", "get", "scaled", "--node", f"{IP}.5:7400")
        assert (get.returncode, get.stdout.strip()) == (0, "before"), get.stderr

        # N=3 and three nodes left: one more remove would under-replicate
        refused = _cli("cluster", "remove", f"{IP}.3:7400", "--log-dir", str(logs))
        assert refused.returncode != 0
        assert "would leave 2 node(s) for N=3" in refused.stderr
        unknown = _cli("cluster", "remove", "n9", "--log-dir", str(logs))
        assert unknown.returncode != 0
        assert "no running node 'n9'" in unknown.stderr

        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert "cluster stopped" in out_path.read_text()
    assert not [p for p in pids if pid_alive(p)], "node processes left behind"
    # no cluster is running there any more: a clear error, nothing started
    late = _cli("cluster", "add", "--log-dir", str(logs))
    assert late.returncode != 0
    assert "is not running" in late.stderr
