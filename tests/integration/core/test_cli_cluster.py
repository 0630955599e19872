"""`peer-ring cluster up` as a user runs it: addresses printed, Ctrl-C/SIGTERM stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_cluster_up_prints_every_node_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "peer_ring", "cluster", "up", "-n", "3",
         "--first-ip", "127.0.31.2", "--partitions", "64", "--log-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=dict(os.environ, COLUMNS="200"),
    )  # fmt: skip
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    out = ""
    deadline = time.monotonic() + 60
    try:
        while "Ctrl-C stops the cluster" not in out:
            assert proc.poll() is None, f"cluster up exited early:\n{out}"
            assert time.monotonic() < deadline, f"no cluster table within 60s:\n{out}"
            out += (proc.stdout.read() or b"").decode(errors="replace")
            time.sleep(0.1)
        for ip in ("127.0.31.2", "127.0.31.3", "127.0.31.4"):
            assert f"{ip}:7400" in out
            assert f"{ip}:6379" in out
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    os.set_blocking(proc.stdout.fileno(), True)
    out += proc.stdout.read().decode(errors="replace")
    proc.stdout.close()
    assert "cluster stopped" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n1.log", "n2.log", "n3.log"]
