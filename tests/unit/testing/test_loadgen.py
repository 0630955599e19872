"""The ``bench`` load generator (peer_ring.testing.loadgen) against a LocalKV."""

from __future__ import annotations

import array
import re
from typing import Any

import pytest

from peer_ring.apps.kv.local import LocalKV
from peer_ring.errors import InvalidRequest
from peer_ring.testing.loadgen import BENCH_MAX_CONCURRENCY, bench_op, parse_spec


def test_spec_defaults_and_overrides() -> None:
    spec = parse_spec({"ops": 10, "prefix": b"x"})
    assert spec["ops"] == 10
    assert spec["prefix"] == b"x"
    assert spec["concurrency"] == 64
    assert spec["preload"] == [0, 0]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "expected [bench, {spec}]"),
        ({"nope": 1}, "unknown spec fields ['nope']"),
        ({"seconds": -1}, "seconds must be a number"),
        ({"read_ratio": 1.5}, "read_ratio must be a number"),
        ({"concurrency": BENCH_MAX_CONCURRENCY + 1}, "concurrency must be an integer"),
        ({"ops": 1.0}, "ops must be an integer"),
        ({"preload": [5, 2]}, "preload must be [start, stop)"),
        ({"prefix": "k"}, "prefix must be at most 64 bytes"),
        ({"profile": 3}, "profile must be a file path"),
    ],
)
def test_bad_specs_are_refused_with_the_reason(raw: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        parse_spec(raw)


async def test_a_bounded_run_counts_every_operation() -> None:
    kv = LocalKV()
    handle = bench_op(kv)
    spec = {"seconds": 30.0, "warmup": 0.0, "ops": 400, "concurrency": 4, "keyspace": 50,
            "preload": [0, 50], "read_ratio": 0.5, "value_size": 8, "seed": 7}  # fmt: skip
    answer = await handle(["bench", spec], None)
    assert len(kv) == 50  # the preload wrote every key
    ops = answer["ops"]
    # stopped by the ops bound, long before 30 s (a worker that yielded after
    # its bound check issues one more: at most concurrency - 1 over)
    assert 400 <= ops < 404
    assert answer["get"] + answer["put"] == ops
    assert 0 < answer["get"] < ops
    assert answer["hit"] == answer["get"]  # every key was preloaded
    assert answer["errors"] == {}
    assert sum(answer["hist"]["counts"]) == ops
    samples = array.array("I")
    samples.frombytes(answer["samples"])
    assert len(samples) == ops
    assert answer["p50_us"] <= answer["p99_us"] <= answer["p999_us"] <= max(samples)


async def test_a_malformed_message_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="expected"):
        await bench_op(LocalKV())(["bench"], None)
