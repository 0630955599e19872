"""Checkers: pure functions over a history (:mod:`peer_ring.testing.history`) and final reads.

The model is the one of Jepsen's checkers, Knossos (real-time order of
operations) and Elle (Kingsbury & Alvaro, VLDB 2020: list-append histories
whose every read is a view of one order of appends), written here for a
Dynamo-style store (DeCandia et al., SOSP 2007) whose versions are dotted
version vectors (Almeida et al., DAIS 2014). Every operation has a real-time
interval ``[invoked, completed]``; "``a`` before ``b``" means ``a`` was
acknowledged before ``b`` was invoked. The formal statement of each rule is
in ``docs/reliability.md``.

* :func:`check_stale_reads` -- **a read sees every write acknowledged before
  it began**, unless a write not older in real time replaced it. Nil reads
  are checked like any other.
* :func:`check_list_order` -- **every read of a list is a prefix of one
  order** of its elements: no duplicate, no hole, no reorder against real
  time.
* :func:`check_lost_writes` -- **no acknowledged write is lost** from the
  final state: appended elements stay; in ``"siblings"`` mode a written
  value stays as a sibling unless a *causal successor* (a write whose
  context contained it) that is itself accounted for replaced it; in
  ``"lww"`` mode the final value is a write not older in real time than
  any acknowledged write.
* :func:`check_invented_values` -- **no value is read that was never
  written.** Every value read (and every final value) is the value of some
  write invoked before the read completed, or, for list-valued keys, made
  only of elements appended or written before then.
* :func:`check_convergence` -- **every owner of every key answers, and they
  hold identical contents** (given per-replica dumps taken after the heal).
* :func:`check_availability` -- **time to recover**: for each fault start
  and heal, the time until a window of operations succeeds at least
  ``threshold`` (99%). A report, not a pass/fail gate on timings, except that
  a heal after which availability never returned fails.
* :func:`fault_window_ops` -- how many operations ran (and were
  acknowledged) while a fault was active: a scenario whose fault saw no
  traffic tested nothing.

Operations whose outcome is ``unknown`` (timeouts, lost connections, quorum
not reached) may or may not have taken effect, at any time after their
invocation: a value they wrote may *explain* a read or a final value, but
they never *excuse* the loss of an acknowledged write by themselves (a
successor counts only if it is accounted for). Only ``fail`` means
"certainly not applied".

List-valued keys (any key with an ``append``) hold elements separated by
``sep`` (default ``";"``, with a trailing separator: ``"a;b;c;"``), so that
a lost append is visible as a missing element.

Final state: ``{key: [sibling value, ...]}``; a missing or deleted key is an
empty list. Over RESP only the resolved value is visible (one sibling); the
replicas' own copies (:func:`peer_ring.testing.workload.replica_dumps`) show
every sibling.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


# -- real-time order: shared helpers --------------------------------------------------
INF = float("inf")


def _end(op: Operation) -> float:
    """When ``op`` took effect at the latest: its acknowledgement, or never
    bounded (``inf``) when its outcome is unknown -- a write that timed out
    may still land, and its completion event says nothing about when."""
    if op.ok and op.completed is not None:
        return op.completed
    return INF


def _acked_before(op: Operation, t: float) -> bool:
    """``op`` was acknowledged before instant ``t`` (it precedes ``t`` in real time)."""
    return op.ok and op.completed is not None and op.completed < t


def _by_key(ops: Sequence[Operation]) -> dict[str, list[Operation]]:
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    return by_key


def _is_list_key(key_ops: Sequence[Operation]) -> bool:
    return any(o.op == "append" for o in key_ops)


def _check_mode(mode: str) -> None:
    if mode not in ("siblings", "lww"):
        raise InvalidRequest(f"conflict mode must be 'siblings' or 'lww', not {mode!r}")


def _register_writers(key_ops: Sequence[Operation]) -> list[Operation]:
    """Writes and deletes of a register key that may have taken effect."""
    return [o for o in key_ops if o.op in ("write", "delete") and o.maybe_applied]


def _register_explained(
    writers: Sequence[Operation], value: str | None, floor: float, before: float
) -> bool:
    """Some write of ``value`` (a delete for ``None``), invoked before ``before``,
    is *not older* than ``floor``: it took effect at or after ``floor`` (it was
    concurrent with, or later than, every write acknowledged before the read)."""
    for w in writers:
        produced = w.value if w.op == "write" else None
        if produced == value and w.invoked <= before and _end(w) >= floor:
            return True
    return False


# -- (a) lost writes ----------------------------------------------------------------
def check_lost_writes(
    history: Iterable[Event] | Sequence[Operation],
    final: FinalState,
    *,
    mode: ConflictMode = "siblings",
    sep: str = ";",
) -> CheckResult:
    """No acknowledged write or append is missing from the final state.

    The rules (formal statements in ``docs/reliability.md``):

    * **append** (both modes): every acknowledged element is an element of
      the final value (of some sibling), unless a write whose ``context``
      contained it replaced the list and is itself accounted for (below).
    * **write, siblings mode**: every acknowledged value is a final sibling,
      unless *causally* superseded: a write whose ``context`` contained it,
      or a delete invoked after its acknowledgement -- and that successor is
      accounted for: its value is final, or it was acknowledged (then it is
      checked itself), or it is a delete, or it is superseded in turn by an
      accounted-for successor. A write whose outcome is unknown therefore
      never excuses a loss by itself: its own value must have survived.
    * **write, lww mode**: the final value (``[]``: a delete) is the value of
      a write ``c`` that is *not older in real time* than any acknowledged
      write ``w``: ``c`` did not complete before ``w`` was invoked (``c`` is
      concurrent with ``w`` or later; an unknown ``c`` is never bounded). Every
      acknowledged ``w`` invoked after the final value's every candidate
      completed is lost (a later acknowledged write was overwritten by an
      older one).

    ``data``: ``acknowledged`` (writes + appends acknowledged), ``lost``
    (count), ``lost_ops`` (ids), ``superseded``, ``unknown`` (writes/appends
    with unknown outcome).
    """
    _check_mode(mode)
    ops = _ops(history)
    problems: list[str] = []
    lost: list[int] = []
    acknowledged = superseded = unknown = 0
    for key, key_ops in _by_key(ops).items():
        siblings = [s for s in final.get(key, ()) if s is not None]
        present_values = set(siblings)
        present_elems = {e for s in siblings for e in elements(s, sep)}
        writers = [o for o in key_ops if o.op in ("write", "delete", "append") and o.maybe_applied]
        accounted = _Accounted(writers, present_values, present_elems, sep)
        list_key = _is_list_key(key_ops)
        lww_lost: set[int] = set()
        if mode == "lww" and not list_key:
            lww_lost = _lww_final_losses(key_ops, siblings)
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
            if mode == "lww" and not list_key:
                if op.id not in lww_lost:
                    continue
            else:
                present = present_elems if op.op == "append" else present_values
                if op.value in present:
                    continue
                if accounted.superseded(op):
                    superseded += 1
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


def _lww_final_losses(key_ops: Sequence[Operation], siblings: Sequence[str]) -> set[int]:
    """Ids of the acknowledged writes an LWW register's final value lost (see
    :func:`check_lost_writes`): every acknowledged write when no candidate
    wrote the final value, else those invoked after the last candidate's end."""
    acked = [o for o in key_ops if o.op in ("write", "delete") and o.ok]
    if not acked:
        return set()
    produced = set(siblings) if siblings else {None}
    ends = [
        _end(w)
        for w in _register_writers(key_ops)
        if (w.value if w.op == "write" else None) in produced
    ]
    if not ends:
        return {o.id for o in acked if o.op == "write"}
    latest = max(ends)
    return {o.id for o in acked if o.op == "write" and o.invoked > latest}


class _Accounted:
    """Whether a causal successor excuses a missing write (see :func:`check_lost_writes`)."""

    def __init__(
        self, writers: list[Operation], values: set[str], elems: set[str], sep: str
    ) -> None:
        self.writers = writers
        self.values = values
        self.elems = elems
        self.sep = sep
        self._memo: dict[int, bool] = {}

    def _successors(self, op: Operation) -> Iterator[Operation]:
        assert op.value is not None
        for w in self.writers:
            if w.id == op.id:
                continue
            if w.context is not None:
                if op.op == "append":
                    if any(op.value in elements(c, self.sep) for c in w.context):
                        yield w
                elif op.value in w.context:
                    yield w
            elif w.op == "delete" and op.completed is not None and w.invoked >= op.completed:
                yield w

    def superseded(self, op: Operation) -> bool:
        return any(self.stands(w) for w in self._successors(op))

    def stands(self, w: Operation) -> bool:
        """``w`` is accounted for: final, acknowledged, a delete, or superseded in turn."""
        if w.id in self._memo:
            return self._memo[w.id]
        self._memo[w.id] = False  # a context cycle accounts for nothing
        if w.op == "delete" or w.ok:
            ok = True
        elif w.op == "append":
            ok = w.value in self.elems
        else:
            ok = w.value in self.values
        if not ok:
            ok = any(self.stands(s) for s in self._successors(w))
        self._memo[w.id] = ok
        return ok


# -- (a') stale reads: real-time visibility ------------------------------------------------
def check_stale_reads(
    history: Iterable[Event] | Sequence[Operation],
    *,
    sep: str = ";",
) -> CheckResult:
    """Every read sees every write acknowledged before the read began.

    For each successful read ``r`` (a nil read too) of key ``k``:

    * **list keys** (appended to): every element whose append was
      acknowledged before ``r`` was invoked is an element of ``r``'s value;
    * **register keys**: let ``A`` be the writes and deletes of ``k``
      acknowledged before ``r`` was invoked. When ``A`` is not empty, ``r``'s
      value (``None``: missing) was produced by a write (a delete) ``c`` that
      may have taken effect, was invoked before ``r`` completed, and is not
      older than any ``w`` in ``A``: ``end(c) >= max(invoked(w))`` where
      ``end`` is the acknowledgement (``inf`` for an unknown outcome). A
      value no write produced at all is left to
      :func:`check_invented_values`.

    Over RESP a read shows the last-writer-wins sibling, so the register
    rule holds in both conflict modes exactly as far as the hybrid logical
    clocks order writes as real time does. ``data``: ``reads`` checked,
    ``stale`` (count), ``stale_ops`` (ids).
    """
    ops = _ops(history)
    problems: list[str] = []
    stale: list[int] = []
    reads = 0
    for key, key_ops in _by_key(ops).items():
        list_key = _is_list_key(key_ops)
        acked = sorted(
            (o for o in key_ops if o.op != "read" and o.ok and o.completed is not None),
            key=lambda o: o.completed or 0.0,
        )
        writers = _register_writers(key_ops)
        for r in key_ops:
            if r.op != "read" or not r.ok:
                continue
            reads += 1
            before = [w for w in acked if _acked_before(w, r.invoked)]
            if not before:
                continue
            done = r.completed if r.completed is not None else INF
            if list_key:
                seen = set(elements(r.value, sep))
                missing = [w.value for w in before if w.op == "append" and w.value not in seen]
                if missing:
                    stale.append(r.id)
                    problems.append(
                        f"stale read #{r.id} by {r.process} via {r.node} of {key!r} "
                        f"(invoked {r.invoked:.3f}) returned {r.value!r:.120}, missing "
                        f"{len(missing)} element(s) acknowledged before it: {missing[:5]!r}"
                    )
                continue
            floor = max(w.invoked for w in before)
            if _register_explained(writers, r.value, floor, done):
                continue
            if r.value is not None and not any(
                w.op == "write" and w.value == r.value for w in writers
            ):
                continue  # never written: an invented value, not a stale one
            newest = max(before, key=lambda w: w.invoked)
            stale.append(r.id)
            problems.append(
                f"stale read #{r.id} by {r.process} via {r.node} of {key!r} "
                f"(invoked {r.invoked:.3f}) returned {r.value!r:.80}, older than "
                f"{newest.op} #{newest.id} = {newest.value!r:.80} acknowledged at "
                f"{newest.completed:.3f}"
            )
    return CheckResult(
        "no stale read",
        not stale,
        _limit(problems),
        {"reads": reads, "stale": len(stale), "stale_ops": stale, "problem_count": len(problems)},
    )


# -- (a'') list order: one order, no duplicate ----------------------------------------------
def check_list_order(
    history: Iterable[Event] | Sequence[Operation],
    final: FinalState | None = None,
    *,
    sep: str = ";",
) -> CheckResult:
    """Every observation of a list key is a prefix of one order of its elements.

    The observations of a key are its successful reads (a nil read is the
    empty list) and its final siblings. Each must (1) hold no element twice,
    (2) be a prefix of the longest observation -- one order that every read
    is a view of, so no element is missing from the middle and none is
    reordered -- and (3) respect real time: an element whose append was
    acknowledged before another element's append was invoked comes first.
    ``data``: ``observations``, ``duplicates``, ``divergent`` (not a
    prefix), ``reordered`` (against real time).
    """
    ops = _ops(history)
    problems: list[str] = []
    dup = div = reord = observed = 0
    for key, key_ops in _by_key(ops).items():
        if not _is_list_key(key_ops):
            continue
        views: list[tuple[str, list[str]]] = []
        for r in key_ops:
            if r.op == "read" and r.ok:
                views.append((f"read #{r.id} by {r.process} via {r.node}", elements(r.value, sep)))
        for s in (final or {}).get(key, ()):
            views.append(("final value", elements(s, sep)))
        observed += len(views)
        for label, elems in views:
            if len(set(elems)) != len(elems):
                dup += 1
                twice = sorted({e for e in elems if elems.count(e) > 1})
                problems.append(f"duplicate: {label} of {key!r} holds {twice[:5]!r} twice")
        if not views:
            continue
        order = max((e for _, e in views), key=len)
        for label, elems in views:
            if elems != order[: len(elems)]:
                div += 1
                problems.append(
                    f"not one order: {label} of {key!r} is {sep.join(elems)!r:.120}, not a "
                    f"prefix of {sep.join(order)!r:.120}"
                )
        position = {e: i for i, e in reversed(list(enumerate(order)))}
        placed = [
            (o, position[o.value]) for o in key_ops if o.op == "append" and o.value in position
        ]
        for a, pa in placed:
            if not a.ok or a.completed is None:
                continue
            for b, pb in placed:
                if b.invoked > a.completed and pb < pa:
                    reord += 1
                    problems.append(
                        f"reordered: {key!r}: {b.value!r} (invoked {b.invoked:.3f}) comes before "
                        f"{a.value!r} (acknowledged {a.completed:.3f})"
                    )
    bad = dup + div + reord
    return CheckResult(
        "list appends in one order",
        bad == 0,
        _limit(problems),
        {
            "observations": observed,
            "duplicates": dup,
            "divergent": div,
            "reordered": reord,
            "problem_count": len(problems),
        },
    )


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
    unanswered: Mapping[str, str] | None = None,
) -> CheckResult:
    """Every owner of every key answered, and all of them hold the same values.

    ``dumps`` maps a node name to its local contents ``{key: values}`` (the
    sibling values it stores; a key it does not hold is absent or empty).
    With ``owners`` (``{key: [node, ...]}``) exactly those nodes are
    compared: an owner that lacks the key diverges, and an owner with no
    dump at all (it never answered: ``unanswered`` says why) fails the key
    -- a replica that cannot be read is not skipped. Without ``owners``
    every node that holds the key is compared. ``keys`` restricts the check
    (default: every key any dump or ``owners`` names). ``data``:
    ``divergent`` (keys), ``silent_owners`` (nodes that never answered).
    """
    all_keys: set[str] = set(keys) if keys is not None else set()
    if keys is None:
        for contents in dumps.values():
            all_keys.update(contents)
        if owners is not None:
            all_keys.update(owners)
    why = dict(unanswered or {})
    problems: list[str] = []
    divergent: list[str] = []
    silent: set[str] = set()
    for key in sorted(all_keys):
        if owners is not None and key in owners:
            nodes = list(owners[key])
            missing = [n for n in nodes if n not in dumps]
            if missing:
                silent.update(missing)
                divergent.append(key)
                shown = ", ".join(f"{n} ({why.get(n, 'no dump')})" for n in missing)
                problems.append(f"unanswered: {key!r}: owner(s) {shown:.200}")
                continue
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
        {
            "keys": len(all_keys),
            "divergent": len(divergent),
            "divergent_keys": divergent,
            "silent_owners": sorted(silent),
            "problem_count": len(problems),
        },
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


# -- traffic during faults ---------------------------------------------------------------
def fault_windows(history: Iterable[Event]) -> list[tuple[str, float, float]]:
    """``(kind target, start, heal)`` of every fault; a fault never healed ends at ``inf``."""
    open_: dict[tuple[str, str], list[float]] = defaultdict(list)
    windows: list[tuple[str, float, float]] = []
    for ev in history:
        if ev.type != "fault":
            continue
        name = (ev.kind or "?", ev.target or "?")
        if ev.phase == "start":
            open_[name].append(ev.time)
        elif ev.phase == "heal" and open_[name]:
            windows.append((" ".join(name), open_[name].pop(0), ev.time))
    for name, starts in open_.items():
        windows += [(" ".join(name), t, INF) for t in starts]
    return sorted(windows, key=lambda w: w[1])


def fault_window_ops(history: Iterable[Event]) -> dict[str, int]:
    """Operations invoked while some fault was active: ``ops`` and ``acknowledged``
    (ok), and ``faults`` (windows). Zero ``ops`` means the faults saw no traffic."""
    events = list(history)
    windows = fault_windows(events)
    during = acked = 0
    for op in operations(events):
        if any(start <= op.invoked <= end for _, start, end in windows):
            during += 1
            acked += op.ok
    return {"faults": len(windows), "ops": during, "acknowledged": acked}


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
