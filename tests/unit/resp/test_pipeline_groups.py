"""Pipelined GETs and SETs grouped into one batch of the store (issue 18).

A store offering ``batch()`` (:class:`~peer_ring.apps.kv.api.KVBatches`)
gets the consecutive GETs and plain SETs of one read started together in one
batch, flushed once; the replies still leave in request order, each with its
own result or error. A request of another kind, or a second request on a key
already in the group, closes the group and waits for its replies first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peer_ring.apps.kv.api import KVBatches
from peer_ring.apps.kv.local import LocalKV
from peer_ring.clock import ManualClock
from peer_ring.errors import QuorumNotReached
from peer_ring.server.resp import RespConfig, RespServer
from tests.conftest import wait_for
from tests.unit.resp.conftest import SMALL_LIMITS, Client, Err, Simple, encode_request


class Batch:
    """Records what joined it; applies and answers only when the test releases."""

    def __init__(self, kv: GroupKV) -> None:
        self.kv = kv
        self.ops: list[tuple[str, bytes]] = []
        self.answers: list[Callable[[], None]] = []
        self.flushed = False

    def get(self, key: bytes, done: Callable[[bytes | None, BaseException | None], None]) -> None:
        assert not self.flushed
        self.ops.append(("get", key))

        def answer() -> None:
            err = self.kv.failing.get(key)
            if err is not None:
                done(None, err)
                return
            item = self.kv._live(key)
            done(None if item is None else item[0], None)

        self._answer(key, answer)

    def put(
        self, key: bytes, value: bytes, done: Callable[[None, BaseException | None], None]
    ) -> None:
        assert not self.flushed
        self.ops.append(("put", key))

        def answer() -> None:
            err = self.kv.failing.get(key)
            if err is not None:
                done(None, err)
                return
            self.kv._store(key, value, None)
            done(None, None)

        self._answer(key, answer)

    def _answer(self, key: bytes, answer: Callable[[], None]) -> None:
        if self.kv.in_place and key not in self.kv.deferred:
            answer()  # as a one-node KVStore answers: before the call returns
        else:
            self.answers.append(answer)

    def flush(self) -> None:
        self.flushed = True
        self.kv.flushed.append(self)
        if self.kv.answer_on_flush:
            self.release()

    def release(self) -> None:
        answers, self.answers = self.answers, []
        for answer in reversed(answers):  # out of order: replies must not be
            answer()


class GroupKV(LocalKV):
    """LocalKV with callback forms and a batch API that records its groups."""

    def __init__(self, answer_on_flush: bool = False, in_place: bool = False) -> None:
        super().__init__(clock=ManualClock(), limits=SMALL_LIMITS)
        self.flushed: list[Batch] = []
        self.lone: list[tuple[str, bytes]] = []
        self.failing: dict[bytes, BaseException] = {}
        self.answer_on_flush = answer_on_flush
        #: answer each command during the call (except the keys in ``deferred``)
        self.in_place = in_place
        self.deferred: set[bytes] = set()

    def start_get(
        self, key: bytes, done: Callable[[bytes | None, BaseException | None], None]
    ) -> None:
        self.lone.append(("get", key))
        item = self._live(key)
        done(None if item is None else item[0], None)

    def start_put(
        self, key: bytes, value: bytes, done: Callable[[None, BaseException | None], None]
    ) -> None:
        self.lone.append(("put", key))
        self._store(key, value, None)
        done(None, None)

    def batch(self) -> Batch:
        return Batch(self)


def _server(kv: GroupKV) -> tuple[RespServer, Client]:
    server = RespServer(kv, config=RespConfig(), clock=ManualClock())
    return server, Client(server)


def _pipeline(*requests: tuple[Any, ...]) -> bytes:
    return b"".join(encode_request(*r) for r in requests)


async def test_a_store_with_batches_is_detected() -> None:
    kv = GroupKV()
    assert isinstance(kv, KVBatches)
    assert RespServer(kv).batches is kv
    assert RespServer(LocalKV()).batches is None


async def test_a_pipeline_of_gets_and_sets_is_one_group_answered_in_order() -> None:
    kv = GroupKV()
    await kv.put(b"a", b"1")
    server, client = _server(kv)
    client.send(
        _pipeline(("GET", "a"), ("SET", "b", "2"), ("GET", "c"), ("SET", "d", "4"), ("GET", "b0"))
    )
    assert len(kv.flushed) == 1  # the whole read: one group, flushed once
    group = kv.flushed[0]
    assert group.ops == [("get", b"a"), ("put", b"b"), ("get", b"c"), ("put", b"d"), ("get", b"b0")]
    assert client.unread() == b""  # nothing before every reply of the group is in
    group.release()  # answered in reverse order
    assert await client.read() == b"1"
    assert await client.read() == Simple("OK")
    assert await client.read() is None
    assert await client.read() == Simple("OK")
    assert await client.read() is None
    assert kv.lone == []
    assert server.stats.commands_processed == 5
    await server.close()


async def test_each_command_of_a_group_gets_its_own_error() -> None:
    kv = GroupKV(answer_on_flush=True)
    kv.failing[b"bad"] = QuorumNotReached(2, 1)
    server, client = _server(kv)
    client.send(_pipeline(("SET", "x", "1"), ("SET", "bad", "2"), ("GET", "bad"), ("GET", "x")))
    assert await client.read() == Simple("OK")
    first = await client.read()
    assert isinstance(first, Err)
    assert "quorum" in first.message.lower()
    # GET bad repeats a key of the group: it ran after the group's replies
    second = await client.read()
    assert isinstance(second, Err)
    assert "quorum" in second.message.lower()
    assert await client.read() == b"1"
    assert [b.ops for b in kv.flushed] == [
        [("put", b"x"), ("put", b"bad")],
        [("get", b"bad"), ("get", b"x")],
    ]
    await server.close()


async def test_a_repeated_key_waits_for_the_group_so_a_pipeline_reads_its_writes() -> None:
    kv = GroupKV()
    server, client = _server(kv)
    client.send(_pipeline(("SET", "k", "v1"), ("SET", "j", "w"), ("GET", "k"), ("GET", "j")))
    assert [b.ops for b in kv.flushed] == [[("put", b"k"), ("put", b"j")]]
    kv.flushed[0].release()
    # the second group (GET k, GET j) starts only once the first answered
    assert [b.ops for b in kv.flushed[1:]] == [[("get", b"k"), ("get", b"j")]]
    kv.flushed[1].release()
    assert [await client.read() for _ in range(4)] == [Simple("OK"), Simple("OK"), b"v1", b"w"]
    await server.close()


async def test_another_command_closes_the_group_and_runs_after_its_replies() -> None:
    kv = GroupKV()
    server, client = _server(kv)
    client.send(
        _pipeline(("SET", "a", "1"), ("GET", "a0"), ("INCR", "n"), ("GET", "x"), ("GET", "y"))
    )
    assert [b.ops for b in kv.flushed] == [[("put", b"a"), ("get", b"a0")]]
    assert client.unread() == b""
    kv.flushed[0].release()
    # INCR (a coroutine handler) runs once the group answered, then GET x and
    # GET y form the next group; the read's replies leave together, in order
    await wait_for(lambda: len(kv.flushed) == 2, message="the second group")
    assert kv.flushed[1].ops == [("get", b"x"), ("get", b"y")]
    kv.flushed[1].release()
    assert [await client.read() for _ in range(5)] == [Simple("OK"), None, 1, None, None]
    await server.close()


async def test_a_lone_request_keeps_its_callback_form() -> None:
    kv = GroupKV()
    server, client = _server(kv)
    assert await client.call("SET", "a", "1") == Simple("OK")
    assert await client.call("GET", "a") == b"1"
    # SET with options and a GET with a wrong arity never join a group
    client.send(_pipeline(("SET", "b", "2", "EX", "100"), ("GET", "b", "extra")))
    assert await client.read() == Simple("OK")
    err = await client.read()
    assert isinstance(err, Err)
    assert "wrong number of arguments" in err.message
    assert kv.flushed == []
    assert kv.lone == [("put", b"a"), ("get", b"a")]
    await server.close()


async def test_a_transaction_is_grouped_between_its_exec_and_the_next_request() -> None:
    kv = GroupKV(answer_on_flush=True)
    server, client = _server(kv)
    client.send(
        _pipeline(("MULTI",), ("SET", "t1", "a"), ("SET", "t2", "b"), ("GET", "t1"), ("EXEC",))
    )
    assert await client.read() == Simple("OK")
    for _ in range(3):
        assert await client.read() == Simple("QUEUED")
    assert await client.read() == [Simple("OK"), Simple("OK"), b"a"]
    # GET t1 repeats a key of the group: it ran after it, alone
    assert [b.ops for b in kv.flushed] == [[("put", b"t1"), ("put", b"t2")]]
    assert kv.lone == [("get", b"t1")]
    await server.close()


async def test_commands_answered_in_place_keep_one_group_and_read_their_writes() -> None:
    """A store that answers during the call (a one-node KVStore): a repeated
    key has no reply to wait for, so the read stays one group -- and still
    reads its own writes, in order."""
    kv = GroupKV(in_place=True)
    server, client = _server(kv)
    client.send(
        _pipeline(("SET", "k", "v1"), ("GET", "k"), ("SET", "k", "v2"), ("GET", "k"), ("GET", "z"))
    )
    assert [b.ops for b in kv.flushed] == [
        [("put", b"k"), ("get", b"k"), ("put", b"k"), ("get", b"k"), ("get", b"z")]
    ]
    assert [await client.read() for _ in range(5)] == [
        Simple("OK"),
        b"v1",
        Simple("OK"),
        b"v2",
        None,
    ]
    await server.close()


async def test_a_key_answered_later_still_splits_the_group() -> None:
    """Mixed: the commands answered in place and those answered later each get
    their own reply in request order; a key whose reply is still missing
    makes its second command wait for the group, as before."""
    kv = GroupKV(in_place=True)
    kv.deferred.add(b"slow")
    await kv.put(b"slow", b"s0")
    server, client = _server(kv)
    client.send(
        _pipeline(
            ("GET", "slow"),
            ("SET", "a", "1"),
            ("SET", "slow", "s1"),
            ("GET", "a"),
            ("GET", "slow"),
            ("GET", "a"),
        )
    )
    # GET slow waits (its reply is missing): SET slow closed the first group
    assert [b.ops for b in kv.flushed] == [[("get", b"slow"), ("put", b"a")]]
    kv.flushed[0].release()
    # SET slow opened the next group; GET slow repeats it and closes that one
    assert [b.ops for b in kv.flushed[1:]] == [[("put", b"slow"), ("get", b"a")]]
    kv.flushed[1].release()
    await wait_for(lambda: len(kv.flushed) == 3, message="the third group")
    kv.flushed[2].release()
    assert [await client.read() for _ in range(6)] == [
        b"s0",
        Simple("OK"),
        Simple("OK"),
        b"1",
        b"s1",
        b"1",
    ]
    await server.close()
