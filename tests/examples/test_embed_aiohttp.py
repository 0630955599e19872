"""The embedding tutorial (docs/tutorials/embed-aiohttp.md) runs as written.

Three copies of examples/aiohttp_service.py, each an aiohttp service with a
node inside, form one ring: a value PUT through one is read through another,
a DELETE through a third is seen everywhere, and SIGTERM stops each cleanly.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

IPS = ("127.0.191.2", "127.0.191.3", "127.0.191.4")


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_healthy(ip: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"service on {ip} exited:\n{log.read_text()}"
        try:
            if http("GET", f"http://{ip}:8000/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"service on {ip} not healthy within 20 s:\n{log.read_text()}")


def test_three_services_share_one_replicated_store(
    examples: Path, env: dict[str, str], tmp_path: Path
) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / f"n{i}.log" for i in (1, 2, 3)]
    try:
        for i, ip in enumerate(IPS, 1):
            args = ["--id", f"n{i}", "--ip", ip, "--seeds", ",".join(IPS[:2])]
            command = [sys.executable, str(examples / "aiohttp_service.py"), *args]
            with open(logs[i - 1], "wb") as log:
                procs.append(
                    subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
                )
        for ip, proc, log in zip(IPS, procs, logs, strict=True):
            wait_healthy(ip, proc, log)
        n1, n2, n3 = (f"http://{ip}:8000/kv" for ip in IPS)

        assert http("PUT", f"{n1}/user:42", b"Ada") == (204, b"")
        assert http("GET", f"{n3}/user:42") == (200, b"Ada")
        assert http("GET", f"{n2}/user:42") == (200, b"Ada")
        assert http("DELETE", f"{n2}/user:42") == (204, b"")
        assert http("GET", f"{n1}/user:42")[0] == 404
        status, body = http("PUT", f"{n1}/big", b"x" * (16 * 1024 * 1024 + 1))
        assert (status, b"too large" in body) == (400, True), body
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(15))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
    assert codes == [0, 0, 0], [log.read_text()[-2000:] for log in logs]
