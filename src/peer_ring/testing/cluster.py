"""Real node processes on loopback aliases, for tests, demos and benchmarks.

:class:`LocalCluster` starts ``peer-ring node`` processes, one per loopback
address (127.0.0.2, .3, ...; they bind without any setup on Linux), each with
its own log file under an artefact directory. It waits for each node's
``{"event": "ready"}`` line with a deadline, and stops, kills, pauses and
resumes nodes **by the PID it started** -- never by name.

Invariants:

* Only 127.0.0.0/8 addresses are used.
* Every wait has a deadline; :class:`NodeStartError` carries the tail of the
  node's log when a node does not come up.
* :meth:`LocalCluster.close` leaves no child process behind (SIGTERM, then
  SIGKILL after a grace period); it is idempotent and also runs from
  ``__exit__``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self


class NodeStartError(RuntimeError):
    """A node process did not report ready in time (the log tail says why)."""


@dataclass
class NodeProcess:
    """One node process of a :class:`LocalCluster`."""

    name: str
    ip: str
    port: int
    args: list[str]
    log_path: Path
    resp_port: int | None = None
    http_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    ready: dict[str, Any] = field(default_factory=dict)
    starts: int = 0
    _log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def resp(self) -> str | None:
        return f"{self.ip}:{self.resp_port}" if self.resp_port else None

    @property
    def http(self) -> str | None:
        return f"{self.ip}:{self.http_port}" if self.http_port else None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class LocalCluster:
    """N node processes on loopback aliases. See the module docstring.

    ``extra_args`` are appended to every node's command line (e.g.
    ``["--transport", "grpc"]``); ``per_node_args`` maps a node name to more.
    """

    def __init__(
        self,
        size: int,
        *,
        first_ip: int = 2,
        subnet: str = "127.0.0",
        port: int = 7400,
        resp_port: int | None = None,
        http_port: int | None = None,
        replicas: int = 3,
        partitions: int = 256,
        seeds: int = 1,
        transport: str = "tcp",
        extra_args: list[str] | None = None,
        per_node_args: dict[str, list[str]] | None = None,
        artefacts: str | Path | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        if not subnet.startswith("127."):
            raise ValueError("LocalCluster only uses loopback addresses (127.0.0.0/8)")
        self.dir = Path(artefacts) if artefacts else Path(tempfile.mkdtemp(prefix="peer-ring-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self.nodes: dict[str, NodeProcess] = {}
        ips = [f"{subnet}.{first_ip + i}" for i in range(size)]
        seed_list = ",".join(f"{ip}:{port}" for ip in ips[: max(1, seeds)])
        for i, ip in enumerate(ips, 1):
            name = f"n{i}"
            args = [
                "--id", name, "--listen", f"{ip}:{port}", "--seeds", seed_list,
                "--transport", transport, "--preset", "local",
                "--replicas", str(min(replicas, size)), "--partitions", str(partitions),
            ]  # fmt: skip
            if resp_port:
                args += ["--resp", f"{ip}:{resp_port}"]
            if http_port:
                args += ["--http", f"{ip}:{http_port}"]
            args += list(extra_args or [])
            args += list((per_node_args or {}).get(name, []))
            self.nodes[name] = NodeProcess(
                name, ip, port, args, self.dir / f"{name}.log", resp_port, http_port
            )

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self, names: list[str] | None = None) -> None:
        """Start the named nodes (default: all) and wait until each is ready."""
        todo = [self.nodes[n] for n in (names or list(self.nodes))]
        for node in todo:
            self._spawn(node)
        for node in todo:
            self._wait_ready(node)

    def _spawn(self, node: NodeProcess) -> None:
        if node.running:
            raise RuntimeError(f"{node.name} is already running (pid {node.pid})")
        if node.proc is not None:  # it exited by itself (e.g. after a leave)
            node.proc.wait()
            self._reap(node)
        node.starts += 1
        node._log = open(node.log_path, "ab")  # noqa: SIM115 - closed in _reap
        node._log.write(f"\n--- start #{node.starts} {time.ctime()} ---\n".encode())
        node._log.flush()
        # the node asks the kernel to SIGTERM it when we die (runner.py), so an
        # interrupted test run leaves no node behind
        env = dict(os.environ, PYTHONUNBUFFERED="1", PEER_RING_PARENT_PID=str(os.getpid()))
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "peer_ring", "node", *node.args],
            stdout=subprocess.PIPE,
            stderr=node._log,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def _wait_ready(self, node: NodeProcess) -> None:
        proc = node.proc
        assert proc is not None
        assert proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        os.set_blocking(proc.stdout.fileno(), False)
        buf = b""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            chunk = proc.stdout.read()
            if chunk:
                buf += chunk
                for line in buf.splitlines():
                    with contextlib.suppress(ValueError):
                        msg = json.loads(line)
                        if msg.get("event") == "ready":
                            node.ready = msg
                            return
            time.sleep(0.02)
        raise NodeStartError(
            f"{node.name} at {node.address} not ready within {self.start_timeout}s "
            f"(exit code {proc.poll()}); log tail:\n{node.log_tail()}"
        )

    def stop(self, name: str, timeout: float = 10.0) -> int | None:
        """Graceful stop (SIGTERM) of one node; returns its exit code."""
        node = self.nodes[name]
        if node.proc is None:
            return None
        if node.running:
            node.proc.send_signal(signal.SIGTERM)
        try:
            code = node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            code = node.proc.wait()
        self._reap(node)
        return code

    def kill(self, name: str) -> None:
        """kill -9 one node."""
        node = self.nodes[name]
        if node.proc is not None and node.running:
            node.proc.kill()
            node.proc.wait()
        self._reap(node)

    def pause(self, name: str) -> None:
        """SIGSTOP one node (it keeps its sockets but answers nothing)."""
        node = self.nodes[name]
        if node.proc is not None and node.running:
            os.kill(node.proc.pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """SIGCONT a paused node (idempotent)."""
        node = self.nodes[name]
        if node.proc is not None and node.running:
            os.kill(node.proc.pid, signal.SIGCONT)

    def restart(self, name: str) -> None:
        """Start a stopped or killed node again with the same arguments."""
        node = self.nodes[name]
        if node.running:
            self.stop(name)
        self._spawn(node)
        self._wait_ready(node)

    def _reap(self, node: NodeProcess) -> None:
        if node.proc is not None and node.proc.stdout is not None and not node.proc.stdout.closed:
            node.proc.stdout.close()
        if node._log is not None:
            node._log.close()
            node._log = None

    def close(self) -> None:
        """Stop every node: SIGCONT (in case paused), SIGTERM, then SIGKILL."""
        for node in self.nodes.values():
            if node.running and node.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.proc.pid, signal.SIGCONT)
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            if node.proc is None:
                continue
            try:
                node.proc.wait(10)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
            self._reap(node)

    # -- helpers -----------------------------------------------------------
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes.values()]

    def __getitem__(self, name: str) -> NodeProcess:
        return self.nodes[name]
