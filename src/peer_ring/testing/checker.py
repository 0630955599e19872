"""Checkers: pure functions over a history (:mod:`peer_ring.testing.history`) and final reads.

What they verify, in the terms of Dynamo (DeCandia et al., SOSP 2007) and of
causal histories with dotted version vectors (Almeida et al., DAIS 2014):

* :func:`check_lost_writes` -- **no acknowledged write is lost.** Every
  acknowledged ``write`` value is present in the final state of its key, as
  the value or as a sibling, and every acknowledged ``append`` element is an
  element of the final value (or of a sibling) -- unless it was *causally
  superseded*: a later write or delete that may have taken effect and whose
  ``context`` (the values its read observed) contained it, or a delete
  without a context invoked after it completed. In ``"lww"`` mode blind
  writes (no context) only get the weaker rule: the key's final value was
  written by *someone*; last-writer-wins silently discards concurrent and
  skew-ordered acknowledged writes, and that is allowed there.
* :func:`check_invented_values` -- **no value is read that was never
  written.** Every value read (and every final value) is the value of some
  write invoked before the read completed, or, for list-valued keys, made
  only of elements appended or written before then.
* :func:`check_convergence` -- **replicas hold identical contents** for
  every key (given per-replica dumps taken after the heal).
* :func:`check_availability` -- **time to recover**: for each fault start
  and heal, the time until a window of operations succeeds at least
  ``threshold`` (99%). A report, not a pass/fail gate on timings, except that
  a heal after which availability never returned fails.

Operations whose outcome is ``unknown`` (timeouts, lost connections, quorum
not reached) are allowed either way: they need not be present, and values
they wrote are not invented; a write or delete with an unknown outcome may
also supersede. Only ``fail`` means "certainly not applied".

List-valued keys (the append workload) hold elements separated by
``sep`` (default ``";"``, with a trailing separator: ``"a;b;c;"``), so that
a lost append is visible as a missing element.

Final state: ``{key: [sibling value, ...]}``; a missing or deleted key is an
empty list. Over RESP only the resolved value is visible (one sibling).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from peer_ring.errors import InvalidRequest
from peer_ring.testing.history import Event, Operation, operations

ConflictMode = Literal["siblings", "lww"]
FinalState = Mapping[str, Sequence[str]]

#: Most problems listed verbatim in one result (the counts are exact).
MAX_LISTED = 50


@dataclass
class CheckResult:
    """The outcome of one checker: ``ok``, human-readable ``problems`` and figures."""

    name: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        head = f"{self.name}: {'ok' if self.ok else 'FAILED'}"
        if not self.problems:
            return head
        more = self.data.get("problem_count", len(self.problems)) - len(self.problems)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        return head + "".join(f"\n  {p}" for p in self.problems) + tail


def elements(value: str | None, sep: str = ";") -> list[str]:
    """The elements of a list value ``"a;b;"`` (empty parts dropped)."""
    if not value:
        return []
    return [part for part in value.split(sep) if part]


def _ops(history: Iterable[Event] | Sequence[Operation]) -> list[Operation]:
    items = list(history)
    if items and isinstance(items[0], Operation):
        return [op for op in items if isinstance(op, Operation)]
    return operations(e for e in items if isinstance(e, Event))


def _limit(problems: list[str]) -> list[str]:
    return problems[:MAX_LISTED]


# -- (a) lost writes ----------------------------------------------------------------
def check_lost_writes(
    history: Iterable[Event] | Sequence[Operation],
    final: FinalState,
    *,
    mode: ConflictMode = "siblings",
    sep: str = ";",
) -> CheckResult:
    """Every acknowledged write/append is in ``final`` or causally superseded.

    See the module docstring for the rule. ``data`` holds ``acknowledged``
    (writes + appends acknowledged), ``lost`` (count), ``lost_ops`` (ids),
    ``superseded`` and ``unknown`` (writes/appends with unknown outcome).
    """
    if mode not in ("siblings", "lww"):
        raise InvalidRequest(f"conflict mode must be 'siblings' or 'lww', not {mode!r}")
    ops = _ops(history)
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    problems: list[str] = []
    lost: list[int] = []
    acknowledged = superseded = unknown = 0
    for key, key_ops in by_key.items():
        siblings = list(final.get(key, ()))
        present_values = set(siblings)
        present_elems = {e for s in siblings for e in elements(s, sep)}
        writers = [o for o in key_ops if o.op in ("write", "delete", "append") and o.maybe_applied]
        written_values = {o.value for o in key_ops if o.op == "write" and o.maybe_applied}
        for op in key_ops:
            if op.op not in ("write", "append"):
                continue
            if op.status in (None, "unknown"):
                unknown += 1
                continue
            if not op.ok:
                continue
            acknowledged += 1
            assert op.value is not None
            if op.op == "append":
                if op.value in present_elems:
                    continue
            elif op.value in present_values:
                continue
            if _superseded(op, writers, sep):
                superseded += 1
                continue
            if mode == "lww" and op.op == "write" and op.context is None:
                if siblings and all(s in written_values for s in siblings):
                    continue
                if not siblings and any(o.op == "delete" for o in writers):
                    continue
            lost.append(op.id)
            problems.append(
                f"lost {op.op} #{op.id} by {op.process} via {op.node}: {key!r} "
                f"{'+=' if op.op == 'append' else '='} {op.value!r} "
                f"(acknowledged at {op.completed:.3f}); final {siblings!r:.200}"
            )
    return CheckResult(
        "no acknowledged write lost",
        not lost,
        _limit(problems),
        {
            "acknowledged": acknowledged,
            "lost": len(lost),
            "lost_ops": lost,
            "superseded": superseded,
            "unknown": unknown,
            "problem_count": len(problems),
        },
    )


def _superseded(op: Operation, writers: list[Operation], sep: str) -> bool:
    assert op.value is not None
    for w in writers:
        if w.id == op.id:
            continue
        if w.context is not None:
            if op.op == "append":
                if any(op.value in elements(c, sep) for c in w.context):
                    return True
            elif op.value in w.context:
                return True
        elif w.op == "delete" and op.completed is not None and w.invoked >= op.completed:
            return True
    return False


# -- (b) invented values -----------------------------------------------------------------
def check_invented_values(
    history: Iterable[Event] | Sequence[Operation],
    final: FinalState | None = None,
    *,
    sep: str = ";",
) -> CheckResult:
    """No read (and no final value) shows a value nobody wrote before it.

    A value is explained by a write (not ``fail``) of exactly that value
    invoked before the read completed; on a key that has appends, a value is
    also explained when every element was appended (or is an element of a
    written value) before then. ``data["invented"]`` counts the offenders.
    """
    ops = _ops(history)
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    problems: list[str] = []
    invented = 0
    reads = 0

    def explained(key_ops: list[Operation], value: str, before: float | None) -> bool:
        sources = [
            o
            for o in key_ops
            if o.op in ("write", "append")
            and o.maybe_applied
            and (before is None or o.invoked <= before)
        ]
        if any(o.op == "write" and o.value == value for o in sources):
            return True
        if not any(o.op == "append" for o in key_ops):
            return False
        known: set[str] = set()
        for o in sources:
            if o.op == "append" and o.value is not None:
                known.add(o.value)
            elif o.value is not None:
                known.update(elements(o.value, sep))
        parts = elements(value, sep)
        return bool(parts) and all(p in known for p in parts)

    for key, key_ops in by_key.items():
        for op in key_ops:
            if op.op != "read" or not op.ok or op.value is None:
                continue
            reads += 1
            if not explained(key_ops, op.value, op.completed):
                invented += 1
                problems.append(
                    f"invented: read #{op.id} by {op.process} via {op.node} of {key!r} "
                    f"returned {op.value!r:.200}, never written before {op.completed:.3f}"
                )
    for key, siblings in (final or {}).items():
        for value in siblings:
            if not explained(by_key.get(key, []), value, None):
                invented += 1
                problems.append(
                    f"invented: final value of {key!r} is {value!r:.200}, never written"
                )
    return CheckResult(
        "no invented values",
        invented == 0,
        _limit(problems),
        {"invented": invented, "reads_checked": reads, "problem_count": len(problems)},
    )


# -- (c) convergence -----------------------------------------------------------------------
def check_convergence(
    dumps: Mapping[str, Mapping[str, Iterable[str]]],
    *,
    owners: Mapping[str, Sequence[str]] | None = None,
    keys: Iterable[str] | None = None,
) -> CheckResult:
    """All replicas of every key hold the same set of values.

    ``dumps`` maps a node name to its local contents ``{key: values}`` (the
    sibling values it stores; a key it does not hold is absent or empty).
    With ``owners`` (``{key: [node, ...]}``) exactly those nodes are compared
    and an owner that lacks the key diverges; without it every node that
    holds the key is compared. ``keys`` restricts the check (default: every
    key any dump or ``owners`` names). ``data["divergent"]`` counts keys.
    """
    all_keys: set[str] = set(keys) if keys is not None else set()
    if keys is None:
        for contents in dumps.values():
            all_keys.update(contents)
        if owners is not None:
            all_keys.update(owners)
    problems: list[str] = []
    divergent: list[str] = []
    for key in sorted(all_keys):
        if owners is not None and key in owners:
            nodes = [n for n in owners[key] if n in dumps]
        else:
            nodes = [n for n, contents in dumps.items() if contents.get(key)]
        views = {n: frozenset(dumps[n].get(key, ())) for n in nodes}
        if len(set(views.values())) > 1:
            divergent.append(key)
            shown = ", ".join(f"{n}={sorted(v)!r:.80}" for n, v in sorted(views.items()))
            problems.append(f"diverged: {key!r}: {shown}")
    return CheckResult(
        "replicas converged",
        not divergent,
        _limit(problems),
        {"keys": len(all_keys), "divergent": len(divergent), "problem_count": len(problems)},
    )


# -- (d) availability ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Recovery:
    """Time from one fault event until ``threshold`` success came back (``None``: never)."""

    kind: str
    target: str
    phase: str
    at: float
    gap: float | None


def check_availability(
    history: Iterable[Event],
    *,
    threshold: float = 0.99,
    window: float = 0.5,
) -> CheckResult:
    """For each fault start/heal, the time until a ``window`` of operations (by
    invoke time) reaches ``threshold`` success.

    The gap is measured to the start of the first such window at or after
    the event. Fails only when availability never returned after a heal
    while operations were still running. ``data``: ``recoveries`` (list of
    :class:`Recovery`), ``max_gap`` (seconds or ``None``), ``success_ratio``.
    """
    if not 0 < threshold <= 1 or window <= 0:
        raise InvalidRequest("availability needs 0 < threshold <= 1 and window > 0")
    events = list(history)
    ops = [o for o in operations(events) if o.status is not None]
    ops.sort(key=lambda o: o.invoked)
    recoveries: list[Recovery] = []
    problems: list[str] = []
    last_invoke = ops[-1].invoked if ops else 0.0
    for ev in events:
        if ev.type != "fault":
            continue
        gap = _recovery_gap(ops, ev.time, threshold, window)
        rec = Recovery(ev.kind or "?", ev.target or "?", ev.phase or "?", ev.time, gap)
        recoveries.append(rec)
        if gap is None and ev.phase == "heal" and last_invoke > ev.time + window:
            problems.append(
                f"no window of {window}s reached {threshold:.0%} success after "
                f"{rec.kind} {rec.target} healed at {ev.time:.3f}"
            )
    gaps = [r.gap for r in recoveries if r.gap is not None]
    ok_count = sum(1 for o in ops if o.ok)
    return CheckResult(
        "availability recovered",
        not problems,
        problems,
        {
            "recoveries": recoveries,
            "max_gap": max(gaps) if gaps else None,
            "success_ratio": ok_count / len(ops) if ops else None,
            "problem_count": len(problems),
        },
    )


def _recovery_gap(
    ops: list[Operation], start: float, threshold: float, window: float
) -> float | None:
    t = start
    end = ops[-1].invoked if ops else start
    i = 0
    while i < len(ops) and ops[i].invoked < start:
        i += 1
    while t <= end:
        j = i
        total = good = 0
        while j < len(ops) and ops[j].invoked < t + window:
            total += 1
            good += ops[j].ok
            j += 1
        if total and good / total >= threshold:
            return t - start
        t += window
        i = j
    return None


# -- summary ----------------------------------------------------------------------------------
def summarize(history: Iterable[Event] | Sequence[Operation]) -> dict[str, int]:
    """Counts for reports: ``ops``, ``acknowledged`` writes (incl. appends and
    deletes), ``writes``, ``reads``, ``ok``, ``fail``, ``unknown``."""
    ops = _ops(history)
    counts = {"ops": len(ops), "writes": 0, "reads": 0, "acknowledged": 0}
    counts.update(ok=0, fail=0, unknown=0)
    for op in ops:
        if op.op == "read":
            counts["reads"] += 1
        else:
            counts["writes"] += 1
            counts["acknowledged"] += op.ok
        counts[op.status if op.status in ("ok", "fail") else "unknown"] += 1
    return counts
