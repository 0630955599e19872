"""gubernator's JSON and protobuf shapes mapped to RateLimitRequest, and back."""

from __future__ import annotations

from typing import Any

import pytest

from peer_ring.app import InvalidRequest
from peer_ring.apps.ratelimit import Algorithm, Behavior, RateLimitResponse, Status
from peer_ring.server.grpc_api.protos import gubernator_pb2 as gpb
from peer_ring.server.grpc_api.server import request_from_proto, response_to_proto
from peer_ring.server.ratelimit_http import request_from_json, response_to_json

BASE = {"name": "api", "unique_key": "u1", "hits": 1, "limit": 10, "duration": 60_000}


def test_json_request_accepts_protojson_strings_and_enum_names() -> None:
    req = request_from_json(
        {**BASE, "hits": "2", "limit": "10", "algorithm": "SLIDING_WINDOW",
         "behavior": "GLOBAL,RESET_REMAINING", "metadata": {"trace": "x"}}
    )  # fmt: skip
    assert req.hits == 2
    assert req.duration_ns == 60_000_000_000
    assert req.algorithm is Algorithm.SLIDING_WINDOW
    assert req.behavior == Behavior.GLOBAL | Behavior.RESET_REMAINING
    assert request_from_json({**BASE, "algorithm": 1}).algorithm is Algorithm.LEAKY_BUCKET
    lease = request_from_json({**BASE, "algorithm": "CONCURRENCY", "metadata": {"lease": "h1"}})
    assert lease.lease == "h1"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"limit": 0}, "limit must be in"),
        ({"limit": -1}, "limit must be in"),
        ({"limit": "1e3"}, "limit must be an integer"),
        ({"limit": 1.5}, "limit must be an integer"),
        ({"limit": 2**63}, "fit int64"),
        ({"duration": 0}, "duration must be a positive"),
        ({"duration": 2**62}, "duration must be a positive"),
        ({"algorithm": "MAGIC"}, "unknown algorithm"),
        ({"algorithm": "TOKEN_BUCKET,GCRA"}, "one algorithm"),
        ({"algorithm": 77}, "unknown algorithm"),
        ({"behavior": "NOPE"}, "unknown behavior"),
        ({"behavior": 4}, "GREGORIAN"),
        ({"name": ""}, "name must not be empty"),
        ({"unique_key": 5}, "unique_key must be a string"),
        ({"metadata": {"lease": 1}}, "metadata must be an object of strings"),
        ({"algorithm": "CONCURRENCY"}, "needs a lease id"),
        ({"surprise": 1}, "unknown fields"),
    ],
)
def test_json_request_rejects_bad_input(change: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        request_from_json({**BASE, **change})


def test_json_response_is_protojson() -> None:
    r = RateLimitResponse(Status.OVER_LIMIT, 10, 0, 1_700_000_000_123_456_789, 5)
    assert response_to_json(r) == {
        "status": "OVER_LIMIT",
        "limit": "10",
        "remaining": "0",
        "reset_time": "1700000000123",
        "error": "",
        "metadata": {},
    }


def test_proto_request_and_response() -> None:
    m = gpb.RateLimitReq(name="a", unique_key="b", hits=3, limit=9, duration=1500,
                         algorithm=gpb.GCRA, behavior=gpb.DRAIN_OVER_LIMIT, burst=4)  # fmt: skip
    req = request_from_proto(m)
    assert (req.duration_ns, req.algorithm, req.behavior, req.burst) == (
        1_500_000_000, Algorithm.GCRA, Behavior.DRAIN_OVER_LIMIT, 4)  # fmt: skip
    for bad in (
        gpb.RateLimitReq(name="a", unique_key="b", limit=9, duration=0),
        gpb.RateLimitReq(name="a", unique_key="b", limit=0, duration=10),
        gpb.RateLimitReq(name="a", unique_key="b", limit=9, duration=10, algorithm=9),
        gpb.RateLimitReq(name="a", unique_key="b", limit=9, duration=10, burst=-1),
    ):
        with pytest.raises(InvalidRequest):
            request_from_proto(bad)
    out = response_to_proto(RateLimitResponse(Status.UNDER_LIMIT, 9, 6, 2_000_000_000))
    assert (out.status, out.limit, out.remaining, out.reset_time) == (gpb.UNDER_LIMIT, 9, 6, 2000)
