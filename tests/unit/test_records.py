"""The per-command records (``Request``, ``QuorumResult``): plain classes,
compiled in the compiled build, with the dataclass behaviour they replaced."""

from __future__ import annotations

import pytest

from peer_ring import QuorumResult, Request


def test_quorum_result_defaults_are_fresh_per_instance() -> None:
    a = QuorumResult(("n1",))
    b = QuorumResult(("n1",))
    a.acks.append(("n1", 1))
    a.hinted["n4"] = "n2"
    a.errors["n2"] = ValueError("x")
    a.answers.append(("n1", 1))
    assert (b.acks, b.hinted, b.errors, b.answers, b.complete) == ([], {}, {}, [], None)


def test_quorum_result_compares_and_shows_its_fields() -> None:
    acks = [("n1", b"v")]
    r = QuorumResult(("n1", "n2"), {"n3": "n2"}, acks, {}, acks)
    assert r == QuorumResult(targets=("n1", "n2"), hinted={"n3": "n2"}, acks=acks, answers=acks)
    assert r != QuorumResult(("n1", "n2"))
    assert repr(r) == (
        "QuorumResult(targets=('n1', 'n2'), hinted={'n3': 'n2'}, acks=[('n1', b'v')], "
        "errors={}, answers=[('n1', b'v')], complete=None)"
    )
    with pytest.raises(TypeError):
        hash(r)


def test_request_compares_shows_its_fields_and_takes_no_other_attribute() -> None:
    req = Request("get", b"k", 7, None, "n1")
    assert (req.command, req.key, req.partition, req.payload, req.origin) == (
        "get", b"k", 7, None, "n1",
    )  # fmt: skip
    assert req == Request(command="get", key=b"k", partition=7, payload=None, origin="n1")
    assert req != Request("get", b"k", 8, None, "n1")
    assert repr(req) == "Request(command='get', key=b'k', partition=7, payload=None, origin='n1')"
    with pytest.raises(AttributeError):
        req.extra = 1  # type: ignore[attr-defined]
