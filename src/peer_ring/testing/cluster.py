"""Real node processes on loopback aliases, for tests, demos and benchmarks.

:class:`LocalCluster` starts ``peer-ring node`` processes, one per loopback
address (127.0.0.2, .3, ...; they bind without any setup on Linux), each with
its own log file under an artefact directory. It waits for each node's
``{"event": "ready"}`` line with a deadline, and stops, kills, pauses and
resumes nodes **by the PID it started** -- never by name. It also scales:
:meth:`LocalCluster.add` starts one more node on the next address (a join),
:meth:`LocalCluster.decommission` makes one leave (hand over, leave, exit).

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
    _out: bytes = b""

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


def node_args(
    name: str,
    listen: str,
    seeds: list[str],
    *,
    transport: str = "tcp",
    replicas: int = 3,
    partitions: int = 256,
    resp: str | None = None,
    http: str | None = None,
    extra_args: list[str] | None = None,
) -> list[str]:
    """The ``peer-ring node`` arguments of one local node (preset ``local``)."""
    args = [
        "--id", name, "--listen", listen, "--seeds", ",".join(seeds),
        "--transport", transport, "--preset", "local",
        "--replicas", str(replicas), "--partitions", str(partitions),
    ]  # fmt: skip
    if resp:
        args += ["--resp", resp]
    if http:
        args += ["--http", http]
    return args + list(extra_args or [])


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
        #: nodes taken out by :meth:`decommission` (their logs stay in ``dir``)
        self.removed: dict[str, NodeProcess] = {}
        self.subnet = subnet
        self.first_ip = first_ip
        self.port = port
        self.resp_port = resp_port
        self.http_port = http_port
        #: N of every node, fixed at construction (nodes added later use it too)
        self.replicas = min(replicas, size) if size else replicas
        self.partitions = partitions
        self.transport = transport
        self.extra_args = list(extra_args or [])
        self.per_node_args = dict(per_node_args or {})
        self._added = size
        ips = [f"{subnet}.{first_ip + i}" for i in range(size)]
        seed_list = [f"{ip}:{port}" for ip in ips[: max(1, seeds)]]
        for i, ip in enumerate(ips, 1):
            self._define(f"n{i}", ip, seed_list)

    def _define(self, name: str, ip: str, seeds: list[str]) -> NodeProcess:
        args = node_args(
            name,
            f"{ip}:{self.port}",
            seeds,
            transport=self.transport,
            replicas=self.replicas,
            partitions=self.partitions,
            resp=f"{ip}:{self.resp_port}" if self.resp_port else None,
            http=f"{ip}:{self.http_port}" if self.http_port else None,
            extra_args=[*self.extra_args, *self.per_node_args.get(name, [])],
        )
        node = NodeProcess(
            name, ip, self.port, args, self.dir / f"{name}.log", self.resp_port, self.http_port
        )
        self.nodes[name] = node
        return node

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

    def spawn(self, name: str) -> None:
        """Start one node without waiting for it (see :meth:`poll_ready`)."""
        self._spawn(self.nodes[name])

    def _spawn(self, node: NodeProcess) -> None:
        if node.running:
            raise RuntimeError(f"{node.name} is already running (pid {node.pid})")
        if node.proc is not None:  # it exited by itself (e.g. after a leave)
            node.proc.wait()
            self._reap(node)
        node.starts += 1
        node.ready = {}
        node._out = b""
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
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.poll_ready(node):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        raise NodeStartError(
            f"{node.name} at {node.address} not ready within {self.start_timeout}s "
            f"(exit code {proc.poll()}); log tail:\n{node.log_tail()}"
        )

    def poll_ready(self, node: NodeProcess) -> bool:
        """Read what the node printed so far, without blocking; True once it
        printed its ready line (kept in :attr:`NodeProcess.ready`)."""
        proc = node.proc
        if node.ready:
            return True
        if proc is None or proc.stdout is None or proc.stdout.closed:
            return False
        os.set_blocking(proc.stdout.fileno(), False)
        chunk = proc.stdout.read()
        if chunk:
            node._out += chunk
            for line in node._out.splitlines():
                with contextlib.suppress(ValueError):
                    msg = json.loads(line)
                    if msg.get("event") == "ready":
                        node.ready = msg
                        return True
        return False

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

    # -- scaling -----------------------------------------------------------
    def add(self, *, start: bool = True) -> NodeProcess:
        """Define (and by default start) one more node: the next name and address.

        Its seeds are the running nodes (the first ones of the original seed
        list may have left). Returns once the new node reported ready, which
        a node does after its bootstrap: the partitions it owns arrived by
        transfer or were synced from their co-owners.
        """
        self._added += 1
        name = f"n{self._added}"
        octet = self.first_ip + self._added - 1
        if octet > 254:
            raise ValueError(f"no loopback address left in {self.subnet}.0/24")
        seeds = [n.address for n in self.nodes.values() if n.running][:3]
        node = self._define(name, f"{self.subnet}.{octet}", seeds or [self.addresses()[0]])
        if start:
            self.start([name])
        return node

    def decommission(self, name: str, timeout: float = 120.0) -> dict[str, Any]:
        """Decommission one node (peer op ``leave``): it hands every partition to
        the owners of the ring without it, leaves, and exits; then it is moved
        from :attr:`nodes` to :attr:`removed`. Returns the node's answer
        (``node``, ``transfers``, ``records``). Raises
        :class:`~peer_ring.errors.PeerRingError` when the leave fails, and
        :class:`RuntimeError` when the process does not exit in time."""
        import asyncio

        from peer_ring import wire
        from peer_ring.transport import request_once

        node = self.nodes[name]
        answer: dict[str, Any] = asyncio.run(
            request_once(node.address, wire.leave_frame(), timeout=timeout)
        )
        assert node.proc is not None
        try:
            node.proc.wait(timeout=30)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{name} did not exit after its leave") from exc
        self._reap(node)
        self.removed[name] = self.nodes.pop(name)
        return answer

    # -- helpers -----------------------------------------------------------
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes.values()]

    def __getitem__(self, name: str) -> NodeProcess:
        return self.nodes[name]
