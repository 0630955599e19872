"""The checkers against hand-made histories: each kind of violation must fail, a clean run pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from peer_ring.clock import ManualClock
from peer_ring.errors import InvalidRequest
from peer_ring.testing.checker import (
    check_availability,
    check_convergence,
    check_invented_values,
    check_list_order,
    check_lost_writes,
    check_stale_reads,
    elements,
    fault_window_ops,
    summarize,
)
from peer_ring.testing.history import Event, History


class TickClock(ManualClock):
    """Each reading moves time on by 1 ms: events get distinct, ordered times."""

    def monotonic(self) -> float:
        self._now += 0.001
        return self._now


def _history(clock: ManualClock | None = None) -> History:
    return History(clock=clock or TickClock(start=0.0))


def _write(h: History, proc: str, key: str, value: str, status: str = "ok", **kw: object) -> int:
    oid = h.invoke(proc, "n1", "write", key, value, **kw)  # type: ignore[arg-type]
    h.complete(oid, status)  # type: ignore[arg-type]
    return oid


def _append(h: History, proc: str, key: str, elem: str, status: str = "ok") -> int:
    oid = h.invoke(proc, "n1", "append", key, elem)
    h.complete(oid, status)  # type: ignore[arg-type]
    return oid


def _read(h: History, proc: str, key: str, value: str | None) -> int:
    oid = h.invoke(proc, "n2", "read", key)
    h.complete(oid, "ok", value=value)
    return oid


def _checks(h: History, final: dict[str, list[str]], mode: str = "lww") -> dict[str, bool]:
    """Every history checker's verdict, by name."""
    return {
        "stale": check_stale_reads(h.events).ok,
        "order": check_list_order(h.events, final).ok,
        "lost": check_lost_writes(h.events, final, mode=mode).ok,  # type: ignore[arg-type]
        "invented": check_invented_values(h.events, final).ok,
    }


def clean_history() -> tuple[History, dict[str, list[str]]]:
    h = _history()
    _append(h, "c1", "a", "x1")
    _read(h, "c2", "a", "x1;")
    _append(h, "c1", "a", "x2")
    _append(h, "c1", "a", "x3", status="unknown")  # may or may not be there
    _write(h, "c2", "r", "v1")
    _read(h, "c1", "r", "v1")
    _write(h, "c2", "r", "v2", context=["v1"])  # supersedes v1 causally
    _read(h, "c1", "missing", None)
    return h, {"a": ["x1;x2;"], "r": ["v2"]}


def test_clean_history_passes_every_check() -> None:
    h, final = clean_history()
    for mode in ("lww", "siblings"):
        assert all(_checks(h, final, mode).values()), mode
    assert check_lost_writes(h.events, final).ok
    assert check_invented_values(h.events, final).ok
    lost = check_lost_writes(h.events, final)
    assert lost.data["acknowledged"] == 4
    assert lost.data["unknown"] == 1
    assert lost.data["superseded"] == 1


def test_lost_append_fails() -> None:
    h, final = clean_history()
    final["a"] = ["x2;"]  # x1 acknowledged, then vanished
    result = check_lost_writes(h.events, final)
    assert not result.ok
    assert result.data["lost"] == 1
    assert "x1" in result.problems[0]


def test_lost_blind_write_fails_with_siblings_but_not_with_lww() -> None:
    h = _history()
    _write(h, "c1", "k", "v1")
    _write(h, "c2", "k", "v2")  # blind: concurrent with v1, must stay a sibling
    assert check_lost_writes(h.events, {"k": ["v1", "v2"]}).ok
    result = check_lost_writes(h.events, {"k": ["v2"]})
    assert not result.ok
    assert result.data["lost_ops"] == [1]
    # last-writer-wins gives that up: the final value only has to be someone's write
    assert check_lost_writes(h.events, {"k": ["v2"]}, mode="lww").ok
    assert not check_lost_writes(h.events, {"k": []}, mode="lww").ok
    assert not check_lost_writes(h.events, {"k": ["zzz"]}, mode="lww").ok


def test_write_superseded_only_by_a_context_that_saw_it() -> None:
    h = _history()
    _write(h, "c1", "k", "v1")
    _write(h, "c2", "k", "v2", context=["v0"])  # did not see v1
    assert not check_lost_writes(h.events, {"k": ["v2"]}).ok
    h2 = _history()
    _write(h2, "c1", "k", "v1")
    _write(h2, "c2", "k", "v2", status="unknown", context=["v1"])  # may have applied
    assert check_lost_writes(h2.events, {"k": ["v2"]}).ok


def test_delete_supersedes_writes_completed_before_it() -> None:
    h = _history()
    _write(h, "c1", "k", "v1")
    d = h.invoke("c2", "n1", "delete", "k")
    h.complete(d, "ok")
    assert check_lost_writes(h.events, {"k": []}).ok
    # but a delete that began before the write completed did not see it
    h2 = _history()
    d = h2.invoke("c2", "n1", "delete", "k")
    _write(h2, "c1", "k", "v1")
    h2.complete(d, "ok")
    assert not check_lost_writes(h2.events, {"k": []}).ok


def test_invented_value_fails() -> None:
    h, final = clean_history()
    _read(h, "c3", "r", "v9")
    result = check_invented_values(h.events, final)
    assert not result.ok
    assert result.data["invented"] == 1


def test_invented_element_and_read_from_the_future_fail() -> None:
    clock = ManualClock(start=0.0)
    h = _history(clock)
    r = h.invoke("c2", "n2", "read", "a")
    h.complete(r, "ok", value="x1;")  # x1 not yet invoked when this read ended
    clock._now += 1
    _append(h, "c1", "a", "x1")
    _read(h, "c2", "a", "x1;bogus;")
    result = check_invented_values(h.events, {"a": ["x1;"]})
    assert result.data["invented"] == 2
    assert not result.ok


def test_failed_write_does_not_explain_a_read() -> None:
    h = _history()
    _write(h, "c1", "k", "v1", status="fail")
    _read(h, "c2", "k", "v1")
    assert not check_invented_values(h.events).ok
    h2 = _history()
    _write(h2, "c1", "k", "v1", status="unknown")
    _read(h2, "c2", "k", "v1")
    assert check_invented_values(h2.events).ok


def test_invented_final_value_fails() -> None:
    h, final = clean_history()
    final["r"] = ["never"]
    assert not check_invented_values(h.events, final).ok


def test_convergence() -> None:
    same = {"n1": {"a": ["x;"], "b": ["1", "2"]}, "n2": {"a": ["x;"], "b": ["2", "1"]}}
    assert check_convergence(same).ok
    apart = {"n1": {"a": ["x;"]}, "n2": {"a": ["x;y;"]}, "n3": {}}
    result = check_convergence(apart)
    assert not result.ok
    assert result.data["divergent"] == 1
    # with owners, an owner lacking the key diverges; non-owners are ignored
    lacking = {"n1": {"a": ["x;"]}, "n2": {}, "n3": {"a": ["old;"]}}
    assert not check_convergence(lacking, owners={"a": ["n1", "n2"]}).ok
    assert check_convergence(lacking, owners={"a": ["n1"]}).ok


def test_availability_gap_after_heal() -> None:
    clock = ManualClock(start=0.0)
    h = _history(clock)
    h.fault("kill", "n1", "start")
    for i in range(40):  # 2 s of failures, then 2 s of success
        oid = h.invoke("c1", "n1", "read", "k")
        h.complete(oid, "unknown" if i < 20 else "ok")
        clock._now += 0.1
    result = check_availability(h.events, window=0.5)
    assert result.ok
    (rec,) = result.data["recoveries"]
    assert rec.gap == pytest.approx(2.0)
    assert result.data["success_ratio"] == pytest.approx(0.5)


def test_availability_never_recovering_after_heal_fails() -> None:
    clock = ManualClock(start=0.0)
    h = _history(clock)
    h.fault("partition", "n1|n2", "heal")
    for _ in range(20):
        oid = h.invoke("c1", "n1", "read", "k")
        h.complete(oid, "unknown")
        clock._now += 0.1
    assert not check_availability(h.events).ok


def test_history_roundtrip_and_summary(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    h, _ = clean_history()
    with History(path, clock=ManualClock(start=0.0)) as h2:
        for ev in h.events:
            h2._record(ev)
        h2.fault("partition", "n1,n2|n3", "start", one_way=False)
    events = History.load(path)
    assert events[: len(h.events)] == h.events
    assert events[-1].kind == "partition"
    assert events[-1].detail == {"one_way": False}
    counts = summarize(events)
    assert counts["ops"] == 8
    assert counts["reads"] == 3
    assert counts["unknown"] == 1
    assert counts["acknowledged"] == 4


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "[1]",
        '{"type": "boom", "time": 1}',
        '{"type": "invoke", "time": 1, "op": "read"}',
        '{"type": "invoke", "time": 1, "id": 1, "op": "frobnicate"}',
        '{"type": "invoke", "time": "x", "id": 1, "op": "read"}',
        '{"type": "invoke", "time": 1, "id": 1, "op": "read", "extra": 1}',
        '{"type": "invoke", "time": 1, "id": 1, "op": "read", "context": [1]}',
    ],
)
def test_bad_history_lines_raise_invalid_request(line: str) -> None:
    with pytest.raises(InvalidRequest):
        Event.from_json(line)


def test_completion_without_invoke_is_rejected() -> None:
    h = _history()
    h.complete(99, "ok")
    with pytest.raises(InvalidRequest):
        h.operations()
    with pytest.raises(InvalidRequest):
        h.invoke("c", None, "frob", "k")  # type: ignore[arg-type]


def test_elements() -> None:
    assert elements("a;b;") == ["a", "b"]
    assert elements(None) == []
    assert elements("") == []


# -- the table: each bad history is flagged by the checker it belongs to --------
def test_stale_append_read_after_both_acks_is_flagged() -> None:
    h = _history()
    _append(h, "c1", "a", "a")
    _append(h, "c1", "a", "b")
    r = _read(h, "c2", "a", "a;")  # began after both acks
    final = {"a": ["a;b;"]}
    result = check_stale_reads(h.events)
    assert not result.ok
    assert result.data["stale_ops"] == [r]
    assert "'b'" in result.problems[0]
    # and only that checker: the read is a prefix of the one order, nothing is lost
    assert _checks(h, final) == {"stale": False, "order": True, "lost": True, "invented": True}


def test_lww_later_acknowledged_write_lost_is_flagged() -> None:
    h = _history()
    _write(h, "c1", "k", "v1")
    v2 = _write(h, "c2", "k", "v2")  # invoked after v1's ack, acknowledged
    result = check_lost_writes(h.events, {"k": ["v1"]}, mode="lww")
    assert not result.ok
    assert result.data["lost_ops"] == [v2]
    assert not check_lost_writes(h.events, {"k": ["v1"]}, mode="siblings").ok
    assert check_lost_writes(h.events, {"k": ["v2"]}, mode="lww").ok


def test_nil_read_after_an_acknowledged_write_is_flagged() -> None:
    h = _history()
    _write(h, "c1", "k", "v1")
    r = _read(h, "c2", "k", None)
    result = check_stale_reads(h.events)
    assert not result.ok
    assert result.data["stale_ops"] == [r]
    # a nil read of a list key is the empty list: stale too
    h2 = _history()
    _append(h2, "c1", "a", "x")
    _read(h2, "c2", "a", None)
    assert not check_stale_reads(h2.events).ok


def test_acknowledged_append_read_twice_is_flagged() -> None:
    h = _history()
    _append(h, "c1", "a", "x")
    _append(h, "c1", "a", "y")
    _read(h, "c2", "a", "x;y;y;")
    result = check_list_order(h.events, {"a": ["x;y;"]})
    assert not result.ok
    assert result.data["duplicates"] == 1
    # a duplicate in the final value too
    assert not check_list_order(_history().events, {}).data["observations"]
    h2 = _history()
    _append(h2, "c1", "a", "x")
    assert check_list_order(h2.events, {"a": ["x;x;"]}).data["duplicates"] == 1


# -- the loopholes of the old checker ----------------------------------------------------
def test_lww_blind_write_loss_not_excused_by_an_older_final_value() -> None:
    h = _history()
    _write(h, "c1", "k", "v0")
    _write(h, "c1", "k", "v1")
    _write(h, "c2", "k", "v2")
    # the old rule accepted any written value; v0 ended before v1 and v2 began
    result = check_lost_writes(h.events, {"k": ["v0"]}, mode="lww")
    assert result.data["lost"] == 2


def test_concurrent_write_may_win_under_lww() -> None:
    clock = ManualClock(start=0.0)
    h = _history(clock)
    w1 = h.invoke("c1", "n1", "write", "k", "v1")
    w2 = h.invoke("c2", "n2", "write", "k", "v2")
    clock._now += 1
    h.complete(w1, "ok")
    h.complete(w2, "ok")
    for final in ("v1", "v2"):  # concurrent: either may win
        assert check_lost_writes(h.events, {"k": [final]}, mode="lww").ok
    clock._now += 1
    _read(h, "c3", "k", "v1")
    _read(h, "c3", "k", "v2")
    assert check_stale_reads(h.events).ok


def test_unknown_write_explains_a_value_but_never_excuses_a_loss() -> None:
    h = _history()
    _write(h, "c1", "k", "v1")
    _write(h, "c2", "k", "v2", status="unknown", context=["v1"])
    # v2 may have replaced v1 -- but then v2 must be there
    assert check_lost_writes(h.events, {"k": ["v2"]}).ok
    assert not check_lost_writes(h.events, {"k": []}).ok
    assert not check_lost_writes(h.events, {"k": ["v0"]}).ok
    # a read of the unknown write's value after v1's ack is explained (it may have landed)
    _read(h, "c3", "k", "v2")
    assert check_stale_reads(h.events).ok
    # an acknowledged successor accounts for itself: only it is reported lost
    h2 = _history()
    _write(h2, "c1", "k", "v1")
    v2 = _write(h2, "c2", "k", "v2", context=["v1"])
    assert check_lost_writes(h2.events, {"k": []}).data["lost_ops"] == [v2]
    # in lww mode an unknown later write may explain the final value
    h3 = _history()
    _write(h3, "c1", "k", "v1")
    _write(h3, "c2", "k", "v2", status="unknown")
    assert check_lost_writes(h3.events, {"k": ["v2"]}, mode="lww").ok


def test_stale_register_read_by_an_older_value_in_both_modes() -> None:
    h = _history()
    _write(h, "c1", "k", "v1")
    _write(h, "c1", "k", "v2")
    r = _read(h, "c2", "k", "v1")
    assert check_stale_reads(h.events).data["stale_ops"] == [r]
    # a read that began before v2's ack may return v1
    clock = ManualClock(start=0.0)
    h2 = _history(clock)
    _write(h2, "c1", "k", "v1")
    w = h2.invoke("c1", "n1", "write", "k", "v2")
    r2 = h2.invoke("c2", "n2", "read", "k")
    h2.complete(w, "ok")
    h2.complete(r2, "ok", value="v1")
    assert check_stale_reads(h2.events).ok


def test_list_reads_must_be_prefixes_of_one_order() -> None:
    h = _history()
    _append(h, "c1", "a", "x")
    _read(h, "c2", "a", "x;")
    _append(h, "c1", "a", "y", status="unknown")
    _read(h, "c2", "a", "x;y;")
    assert check_list_order(h.events, {"a": ["x;y;"]}).ok
    _read(h, "c2", "a", "y;x;")  # both elements, another order
    result = check_list_order(h.events, {"a": ["x;y;"]})
    assert not result.ok
    assert result.data["divergent"] == 1
    # two siblings of a list key: not one order
    h2 = _history()
    _append(h2, "c1", "a", "x")
    _append(h2, "c1", "a", "y", status="unknown")
    _append(h2, "c1", "a", "z", status="unknown")
    assert not check_list_order(h2.events, {"a": ["x;y;", "x;z;"]}).ok


def test_list_order_against_real_time_is_flagged() -> None:
    h = _history()
    _append(h, "c1", "a", "x")
    _append(h, "c1", "a", "y")  # invoked after x was acknowledged
    result = check_list_order(h.events, {"a": ["y;x;"]})
    assert not result.ok
    assert result.data["reordered"] == 1


def test_convergence_fails_when_an_owner_never_answers() -> None:
    dumps = {"n1": {"a": ["x;"]}, "n2": {"a": ["x;"]}}
    owners = {"a": ["n1", "n2", "n3"]}
    result = check_convergence(dumps, owners=owners, unanswered={"n3": "syncing"})
    assert not result.ok
    assert result.data["silent_owners"] == ["n3"]
    assert "syncing" in result.problems[0]
    assert check_convergence(dumps, owners={"a": ["n1", "n2"]}).ok


def test_fault_window_ops() -> None:
    clock = ManualClock(start=0.0)
    h = _history(clock)
    _read(h, "c1", "k", None)  # before the fault
    clock._now += 1
    h.fault("kill", "n1", "start")
    _read(h, "c1", "k", None)
    oid = h.invoke("c1", "n1", "read", "k")
    h.complete(oid, "unknown")
    h.fault("kill", "n1", "heal")
    clock._now += 1
    _read(h, "c1", "k", None)
    assert fault_window_ops(h.events) == {"faults": 1, "ops": 2, "acknowledged": 1}
    assert fault_window_ops(_history().events)["ops"] == 0
