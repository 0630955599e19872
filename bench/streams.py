"""Streams and pub/sub, side by side: peer-ring, redis-server and NATS JetStream.

Run (inside a private network namespace on a shared machine)::

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/streams.py'
    .venv/bin/python bench/streams.py --seconds 5 --clients 32 --only peer-ring,redis
    .venv/bin/python bench/streams.py --only peer-ring,redis --cases fanout --repeat 3

In one run, with the same client concurrency (``--clients`` connections,
each a closed loop):

* **peer-ring**: a 3-node cluster, N=3, W=2 (``LocalCluster`` on 127.78.0.x,
  RESP). Acknowledged ``XADD`` (unpipelined) over ``--streams`` streams;
  consuming the same entries through one consumer group per stream
  (``XREADGROUP COUNT 10`` + ``XACK``); ``PUBLISH`` at a fixed offered rate
  (``--publish-rate``) fanned out to 10 subscriber processes spread over the
  3 nodes: messages delivered per second and the publish-to-delivery latency
  (p50/p99).
* **redis-server** (``--save '' --appendonly no``, 127.78.1.1): the same,
  plus ``XADD`` pipelined 16 deep.
* **NATS JetStream**: three ``nats-server -js`` on 127.78.2.x in one
  cluster, a stream with 3 replicas; acknowledged publishes (``js.publish``)
  and a pull consumer fetching 10 and acking each.

Targets (issue 15): peer-ring's acknowledged XADD >= 0.25x redis-server's
unpipelined XADD and >= 1x JetStream's acknowledged publishes; consuming
through a group >= the same; PUBLISH with subscribers on all 3 nodes >=
20,000 messages/s delivered with p99 <= 10 ms. Prints a table and writes
``bench/results/streams.json``. Every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from _util import console, percentiles, table, write_results
from peer_ring.testing.cluster import LocalCluster

PEER_SUBNET = "127.78.0"
REDIS_HOST = "127.78.1.1"
NATS_HOSTS = ["127.78.2.1", "127.78.2.2", "127.78.2.3"]
RESP_PORT = 6392
FIELDS: dict[Any, Any] = {"payload": "x" * 64}


async def closed_loop(
    clients: int, seconds: float, op: Callable[[int], Awaitable[int]]
) -> tuple[float, list[float]]:
    """``clients`` loops calling ``op(i)`` (which returns how many items it did)
    for ``seconds``; items per second and each call's latency."""
    done = 0
    lat: list[float] = []
    stop = time.perf_counter() + seconds

    async def loop(i: int) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            n = await op(i)  # not `done += await ...`: that reads `done` before the await
            done += n
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(clients)))
    return done / (time.perf_counter() - t0), lat


async def redis_like(
    name: str,
    hosts: list[str],
    port: int,
    args: argparse.Namespace,
    pipelined: bool,
    servers: list[int],
) -> list[dict[str, Any]]:
    """XADD, group consumption and PUBLISH fan-out against RESP ``hosts``
    (the server processes are ``servers``: PIDs, for the CPU accounting)."""
    rows: list[dict[str, Any]] = []
    cases = set(args.cases.split(","))
    conns = [
        aioredis.Redis(host=hosts[i % len(hosts)], port=port, socket_timeout=30)
        for i in range(args.clients)
    ]
    streams = [f"bench:{k}" for k in range(args.streams)]
    try:
        for s in streams:
            with contextlib.suppress(Exception):
                await conns[0].xgroup_create(s, "g", id="0", mkstream=True)

        async def xadd(i: int) -> int:
            await conns[i].xadd(streams[i % len(streams)], FIELDS)
            return 1

        if "xadd" in cases:
            rate, lat = await closed_loop(args.clients, args.seconds, xadd)
            rows.append(
                {"system": name, "case": "XADD acknowledged", "per_s": rate, **percentiles(lat)}
            )
        if pipelined and "pipelined" in cases:

            async def xadd16(i: int) -> int:
                pipe = conns[i].pipeline(transaction=False)
                for _ in range(16):
                    pipe.xadd(streams[i % len(streams)], FIELDS)
                await pipe.execute()
                return 16

            rate, lat = await closed_loop(args.clients, args.seconds, xadd16)
            rows.append(
                {"system": name, "case": "XADD pipelined x16", "per_s": rate, **percentiles(lat)}
            )

        async def consume(i: int) -> int:
            s = streams[i % len(streams)]
            got: Any = await conns[i].xreadgroup("g", f"c{i}", {s: ">"}, count=10)
            ids = [e[0] for _, rows_ in got for e in rows_] if got else []
            if ids:
                await conns[i].xack(s, "g", *ids)
            return len(ids)

        if "consume" in cases:
            rate, lat = await closed_loop(args.clients, args.seconds, consume)
            rows.append(
                {"system": name, "case": "group consume + ack", "per_s": rate, **percentiles(lat)}
            )
        if "fanout" in cases:
            for _ in range(args.repeat):
                rows.append(await fanout(name, hosts, port, args, servers))
    finally:
        for c in conns:
            await c.aclose()
    return rows


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (0 when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fanout(
    name: str, hosts: list[str], port: int, args: argparse.Namespace, servers: list[int]
) -> dict[str, Any]:
    """PUBLISH at a fixed offered rate to 10 subscribers spread over ``hosts``,
    each subscriber a process of its own: deliveries/s and publish-to-delivery
    latency.

    The subscribers run in their own processes (``--subscriber``) so that the
    latency measured is the system's, not that of one client process parsing
    every delivery (with publishers and subscribers in one redis-py process,
    redis-server itself showed a p99 of 16 ms). The publishers are paced
    (``--publish-rate`` messages/s over ``--fanout-publishers`` connections,
    each on a fixed schedule) rather than a closed loop, so that a slow
    delivery is counted against the schedule instead of slowing the offered
    load (no coordinated omission). Timestamps are ``time.monotonic()``,
    one clock for every process of the machine.

    ``--fanout-client raw`` (the default) uses a minimal asyncio RESP client
    for the subscribers and the publishers (subscriber processes run uvloop
    when it is installed), ``redis-py`` uses redis-py's
    asyncio client: with redis-py, the 10 subscriber processes and the
    publisher process alone need about as much CPU as the machine's two
    cores (see the CPU columns: ``servers``, ``subscribers`` and ``publisher``
    are CPU seconds per second of the run, summed over the group's
    processes)."""
    subs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--subscriber",
            f"{hosts[i % len(hosts)]}:{port}",
            "--fanout-client",
            args.fanout_client,
            stdout=subprocess.PIPE,
        )
        for i in range(10)
    ]
    try:
        for proc in subs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if line.strip() != b"ready":
                raise RuntimeError(f"a subscriber did not start: {line!r}")
        publishers = max(1, args.fanout_publishers)
        interval = publishers / args.publish_rate
        raw = args.fanout_client == "raw"
        conns: list[Any] = [
            await RawResp.connect(hosts[i % len(hosts)], port)
            if raw
            else aioredis.Redis(host=hosts[i % len(hosts)], port=port)
            for i in range(publishers)
        ]
        published = 0
        cpu_pids = {
            "servers": servers,
            "subscribers": [p.pid for p in subs],
            "publisher": [os.getpid()],
        }
        cpu0 = {g: sum(cpu_seconds(p) for p in pids) for g, pids in cpu_pids.items()}
        t0 = time.monotonic()
        stop_at = t0 + args.seconds

        async def publish(i: int) -> None:
            nonlocal published
            due = t0 + i * interval / publishers
            while due < stop_at:
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                # the scheduled time, not the send time: a publisher that fell
                # behind counts its lateness in the latency
                await conns[i].publish("bench-fanout", repr(due))
                published += 1
                due += interval

        await asyncio.gather(*(publish(i) for i in range(publishers)))
        elapsed = time.monotonic() - t0
        cpu = {
            g: (sum(cpu_seconds(p) for p in pids) - cpu0[g]) / elapsed
            for g, pids in cpu_pids.items()
        }
        await conns[0].publish("bench-fanout", "stop")
        for c in conns:
            await c.aclose()
        lat: list[float] = []
        delivered = 0
        for proc in subs:
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            got = json.loads(out.decode().strip().splitlines()[-1])
            delivered += got["count"]
            lat += got["lat"]
    finally:
        for proc in subs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return {
        "system": name,
        "case": f"PUBLISH at {args.publish_rate:,}/s to 10 subscriber processes (deliveries)",
        "per_s": delivered / elapsed,
        "published_per_s": published / elapsed,
        "expected_deliveries": published * 10,
        "delivered": delivered,
        "client": args.fanout_client,
        "cpu": cpu,
        **percentiles(lat),
    }


_INCOMPLETE = object()


def _parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One RESP2/RESP3 value at ``pos`` of ``buf``: (value, next position), or
    (``_INCOMPLETE``, pos) when ``buf`` does not hold all of it yet."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return _INCOMPLETE, pos
    kind = buf[pos]
    if kind in b"*>":
        n = int(buf[pos + 1 : end])
        items = []
        p = end + 2
        for _ in range(n):
            item, p = _parse(buf, p)
            if item is _INCOMPLETE:
                return _INCOMPLETE, pos
            items.append(item)
        return items, p
    if kind == ord("$"):
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        if len(buf) < end + n + 4:
            return _INCOMPLETE, pos
        return bytes(buf[end + 2 : end + 2 + n]), end + n + 4
    if kind == ord("-"):
        raise RuntimeError(bytes(buf[pos + 1 : end]).decode())
    return bytes(buf[pos + 1 : end]), end + 2  # + : _ and the other simple types


class RawResp(asyncio.Protocol):
    """A minimal RESP2 client for the fan-out case: one request in flight per
    connection (``publish``) or a subscriber that records each message's
    latency (``subscribe``). A few microseconds per message where redis-py's
    asyncio client needs tens: the harness must not be what is measured."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.reply: asyncio.Future[Any] | None = None
        self.lat: list[float] | None = None
        self.stopped = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(cls, host: str, port: int) -> RawResp:
        _, proto = await asyncio.get_running_loop().create_connection(cls, host, port)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(ConnectionError("connection lost"))
        if not self.stopped.done():
            self.stopped.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buf
        buf += data
        pos = 0
        while pos < len(buf):
            item, pos2 = _parse(buf, pos)
            if item is _INCOMPLETE:
                break
            pos = pos2
            if self.lat is not None and isinstance(item, list) and item[0] == b"message":
                if item[2] == b"stop":
                    if not self.stopped.done():
                        self.stopped.set_result(None)
                else:
                    self.lat.append(now - float(item[2]))
            elif self.reply is not None and not self.reply.done():
                self.reply.set_result(item)
        del buf[:pos]

    async def call(self, *args: bytes | str) -> Any:
        assert self.transport is not None
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a.encode() if isinstance(a, str) else a
            parts.append(b"$%d\r\n%b\r\n" % (len(b), b))
        self.reply = asyncio.get_running_loop().create_future()
        self.transport.write(b"".join(parts))
        return await self.reply

    async def publish(self, channel: str, data: str) -> Any:
        return await self.call("PUBLISH", channel, data)

    async def aclose(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def subscriber(address: str, client: str) -> None:
    """``--subscriber HOST:PORT``: subscribe to the fan-out channel, say
    ``ready``, collect each message's latency until ``stop``, print them."""
    host, port = address.rsplit(":", 1)
    lat: list[float] = []
    if client == "raw":
        sub = await RawResp.connect(host, int(port))
        await sub.call("SUBSCRIBE", "bench-fanout")  # the confirmation
        sub.lat = lat
        print("ready", flush=True)
        with contextlib.suppress(TimeoutError):  # bounded even if "stop" never comes
            await asyncio.wait_for(sub.stopped, 600)
        await sub.aclose()
        print(json.dumps({"count": len(lat), "lat": lat}), flush=True)
        return
    conn = aioredis.Redis(host=host, port=int(port))
    ps = conn.pubsub()
    await ps.subscribe("bench-fanout")
    await ps.get_message(timeout=5.0)  # the subscribe confirmation
    print("ready", flush=True)
    deadline = time.monotonic() + 600  # bounded even if "stop" never comes
    while time.monotonic() < deadline:
        msg = await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if msg is None:
            continue
        if msg["data"] == b"stop":
            break
        lat.append(time.monotonic() - float(msg["data"]))
    await ps.aclose()
    await conn.aclose()
    print(json.dumps({"count": len(lat), "lat": lat}), flush=True)


async def jetstream(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Three clustered nats-server -js, a 3-replica stream: publish and pull-consume."""
    import nats  # nats-py; imported here so the other parts run without it

    if shutil.which("nats-server") is None:
        console.print("[yellow]nats-server not installed: JetStream skipped")
        return []
    routes = ",".join(f"nats://{h}:6222" for h in NATS_HOSTS)
    procs = []
    for k, h in enumerate(NATS_HOSTS):
        cmd = [
            "nats-server", "-js", "-sd", str(tmp / f"js{k}"), "-n", f"js{k}", "-a", h, "-p", "4222",
            "--cluster", f"nats://{h}:6222", "--cluster_name", "bench", "--routes", routes,
        ]  # fmt: skip
        procs.append(
            await asyncio.create_subprocess_exec(
                *cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    rows: list[dict[str, Any]] = []
    try:
        ncs = []
        for i in range(args.clients):
            for _ in range(100):
                try:
                    ncs.append(
                        await nats.connect(
                            f"nats://{NATS_HOSTS[i % 3]}:4222",
                            error_cb=_quiet,
                            max_reconnect_attempts=0,
                        )
                    )
                    break
                except Exception:
                    await asyncio.sleep(0.1)  # servers starting
        js = [nc.jetstream() for nc in ncs]
        for _ in range(100):  # the meta leader is elected a moment after start
            try:
                await js[0].add_stream(name="bench", subjects=["bench.*"], num_replicas=3)
                break
            except Exception:
                await asyncio.sleep(0.2)

        async def pub(i: int) -> int:
            await js[i].publish(f"bench.{i % args.streams}", b"x" * 64)
            return 1

        rate, lat = await closed_loop(args.clients, args.seconds, pub)
        rows.append(
            {
                "system": "JetStream R3",
                "case": "publish acknowledged",
                "per_s": rate,
                **percentiles(lat),
            }
        )
        subs = [await j.pull_subscribe("bench.*", durable="g") for j in js]

        async def consume(i: int) -> int:
            try:
                msgs = await subs[i].fetch(10, timeout=1.0)
            except Exception:
                return 0
            for m in msgs:
                await m.ack()
            return len(msgs)

        rate, lat = await closed_loop(args.clients, args.seconds, consume)
        rows.append(
            {
                "system": "JetStream R3",
                "case": "pull consume + ack",
                "per_s": rate,
                **percentiles(lat),
            }
        )
        for nc in ncs:
            await nc.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                p.kill()
    return rows


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback: connection attempts while the servers start are expected."""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--only", default="peer-ring,redis,jetstream")
    parser.add_argument(
        "--publish-rate", type=int, default=2500, help="PUBLISH messages/s offered (fan-out case)"
    )
    parser.add_argument("--fanout-publishers", type=int, default=32)
    parser.add_argument(
        "--fanout-client",
        choices=["raw", "redis-py"],
        default="raw",
        help="client of the fan-out case's subscribers and publishers (see fanout())",
    )
    parser.add_argument(
        "--cases",
        default="xadd,pipelined,consume,fanout",
        help="RESP cases to run (comma-separated subset of the default)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of the fan-out case (median and spread)"
    )
    parser.add_argument("--subscriber", metavar="HOST:PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        await subscriber(args.subscriber, args.fanout_client)
        return
    if not 1 <= args.publish_rate <= 100_000:
        parser.error("--publish-rate 1..100000")
    only = set(args.only.split(","))
    if "jetstream" in only and importlib.util.find_spec("nats") is None:
        parser.error("the JetStream part needs nats-py: `make bench` (or --only peer-ring,redis)")
    if "jetstream" in only and shutil.which("nats-server") is None:
        parser.error("the JetStream part needs nats-server (apt-get install nats-server)")
    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    if "peer-ring" in only:
        with LocalCluster(
            3, subnet=PEER_SUBNET, resp_port=RESP_PORT, artefacts=tmp / "peer-ring",
            extra_args=["--log-level", "WARNING"],
        ) as cluster:  # fmt: skip
            hosts = [cluster[n].ip for n in ("n1", "n2", "n3")]
            pids = [cluster[n].pid or 0 for n in ("n1", "n2", "n3")]
            rows += await redis_like(
                "peer-ring N3 W2", hosts, RESP_PORT, args, pipelined=True, servers=pids
            )
    if "redis" in only and shutil.which("redis-server"):
        proc = await asyncio.create_subprocess_exec(
            "redis-server",
            "--bind",
            REDIS_HOST,
            "--port",
            str(RESP_PORT),
            "--save",
            "",
            "--appendonly",
            "no",
            stdout=subprocess.DEVNULL,
        )
        try:
            probe = aioredis.Redis(host=REDIS_HOST, port=RESP_PORT)
            for _ in range(100):
                with contextlib.suppress(Exception):
                    await probe.ping()
                    break
                await asyncio.sleep(0.05)  # starting
            await probe.aclose()
            rows += await redis_like(
                "redis-server", [REDIS_HOST], RESP_PORT, args, pipelined=True, servers=[proc.pid]
            )
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
    if "jetstream" in only:
        rows += await jetstream(args, tmp)
    console.print(
        table(
            "streams and pub/sub",
            ["system", "case", "per_s", "p50", "p99", "p99.9", "CPU servers/subs/publisher"],
            [
                [
                    r["system"],
                    r["case"],
                    f"{r['per_s']:.0f}",
                    f"{r['p50'] * 1e3:.2f} ms",
                    f"{r['p99'] * 1e3:.2f} ms",
                    f"{r['p999'] * 1e3:.2f} ms",
                    " / ".join(f"{v:.2f}" for v in r["cpu"].values()) if "cpu" in r else "",
                ]
                for r in rows
            ],
        )
    )
    write_results("streams", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    if "--subscriber" in sys.argv and importlib.util.find_spec("uvloop") is not None:
        import uvloop  # a subscriber process: the harness's own CPU kept small

        uvloop.run(main())
    else:
        asyncio.run(main())
