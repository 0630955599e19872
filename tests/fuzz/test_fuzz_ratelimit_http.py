"""Fuzz the rate limiter's HTTP JSON API (gubernator's ``POST
/v1/GetRateLimits``): any body -- raw bytes, JSON of any shape, and batches
of near-valid requests with hostile field values -- yields validated
requests or BadBody (a 400), never another exception (a 500)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from peer_ring.apps.ratelimit import RateLimitRequest
from peer_ring.server.ratelimit_http import BadBody, requests_from_body
from tests.fuzz._settings import FUZZ

MAX_BATCH = 1000

scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=16,
)  # fmt: skip

FIELDS = ("name", "unique_key", "hits", "limit", "duration", "algorithm", "behavior", "burst",
          "metadata", "created_at")  # fmt: skip
# a request close to valid, each field possibly replaced by something hostile
hostile = scalars | st.sampled_from(
    ["12", "-1", "²", "١٢", "TOKEN_BUCKET", "GLOBAL,RESET_REMAINING", "GCRA,TOKEN_BUCKET", " 5",
     "9" * 30, ""]
)  # fmt: skip
VALID = {"name": "api", "unique_key": "k", "hits": 1, "limit": 10, "duration": 1000}
near_valid = st.dictionaries(st.sampled_from(FIELDS), hostile | json_values, max_size=4).map(
    lambda changes: {**VALID, **changes}
)


def _check(raw: bytes) -> None:
    try:
        reqs = requests_from_body(raw, MAX_BATCH)
    except BadBody as exc:
        error = exc
    else:
        assert all(isinstance(r, RateLimitRequest) for r in reqs)
        return
    assert str(error)
    assert error.index is None or error.index >= 0


@FUZZ
@given(st.binary(max_size=600))
@example(b"\xff\xfe")  # not UTF-8
@example(b"[" * 100_000)  # nesting deeper than the JSON decoder recurses
def test_raw_bodies_parse_or_fail_with_bad_body(raw: bytes) -> None:
    _check(raw)


@FUZZ
@given(json_values)
@example({"requests": None})
@example({"requests": [None]})
def test_json_bodies_parse_or_fail_with_bad_body(body: Any) -> None:
    _check(json.dumps(body).encode())


@FUZZ
@given(st.lists(near_valid, max_size=4))
@example([{"name": "a", "unique_key": "k", "limit": "²", "duration": 1000}])
@example([{"name": "a", "unique_key": "k", "limit": 10, "duration": 1000, "metadata": []}])
def test_near_valid_batches_parse_or_fail_with_bad_body(items: list[dict[str, Any]]) -> None:
    _check(json.dumps({"requests": items}).encode())
