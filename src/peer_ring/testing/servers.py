"""Real etcd and ZooKeeper servers on loopback ports, for tests.

Each server is one child process that *this* object started: it is stopped by
its PID (``SIGTERM``, then ``SIGKILL`` after a grace period), never by name.
``restart()`` brings it back on the same port; ``wipe=True`` also empties the
data directory, which makes the server forget every lease/session (the
strongest "registry lost its state" scenario).

Invariants:

* A server only binds 127.0.0.0/8 addresses.
* :meth:`start` returns only once the server answers its health check
  (etcd ``GET /health``; ZooKeeper ``ruok`` -> ``imok``) or raises
  :class:`ServerStartError` after ``start_timeout`` -- it never waits forever.
* The async variants run the blocking work in a thread so that clients in the
  same event loop keep running while a server starts or stops.

The binaries come from Debian's ``etcd-server`` (``etcd``) and ``zookeeper``
(``/usr/share/java/zookeeper.jar``, whose manifest ``Class-Path`` names every
jar it needs) packages; :func:`etcd_missing` / :func:`zookeeper_missing` give
a reason to skip tests when they are not installed.
"""

from __future__ import annotations

import abc
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = [
    "EtcdServer",
    "ServerStartError",
    "ZooKeeperServer",
    "etcd_missing",
    "free_port",
    "zookeeper_missing",
]

ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")


class ServerStartError(RuntimeError):
    """The server process exited or did not become healthy in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def etcd_missing() -> str | None:
    """Why a real etcd cannot run here, or None when it can."""
    if shutil.which("etcd") is None:
        return "etcd binary not found (apt-get install etcd-server; `make system-deps`)"
    return None


def zookeeper_missing() -> str | None:
    """Why a real ZooKeeper cannot run here, or None when it can."""
    if shutil.which("java") is None:
        return "java not found (apt-get install zookeeper; `make system-deps`)"
    if not ZOOKEEPER_JAR.exists():
        return f"{ZOOKEEPER_JAR} not found (apt-get install zookeeper; `make system-deps`)"
    return None


class _Process(abc.ABC):
    """A child process with a log file, a health check and restart."""

    kind = "server"

    def __init__(self, base_dir: Path | None, host: str, start_timeout: float) -> None:
        if not host.startswith("127."):
            raise ValueError(f"test servers bind loopback only, got {host!r}")
        self._own_dir = base_dir is None
        self.base_dir = (
            Path(tempfile.mkdtemp(prefix=f"peer-ring-{self.kind}-"))
            if base_dir is None
            else base_dir
        )
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- to implement -------------------------------------------------------
    @abc.abstractmethod
    def _command(self) -> list[str]: ...

    @abc.abstractmethod
    def _healthy(self) -> bool: ...

    @abc.abstractmethod
    def _data_dir(self) -> Path: ...

    def _prepare(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Write config files before a start (called on every start)."""

    # -- lifecycle ----------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.base_dir / f"{self.kind}.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> None:
        if self.running:
            return
        self._data_dir().mkdir(parents=True, exist_ok=True)
        self._prepare()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._proc = subprocess.Popen(
            self._command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.base_dir,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._close_log()
                raise ServerStartError(
                    f"{self.kind} exited with {code} during start; log:\n{self.log_tail()}"
                )
            if self._healthy():
                return
            time.sleep(0.05)
        self.stop()
        raise ServerStartError(
            f"{self.kind} not healthy within {self.start_timeout}s; log:\n{self.log_tail()}"
        )

    def stop(self, *, kill: bool = False, grace: float = 5.0) -> None:
        """Stop the process this object started (by PID); idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_log()

    def restart(self, *, wipe: bool = False, kill: bool = False) -> None:
        self.stop(kill=kill)
        if wipe:
            shutil.rmtree(self._data_dir(), ignore_errors=True)
        self.start()

    def cleanup(self) -> None:
        self.stop(kill=True)
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- async variants -----------------------------------------------------
    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self, *, kill: bool = False) -> None:
        await asyncio.to_thread(self.stop, kill=kill)

    async def arestart(self, *, wipe: bool = False, kill: bool = False) -> None:
        await asyncio.to_thread(self.restart, wipe=wipe, kill=kill)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


class EtcdServer(_Process):
    """A single-member etcd on ``host:client_port`` (peer port ``peer_port``).

    With ``tls=(cert, key, ca)`` clients speak TLS (``https://``) and must
    present a certificate signed by ``ca`` (``--client-cert-auth``); the
    health probe uses ``cert``/``key`` as its own client certificate.
    """

    kind = "etcd"

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        host: str = "127.0.0.1",
        client_port: int | None = None,
        peer_port: int | None = None,
        start_timeout: float = 20.0,
        tls: tuple[str, str, str] | None = None,
    ) -> None:
        super().__init__(base_dir, host, start_timeout)
        self.client_port = client_port or free_port(host)
        self.peer_port = peer_port or free_port(host)
        self.tls = tls

    @property
    def endpoint(self) -> str:
        """``http(s)://HOST:PORT``, the form ``--etcd`` takes."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.client_port}"

    def _data_dir(self) -> Path:
        return self.base_dir / "data"

    def _command(self) -> list[str]:
        client = self.endpoint
        peer = f"http://{self.host}:{self.peer_port}"
        return [
            "etcd",
            "--name", "test",
            "--data-dir", str(self._data_dir()),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"test={peer}",
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-level", "warn",
        ] + ([] if self.tls is None else [
            "--cert-file", self.tls[0], "--key-file", self.tls[1],
            "--trusted-ca-file", self.tls[2], "--client-cert-auth",
        ])  # fmt: skip

    def _healthy(self) -> bool:
        context = None
        if self.tls is not None:
            import ssl

            context = ssl.create_default_context(cafile=self.tls[2])
            context.load_cert_chain(self.tls[0], self.tls[1])
        try:
            with urllib.request.urlopen(
                f"{self.endpoint}/health", timeout=1.0, context=context
            ) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return isinstance(body, dict) and body.get("health") == "true"


class ZooKeeperServer(_Process):
    """A standalone ZooKeeper on ``host:client_port``.

    ``min_session_timeout`` (seconds) lets tests use short sessions; the
    server's tick is a quarter of it so the negotiated timeout can be that low.
    With ``tls=(cert, key, ca)`` it also serves a TLS client port
    (:attr:`secure_hosts`, client certificates signed by ``ca`` required;
    Netty, PEM key and trust stores); the plain port stays for the probe.
    """

    kind = "zookeeper"

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        host: str = "127.0.0.1",
        client_port: int | None = None,
        min_session_timeout: float = 1.0,
        start_timeout: float = 30.0,
        tls: tuple[str, str, str] | None = None,
    ) -> None:
        super().__init__(base_dir, host, start_timeout)
        self.client_port = client_port or free_port(host)
        self.min_session_timeout = min_session_timeout
        self.tls = tls
        self.secure_port = free_port(host) if tls else None

    @property
    def secure_hosts(self) -> str:
        """``HOST:PORT`` of the TLS client port."""
        return f"{self.host}:{self.secure_port}"

    @property
    def hosts(self) -> str:
        """``HOST:PORT``, the form ``--zookeeper`` takes."""
        return f"{self.host}:{self.client_port}"

    def _data_dir(self) -> Path:
        return self.base_dir / "data"

    def _conf_dir(self) -> Path:
        return self.base_dir / "conf"

    def _prepare(self) -> None:
        conf = self._conf_dir()
        conf.mkdir(parents=True, exist_ok=True)
        min_ms = int(self.min_session_timeout * 1000)
        tick_ms = max(50, min_ms // 4)
        (conf / "zoo.cfg").write_text(
            "\n".join(
                [
                    f"tickTime={tick_ms}",
                    f"dataDir={self._data_dir()}",
                    f"clientPort={self.client_port}",
                    f"clientPortAddress={self.host}",
                    f"minSessionTimeout={min_ms}",
                    "maxSessionTimeout=120000",
                    "admin.enableServer=false",
                    "4lw.commands.whitelist=ruok,srvr,stat,mntr",
                    "forceSync=no",
                    *self._tls_lines(conf),
                    "",
                ]
            )
        )
        (conf / "log4j.properties").write_text("log4j.rootLogger=WARN, CONSOLE\n")

    def _netty_jars(self) -> list[str]:
        """Netty's codec and resolver: the TLS port needs them, and Debian's
        zookeeper.jar manifest does not list them."""
        if self.tls is None:
            return []
        jars = [ZOOKEEPER_JAR.parent / f"netty-{n}.jar" for n in ("codec", "resolver")]
        return [str(j) for j in jars if j.exists()]

    def _tls_lines(self, conf: Path) -> list[str]:
        if self.tls is None:
            return []
        cert, key, ca = self.tls
        keystore = conf / "keystore.pem"  # ZooKeeper's PEM store: key and chain in one file
        keystore.write_bytes(Path(key).read_bytes() + Path(cert).read_bytes())
        return [
            f"secureClientPort={self.secure_port}",
            f"secureClientPortAddress={self.host}",
            "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
            f"ssl.keyStore.location={keystore}",
            "ssl.keyStore.type=PEM",
            f"ssl.trustStore.location={ca}",
            "ssl.trustStore.type=PEM",
            "ssl.clientAuth=need",
        ]

    def _command(self) -> list[str]:
        conf = self._conf_dir()
        return [
            "java",
            "-Xmx128m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-cp",
            os.pathsep.join([str(conf), str(ZOOKEEPER_JAR), *self._netty_jars()]),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            str(conf / "zoo.cfg"),
        ]

    def _healthy(self) -> bool:
        # ``ruok`` answers ``imok`` before the server accepts sessions; ``srvr``
        # reports a ``Mode:`` only once it is serving.
        if self.four_letter("ruok") != "imok":
            return False
        answer = self.four_letter("srvr")
        return answer is not None and "Mode:" in answer

    def four_letter(self, word: str) -> str | None:
        """Send a four-letter command; the answer, or None when unreachable."""
        try:
            with socket.create_connection((self.host, self.client_port), timeout=1.0) as sock:
                sock.sendall(word.encode())
                chunks = []
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except OSError:
            return None
        return b"".join(chunks).decode(errors="replace")
