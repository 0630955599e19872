"""Fixtures of the fault-injection scenarios (see ``_harness.py``), and the run's summary.

Every scenario is parametrized over both KV conflict modes (the rate
limiter's over both limiter modes). ``make chaos``
(``PEER_RING_CHAOS=1``) and ``PEER_RING_FAULT_MODES=both`` run every scenario
in both; the regular suite, which must stay fast, runs each scenario in one
mode, alternating down the file (about half in each), and says so in the
count of deselected tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peer_ring.testing.checker import ConflictMode
from tests.fault._harness import CHAOS, LIMITER_MODES, MODES, REPORTS, Scenario, make_scenario

#: Parameters the regular suite alternates down a file instead of running every
#: value: the KV conflict mode, and the rate limiter's mode.
ALTERNATED: dict[str, tuple[str, ...]] = {"mode": MODES, "limiter_mode": LIMITER_MODES}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Outside chaos runs, keep one conflict mode per fault scenario (see the module doc)."""
    if CHAOS or os.environ.get("PEER_RING_FAULT_MODES") == "both":
        return
    here = Path(__file__).parent
    bases: dict[tuple[str, str], int] = {}
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        param = next((p for p in ALTERNATED if callspec and p in callspec.params), None)
        if callspec is None or param is None or here not in item.path.parents:
            keep.append(item)
            continue
        values = ALTERNATED[param]
        others = sorted((k, str(v)) for k, v in callspec.params.items() if k != param)
        base = (item.path.name, f"{getattr(item, 'originalname', item.name)}{others}")
        index = bases.setdefault(base, len(bases))
        (keep if callspec.params[param] == values[index % len(values)] else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> ConflictMode:
    """The KV conflict mode of the scenario's nodes: every scenario runs in both."""
    value: ConflictMode = request.param
    return value


@pytest.fixture
def scenario_factory(
    tmp_path: Path, request: pytest.FixtureRequest, mode: ConflictMode
) -> Iterator[Callable[..., Scenario]]:
    """``scenario_factory(size)`` starts a --testing cluster in ``mode``; all are
    closed at teardown."""
    made: list[Scenario] = []

    def make(size: int = 5, **cluster_kw: Any) -> Scenario:
        cluster_kw.setdefault("mode", mode)
        return make_scenario(tmp_path, request.node.name, made, size, **cluster_kw)

    yield make
    for sc in made:
        sc.cluster.close()
        sc.history.close()


COLUMNS = (
    ("scenario", "scenario"),
    ("mode", "mode"),
    ("ops", "ops"),
    ("fault_ops", "ops in fault"),
    ("acknowledged", "acked writes"),
    ("stale_reads", "stale reads"),
    ("lost", "lost writes"),
    ("order_violations", "order"),
    ("invented", "invented"),
    ("divergent_keys", "divergent keys"),
    ("unknown", "unknown"),
    ("convergence_s", "converged s"),
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Per scenario and mode: traffic during the fault and what each checker found."""
    if not REPORTS:
        return
    rows = [[str(r.get(k, "")) for k, _ in COLUMNS] for r in REPORTS]
    heads = [h for _, h in COLUMNS]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]
    tr = terminalreporter
    tr.section("fault scenarios")
    tr.write_line("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)))
    for row, report in zip(rows, REPORTS, strict=True):
        tr.write_line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if report.get("weaker_promise"):
            tr.write_line(f"    promised less: {report['weaker_promise']}")
