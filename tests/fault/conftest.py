"""Fixtures of the fault-injection scenarios (see ``_harness.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fault._harness import Scenario, make_scenario


@pytest.fixture
def scenario_factory(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Scenario]]:
    """``scenario_factory(size)`` starts a --testing cluster; all are closed at teardown."""
    made: list[Scenario] = []

    def make(size: int = 5, **cluster_kw: Any) -> Scenario:
        return make_scenario(tmp_path, request.node.name, made, size, **cluster_kw)

    yield make
    for sc in made:
        sc.cluster.close()
        sc.history.close()
