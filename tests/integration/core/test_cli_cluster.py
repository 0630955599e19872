"""`peer-ring cluster up` as a user runs it: addresses printed, a node that exits is
reported while the others keep running, Ctrl-C/SIGTERM stops all of them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _read_until(proc: subprocess.Popen[bytes], out: list[str], text: str, timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while text not in out[0]:
        assert proc.poll() is None, f"cluster up exited early:\n{out[0]}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n{out[0]}"
        out[0] += (proc.stdout.read() or b"").decode(errors="replace")
        time.sleep(0.1)


def test_cluster_up_survives_one_node_exiting_and_stops_all_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "peer_ring", "cluster", "up", "-n", "3",
         "--first-ip", "127.0.31.2", "--partitions", "64", "--log-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=dict(os.environ, COLUMNS="200"),
    )  # fmt: skip
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    out = [""]
    try:
        _read_until(proc, out, "Ctrl-C stops the cluster", 60)
        for ip in ("127.0.31.2", "127.0.31.3", "127.0.31.4"):
            assert f"{ip}:7400" in out[0]
            assert f"{ip}:6379" in out[0]
        pids = {m[0]: int(m[1]) for m in re.findall(r"\b(n[123])\b\W+(\d+)\W+127\.", out[0])}
        assert sorted(pids) == ["n1", "n2", "n3"], out[0]
        assert all(_alive(p) for p in pids.values())
        # a user kills one node to watch failover: the others keep running
        os.kill(pids["n2"], signal.SIGKILL)
        _read_until(proc, out, "node n2", 30)
        assert "was stopped by signal 9; 2 node(s) keep running" in out[0]
        assert proc.poll() is None
        assert _alive(pids["n1"])
        assert _alive(pids["n3"])
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    os.set_blocking(proc.stdout.fileno(), True)
    out[0] += proc.stdout.read().decode(errors="replace")
    proc.stdout.close()
    assert "cluster stopped" in out[0]
    assert not [name for name, pid in pids.items() if _alive(pid)], "node processes left behind"
    # the node logs and the state file of `peer-ring cluster add/remove`
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cluster.json", "n1.log", "n2.log", "n3.log",
    ]  # fmt: skip
