"""Benchmark of the peer transports: request/response throughput and latency.

Run: ``.venv/bin/python bench/transport.py`` (``--seconds 1`` for a quick run,
``--help`` for the rest). For each transport (``tcp``, ``grpc``) and event loop
(``asyncio``, ``uvloop``) an echo server runs in a subprocess on 127.0.0.2;
the client, in this process, keeps 1 and then 128 requests of ~100 bytes
outstanding for ``--seconds`` after a warm-up, on one channel. The client is
closed-loop and callback-driven (``request_future`` + a done callback issues
the next request), so the numbers are the transport's, not a task scheduler's.

``--security plain,mtls`` runs every case without and with mutual TLS
(certificates from a throwaway CA made for the run, the node-id check on),
so the cost of TLS is read off one table.

Reported per case: requests/s, p50/p99/p99.9 latency (from issuing to the
future resolving), CPU per request in the server process (from
``/proc/PID/stat``) and in this process. Prints a rich table and writes
``bench/results/transport.json``.

Targets on the 2-core reference machine: tcp >= 60,000 req/s at 128
outstanding, tcp p50 <= 0.2 ms at 1 outstanding, grpc >= 50,000 req/s at 128.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from _util import console, percentiles, progress, table, write_results
from peer_ring.transport import TLSConfig, TransportConfig, create_transport

PAYLOAD = b"x" * 100
TARGETS = {
    ("tcp", 128): ("rps", 60_000.0),
    ("tcp", 1): ("p50_ms", 0.2),
    ("grpc", 128): ("rps", 50_000.0),
}


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


# -- server process ----------------------------------------------------------


def _tls(tls_dir: str | None, name: str) -> TLSConfig | None:
    """mTLS material of ``name`` made by :func:`make_pki` (None: plaintext)."""
    if not tls_dir:
        return None
    return TLSConfig.mutual(f"{tls_dir}/{name}.pem", f"{tls_dir}/{name}.key",
                            f"{tls_dir}/ca.pem", reload_interval=None)  # fmt: skip


def make_pki(host: str) -> str:
    import tempfile

    from peer_ring.testing.pki import TestPKI

    pki = TestPKI(tempfile.mkdtemp(prefix="bench-pki-"))
    pki.issue("bench-server", ips=(host,))
    pki.issue("bench-client")
    return str(pki.dir)


async def _serve(kind: str, address: str, tls_dir: str | None = None) -> None:
    server = create_transport(
        kind, "bench-server", address, TransportConfig(tls=_tls(tls_dir, "bench-server"))
    )
    server.set_handler(lambda message, peer: message)
    await server.start()
    print("READY", server.address, flush=True)
    await asyncio.Event().wait()


def serve(kind: str, loop: str, address: str, tls_dir: str | None = None) -> None:
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        runner.run(_serve(kind, address, tls_dir))


class Server:
    """The echo server subprocess; stopped by its PID."""

    def __init__(self, kind: str, loop: str, host: str, tls_dir: str | None = None) -> None:
        self.tls_dir = tls_dir
        tls = ["--tls-dir", tls_dir] if tls_dir else []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                kind,
                "--loop",
                loop,
                "--address",
                f"{host}:0",
                *tls,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if line[:1] != ["READY"]:
            self.stop()
            raise RuntimeError(f"bench server did not start ({kind}, {loop})")
        self.address = line[1]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- client --------------------------------------------------------------------


@dataclass
class Result:
    security: str
    transport: str
    loop: str
    outstanding: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    server_cpu_us: float
    client_cpu_us: float


class _Driver:
    """Keeps ``outstanding`` requests in flight; records latencies in a window."""

    def __init__(self, client: Any, address: str, outstanding: int) -> None:
        self.client = client
        self.address = address
        self.active = outstanding
        self.recording = False
        self.stopping = False
        self.latencies: list[int] = []
        self.errors = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def issue(self) -> None:
        t0 = time.perf_counter_ns()
        fut = self.client.request_future(self.address, PAYLOAD)
        fut.add_done_callback(lambda f: self._finished(f, t0))

    def _finished(self, fut: asyncio.Future[Any], t0: int) -> None:
        t1 = time.perf_counter_ns()
        if fut.exception() is not None:
            self.errors += 1
        elif self.recording:
            self.latencies.append(t1 - t0)
        if self.stopping:
            self.active -= 1
            if self.active == 0 and not self.done.done():
                self.done.set_result(None)
        else:
            self.issue()


async def measure(
    kind: str,
    loop_name: str,
    server: Server,
    outstanding: int,
    seconds: float,
    warmup: float,
    tick: Callable[[float], None],
) -> Result:
    cfg = TransportConfig(request_timeout=30.0, tls=_tls(server.tls_dir, "bench-client"))
    client = create_transport(kind, "bench-client", "127.0.0.1:0", cfg)
    await client.start()
    try:
        await client.request(server.address, PAYLOAD)  # connect and handshake
        loop = asyncio.get_running_loop()
        driver = _Driver(client, server.address, outstanding)
        marks: dict[str, float] = {}

        def start_window() -> None:
            driver.recording = True
            marks["t0"], marks["s0"], marks["c0"] = (
                time.perf_counter(),
                server.cpu_seconds(),
                time.process_time(),
            )

        def end_window() -> None:
            driver.recording = False
            driver.stopping = True
            marks["t1"], marks["s1"], marks["c1"] = (
                time.perf_counter(),
                server.cpu_seconds(),
                time.process_time(),
            )

        begin = loop.time()

        def ticker() -> None:
            tick(min(loop.time() - begin, warmup + seconds))
            if not driver.stopping:
                loop.call_later(0.25, ticker)

        loop.call_later(warmup, start_window)
        loop.call_later(warmup + seconds, end_window)
        ticker()
        for _ in range(outstanding):
            driver.issue()
        await asyncio.wait_for(driver.done, warmup + seconds + 60.0)
        tick(warmup + seconds)
    finally:
        await client.close()
    n = len(driver.latencies)
    elapsed = marks["t1"] - marks["t0"]
    pct = percentiles(x / 1e6 for x in driver.latencies)
    return Result(
        security="mtls" if server.tls_dir else "plain",
        transport=kind,
        loop=loop_name,
        outstanding=outstanding,
        requests=n,
        errors=driver.errors,
        seconds=round(elapsed, 3),
        rps=n / elapsed if elapsed > 0 else 0.0,
        p50_ms=pct["p50"],
        p99_ms=pct["p99"],
        p999_ms=pct["p999"],
        server_cpu_us=(marks["s1"] - marks["s0"]) / n * 1e6 if n else 0.0,
        client_cpu_us=(marks["c1"] - marks["c0"]) / n * 1e6 if n else 0.0,
    )


def target_note(r: Result) -> str:
    target = TARGETS.get((r.transport, r.outstanding))
    if target is None:
        return ""
    field, bound = target
    value = getattr(r, field)
    if field == "rps":
        return f"{'ok' if value >= bound else 'MISS'} >={bound / 1000:g}k/s"
    return f"{'ok' if value <= bound else 'MISS'} p50<={bound}ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measured time per case")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured time per case")
    ap.add_argument("--runs", type=int, default=1, help="runs per case; the median is kept")
    ap.add_argument("--transports", default="tcp,grpc")
    ap.add_argument("--loops", default="asyncio,uvloop")
    ap.add_argument("--outstanding", default="1,128")
    ap.add_argument("--security", default="plain", help="plain, mtls or both: plain,mtls")
    ap.add_argument("--tls-dir", help=argparse.SUPPRESS)
    ap.add_argument("--host", default="127.0.0.2", help="loopback address of the server")
    ap.add_argument("--output", default="transport", help="results file name (no .json)")
    ap.add_argument("--serve", metavar="KIND", help=argparse.SUPPRESS)
    ap.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    ap.add_argument("--address", default="127.0.0.2:0", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.loop, args.address, args.tls_dir)
        return
    if not args.host.startswith("127."):
        ap.error("--host must be a loopback address (127.0.0.0/8)")
    kinds = args.transports.split(",")
    loops = args.loops.split(",")
    depths = [int(x) for x in args.outstanding.split(",")]
    per_case = args.warmup + args.seconds
    modes = args.security.split(",")
    if not set(modes) <= {"plain", "mtls"}:
        ap.error("--security takes plain, mtls or plain,mtls")
    tls_dir = make_pki(args.host) if "mtls" in modes else None
    total = per_case * len(kinds) * len(loops) * len(depths) * args.runs * len(modes)
    results: list[Result] = []
    runs: list[Result] = []
    with progress() as bar:
        overall = bar.add_task("all cases", total=total)
        done = 0.0
        cases = [(m, loop, k) for m in modes for loop in loops for k in kinds]
        for mode, loop_name, kind in cases:
            server = Server(kind, loop_name, args.host, tls_dir if mode == "mtls" else None)
            try:
                for depth in depths:
                    attempts: list[Result] = []
                    for run in range(args.runs):
                        name = f"{kind} {mode} {loop_name} x{depth}"
                        if args.runs > 1:
                            name += f" run {run + 1}"
                        task = bar.add_task(name, total=per_case)

                        def tick(t: float, task: Any = task, base: float = done) -> None:
                            bar.update(task, completed=t)
                            bar.update(overall, completed=base + t)

                        with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
                            r = runner.run(
                                measure(
                                    kind,
                                    loop_name,
                                    server,
                                    depth,
                                    args.seconds,
                                    args.warmup,
                                    tick,
                                )
                            )
                        done += per_case
                        attempts.append(r)
                    runs.extend(attempts)
                    attempts.sort(key=lambda x: x.rps)
                    results.append(attempts[len(attempts) // 2])
            finally:
                server.stop()
    rows = [
        (
            r.transport,
            r.security,
            r.loop,
            r.outstanding,
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.server_cpu_us,
            r.client_cpu_us,
            r.errors,
            target_note(r),
        )
        for r in results
    ]
    title = f"peer transports, one channel, ~100-byte requests, {args.seconds:g} s per case"
    if args.runs > 1:
        title += f", median of {args.runs} runs"
    console.print(
        table(
            title,
            [
                "transport",
                "security",
                "loop",
                "outstanding",
                "req/s",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "server µs/req",
                "client µs/req",
                "errors",
                "target",
            ],
            rows,
        )
    )
    path = write_results(
        args.output,
        {
            "settings": {
                "seconds": args.seconds,
                "warmup": args.warmup,
                "runs": args.runs,
                "payload_bytes": len(PAYLOAD),
                "server_host": args.host,
            },
            "results": [asdict(r) for r in results],
            "all_runs": [asdict(r) for r in runs],
            "median_rps_by_case": {
                f"{r.transport}/{r.loop}/{r.outstanding}": statistics.median(
                    x.rps
                    for x in runs
                    if (x.transport, x.loop, x.outstanding) == (r.transport, r.loop, r.outstanding)
                )
                for r in results
            },
        },
    )
    console.print(f"results written to {path}")


if __name__ == "__main__":
    main()
