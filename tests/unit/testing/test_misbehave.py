"""The misbehaving wrapper's contract: bad specs refused, every hook delegated,
and only with the testing flag (the end-to-end proof is tests/fault/test_misbehaving.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from peer_ring._misbehave import Misbehaving, parse_spec
from peer_ring.config import NodeConfig
from peer_ring.errors import ConfigError
from peer_ring.runner import serve
from peer_ring.service import Request, Service


class Echo(Service):
    namespace = "echo"
    read_commands = frozenset({"get"})

    def __init__(self) -> None:
        self.seen: list[Request] = []

    def handle(self, request: Request) -> Any:
        self.seen.append(request)
        return request.payload

    def partition_size(self, partition: int) -> int:
        return partition * 2


@pytest.mark.parametrize("spec", ["", "nope", "stale-reads:0", "drop-writes:2", "drop-writes:x"])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_spec(spec)


def test_specs() -> None:
    assert parse_spec("drop-writes:0.25") == ("drop-writes", 0.25)
    assert parse_spec("stale-reads") == ("stale-reads", 1.0)


async def test_wrapper_keeps_the_contract_and_breaks_only_its_commands() -> None:
    inner = Echo()
    bad = Misbehaving(inner, "duplicate-appends")
    assert bad.namespace == "echo"
    assert bad.read_commands == inner.read_commands
    assert bad.partition_size(3) == 6
    # a forwarded list write gets its last element twice; anything else passes through
    put = Request("coord_put", b"k", 1, [b"a;b;", None, None, None, 2, None], "n1")
    assert bad.handle(put)[0] == b"a;b;b;"
    assert bad.handle(Request("coord_put", b"k", 1, [b"plain", None], "n1"))[0] == b"plain"
    assert bad.handle(Request("get", b"k", 1, "x", "n1")) == "x"
    assert bad.misbehaved == 1
    drop = Misbehaving(Echo(), "drop-writes")
    fut = drop.handle(Request("coord_put", b"k", 1, [b"v"], "n1"))
    assert isinstance(fut, asyncio.Future)
    assert fut.done()
    assert drop.inner.seen == []  # type: ignore[attr-defined]


async def test_misbehaving_needs_the_testing_flag() -> None:
    with pytest.raises(ConfigError, match="needs --testing"):
        await serve(NodeConfig.local("n1"), misbehave="stale-reads")
