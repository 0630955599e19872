"""A bounded load generator inside a node process: the ``bench`` peer op.

``bench/kv.py --embedded`` (and ``bench/scale.py``, ``bench/rebalance.py``,
the memory part of ``bench/kv.py``) measure the replicated KV store as an
application embedding a node sees it, with the load generated in the node's
own process so no client connection or serialization is measured. The node
runner (``peer-ring node``) registers :func:`bench_op` as peer operation
``["bench", spec]`` only when the node runs with ``--testing``: a production
node never answers it. Bad specs raise
:class:`~peer_ring.errors.InvalidRequest`; every run is bounded by the
``BENCH_MAX_*`` limits below.
"""

from __future__ import annotations

import array
import asyncio
import gc
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from peer_ring.apps.kv.api import KVApi
from peer_ring.errors import InvalidRequest

__all__ = [
    "BENCH_MAX_CONCURRENCY",
    "BENCH_MAX_OPS",
    "BENCH_MAX_SAMPLES",
    "BENCH_MAX_SECONDS",
    "bench_op",
    "parse_spec",
]

#: Upper bounds of one ``bench`` peer op (it runs inside a node process).
BENCH_MAX_SECONDS = 120.0
BENCH_MAX_OPS = 5_000_000
BENCH_MAX_CONCURRENCY = 4096
BENCH_MAX_SAMPLES = 200_000
#: Key spaces up to this size are formatted once per run (larger: on each draw).
_BUILT_KEYS = 1 << 20


def parse_spec(raw: Any) -> dict[str, Any]:
    """Validate a ``bench`` spec; bad input raises :class:`InvalidRequest`."""
    if type(raw) is not dict:
        raise InvalidRequest("bench: expected [bench, {spec}]")
    spec: dict[str, Any] = {
        "seconds": 3.0, "warmup": 0.5, "ops": 1_000_000, "concurrency": 64,
        "value_size": 100, "read_ratio": 0.5, "keyspace": 10_000, "prefix": b"k",
        "preload": [0, 0], "profile": None, "seed": 0, "batch": 1, "owned": False,
    }  # fmt: skip
    unknown = set(raw) - set(spec)
    if unknown:
        raise InvalidRequest(f"bench: unknown spec fields {sorted(unknown)}")
    spec.update(raw)
    for name, lo, hi in (
        ("seconds", 0.0, BENCH_MAX_SECONDS),
        ("warmup", 0.0, BENCH_MAX_SECONDS),
        ("read_ratio", 0.0, 1.0),
    ):
        v = spec[name]
        if type(v) not in (int, float) or not lo <= v <= hi:
            raise InvalidRequest(f"bench: {name} must be a number in [{lo}, {hi}]")
    for name, lo, hi in (
        ("ops", 0, BENCH_MAX_OPS),
        ("concurrency", 1, BENCH_MAX_CONCURRENCY),
        ("value_size", 0, 16 * 1024 * 1024),
        ("keyspace", 1, 100_000_000),
        ("seed", 0, 2**32),
        ("batch", 1, 4096),
    ):
        v = spec[name]
        if type(v) is not int or not lo <= v <= hi:
            raise InvalidRequest(f"bench: {name} must be an integer in [{lo}, {hi}]")
    pre = spec["preload"]
    if (
        type(pre) is not list
        or len(pre) != 2
        or any(type(x) is not int for x in pre)
        or not 0 <= pre[0] <= pre[1] <= 100_000_000
    ):
        raise InvalidRequest("bench: preload must be [start, stop) key indexes")
    if type(spec["prefix"]) is not bytes or len(spec["prefix"]) > 64:
        raise InvalidRequest("bench: prefix must be at most 64 bytes")
    if type(spec["owned"]) is not bool:
        raise InvalidRequest("bench: owned must be true or false")
    if spec["profile"] is not None and type(spec["profile"]) is not str:
        raise InvalidRequest("bench: profile must be a file path or nil")
    return spec


def bench_op(kv: KVApi) -> Callable[[list[Any], Any], Awaitable[dict[str, Any]]]:
    """Peer op ``["bench", spec]``, registered only with ``--testing``.

    A bounded load generator inside the node process, against this node's
    embedded :class:`~peer_ring.apps.kv.store.KVStore` API (every operation
    is a full quorum read or write, as from an application): first writes
    keys ``preload = [start, stop)`` (unmeasured), then ``concurrency``
    closed-loop workers issue gets (probability ``read_ratio``) and puts of
    ``value_size`` bytes on uniformly random keys of ``keyspace`` for
    ``warmup`` + ``seconds`` seconds or until ``ops`` operations finished,
    whichever comes first. Answers the measured window's counts, latency
    percentiles (µs), up to 200,000 latency samples (µs, ``array('I')``
    bytes, evenly strided), a histogram of *every* measured latency
    (``hist``: ``{"per_decade": k, "first": i, "counts": [...]}``, where
    ``counts[j]`` is the number of operations with a latency in
    ``[10**((i+j)/k), 10**((i+j+1)/k))`` µs and bucket 0 also holds 0 µs;
    log-spaced, ~12 % wide at k=20), the garbage collector's pauses in the
    window (``gc``: per generation ``[count, total s, max s]``), the process
    CPU seconds used (``cpu``: user+system; ``cpu_sys``: system) and the
    wall time. With ``profile`` (a path), cProfile
    runs over the window and dumps its stats there. With ``batch`` K > 1 each
    operation of a worker is a ``get_many`` or ``put_many`` of K random keys
    (counted as K operations of one latency each: ``ops`` counts keys). With
    ``owned`` the workers pick only keys whose preference list holds this
    node (no forwarded write, one local replica per read: the cost of a
    coordinator outside the preference list, measured by its absence).
    """

    async def handle(message: list[Any], peer: Any) -> dict[str, Any]:
        if len(message) != 2:
            raise InvalidRequest("bench: expected [bench, {spec}]")
        spec = parse_spec(message[1])
        rng = random.Random(spec["seed"] or None)
        prefix: bytes = spec["prefix"]
        value = b"v" * spec["value_size"]
        conc: int = spec["concurrency"]
        start, stop = spec["preload"]
        next_key = iter(range(start, stop))

        async def preload() -> None:
            for n, i in enumerate(next_key, 1):
                await kv.put(prefix + b"%010d" % i, value)
                if n % 64 == 0:
                    await asyncio.sleep(0)  # W=1 puts can finish without yielding

        t0 = time.perf_counter()
        await asyncio.gather(*(preload() for _ in range(min(conc, max(1, stop - start)))))
        preload_s = time.perf_counter() - t0

        keyspace: int = spec["keyspace"]
        read_ratio: float = spec["read_ratio"]
        max_ops: int = spec["ops"]
        lat: list[int] = []
        errors: dict[str, int] = {}
        counts = {"get": 0, "put": 0, "hit": 0}
        measuring = False
        issued = 0
        begin_at = time.monotonic() + spec["warmup"]
        end = begin_at + spec["seconds"]

        batch: int = spec["batch"]
        # the key indexes workers draw from: all, or those this node replicates
        pool: range | list[int] = range(keyspace)
        app = getattr(kv, "app", None)
        if spec["owned"] and app is not None:
            me = app.node_id
            pool = [
                i
                for i in range(keyspace)
                if me in app.owners(app.partition_for(prefix + b"%010d" % i))
            ]
            if not pool:
                raise InvalidRequest("bench: this node owns none of the keys")

        # The keys (and put items) drawn from, built once: drawing a batch is
        # then one ``choices`` call instead of a ``choice`` and a formatted
        # key per key (the generator's own cost, which the figures are not
        # about). A large key space, or a run without operations (the memory
        # bench's preload: its RSS must not hold the list), formats on draw.
        keys: Sequence[bytes] = _Keys(prefix, pool)
        items: Sequence[tuple[bytes, bytes]] = _Items(prefix, pool, value)
        if max_ops and len(pool) <= _BUILT_KEYS:
            keys = list(keys)
            items = [(k, value) for k in keys]

        async def worker() -> None:
            nonlocal issued
            clock = time.perf_counter_ns
            get, put = kv.get, kv.put
            get_many, put_many = kv.get_many, kv.put_many
            rand = rng.random
            choices = rng.choices
            size = len(keys)
            n = 0
            while issued < max_ops and time.monotonic() < end:
                if not measuring and time.monotonic() >= begin_at:
                    begin()  # checked inline: a loop whose ops finish locally never yields
                n += 1
                if n % 64 == 0:
                    await asyncio.sleep(0)  # let the other workers and the node run
                read = rand() < read_ratio
                if batch > 1:
                    if measuring:
                        issued += batch
                    try:
                        if read:
                            some = choices(keys, k=batch)
                            t = clock()
                            values = await get_many(some)
                        else:
                            pairs = choices(items, k=batch)
                            t = clock()
                            await put_many(pairs)
                    except Exception as exc:  # counted and reported, never fatal
                        name = type(exc).__name__
                        errors[name] = errors.get(name, 0) + 1
                        continue
                    if measuring:
                        took = (clock() - t) // 1000
                        lat.extend([took] * batch)
                        if read:
                            counts["get"] += batch
                            counts["hit"] += batch - values.count(None)
                        else:
                            counts["put"] += batch
                    continue
                key = keys[int(rand() * size)]
                if measuring:
                    issued += 1
                t = clock()
                try:
                    if read:
                        got = await get(key)
                    else:
                        await put(key, value)
                except Exception as exc:  # counted and reported, never fatal
                    name = type(exc).__name__
                    errors[name] = errors.get(name, 0) + 1
                    continue
                if measuring:
                    lat.append((clock() - t) // 1000)
                    if read:
                        counts["get"] += 1
                        counts["hit"] += got is not None
                    else:
                        counts["put"] += 1

        profiler: Any = None
        window: dict[str, float] = {}

        def begin() -> None:
            nonlocal measuring, profiler
            measuring = True
            errors.clear()
            if spec["profile"]:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            window["cpu"] = time.process_time()
            window["sys"] = os.times().system
            window["wall"] = time.perf_counter()
            gc.callbacks.append(on_gc)

        # garbage-collector pauses in the window, per generation: [count, total s, max s]
        gc_pauses = [[0, 0.0, 0.0] for _ in range(3)]
        gc_started = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_started[0] = time.perf_counter()
                return
            took = time.perf_counter() - gc_started[0]
            g = gc_pauses[info["generation"]]
            g[0] += 1
            g[1] += took
            g[2] = max(g[2], took)

        try:
            await asyncio.gather(*(worker() for _ in range(conc)))
            if not measuring:
                begin()
        finally:
            if on_gc in gc.callbacks:
                gc.callbacks.remove(on_gc)
        cpu = time.process_time() - window["cpu"]
        cpu_sys = os.times().system - window["sys"]
        wall = time.perf_counter() - window["wall"]
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(spec["profile"])
        done = len(lat)
        ordered = sorted(lat)

        def pct(p: float) -> int:
            if not ordered:
                return 0
            return ordered[min(done - 1, max(0, int(p / 100.0 * done + 0.999999) - 1))]

        # log-spaced histogram of all latencies, built after the window (no per-op cost)
        per_decade = 20
        buckets: dict[int, int] = {}
        run_start = 0
        for i in range(1, done + 1):  # one log10 per distinct latency
            if i == done or ordered[i] != ordered[run_start]:
                us = ordered[run_start]
                b = int(per_decade * math.log10(us) + 1e-9) if us > 1 else 0
                buckets[b] = buckets.get(b, 0) + i - run_start
                run_start = i
        first = min(buckets, default=0)
        hist = {
            "per_decade": per_decade,
            "first": first,
            "counts": [buckets.get(b, 0) for b in range(first, max(buckets, default=-1) + 1)],
        }
        step = max(1, done // BENCH_MAX_SAMPLES)
        return {
            "ops": done,
            **counts,
            "errors": errors,
            "wall": wall,
            "cpu": cpu,
            "cpu_sys": cpu_sys,
            "preload_s": preload_s,
            "p50_us": pct(50),
            "p99_us": pct(99),
            "p999_us": pct(99.9),
            "samples": array.array("I", lat[::step]).tobytes(),
            "hist": hist,
            "gc": gc_pauses,
        }

    return handle


class _Keys(Sequence[bytes]):
    """The keys of ``pool`` (key indexes), formatted when drawn."""

    def __init__(self, prefix: bytes, pool: range | list[int]) -> None:
        self.prefix = prefix
        self.pool = pool

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, i: Any) -> Any:
        return self.prefix + b"%010d" % self.pool[i]


class _Items(Sequence[tuple[bytes, bytes]]):
    """``(key, value)`` of the keys of ``pool``, formatted when drawn."""

    def __init__(self, prefix: bytes, pool: range | list[int], value: bytes) -> None:
        self.keys = _Keys(prefix, pool)
        self.value = value

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: Any) -> Any:
        return (self.keys[i], self.value)
