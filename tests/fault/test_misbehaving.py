"""The harness proves it can fail: nodes that break a promise on purpose are caught.

Every node runs ``--testing --misbehave MODE`` (``peer_ring._misbehave``:
a wrapper around the KV store's replica ``handle``), the whole scenario
harness runs against the cluster -- workload, final reads, replica dumps,
every checker -- and the checker that owns the broken promise must fail.
A checker that passes here could not see the bug it exists for.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fault._harness import Scenario, length

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

Factory = Callable[..., Scenario]


async def no_fault(sc: Scenario) -> None:
    """The misbehaviour is the fault."""


@pytest.mark.parametrize(
    ("misbehave", "checker"),
    [
        ("drop-writes:0.5", "lost"),  # acknowledged, then thrown away
        ("stale-reads", "stale"),  # served from a copy up to 1 s old
        ("duplicate-appends", "order"),  # an append applied twice
    ],
)
async def test_each_checker_catches_its_misbehaving_replica(
    scenario_factory: Factory, misbehave: str, checker: str
) -> None:
    sc = scenario_factory(5, node_args=["--misbehave", misbehave])
    await sc.run(no_fault, duration=length(3, 8), convergence_timeout=3.0)
    where = f"(artefacts: {sc.dir})"
    assert sc.workload.ok > 100, f"too little traffic to judge {where}"
    result = sc.results[checker]
    assert not result.ok, f"{misbehave} went unnoticed by {result.name} {where}"
    if checker == "lost":
        assert result.data["lost"] > 0
    elif checker == "stale":
        assert result.data["stale"] > 0
    else:
        assert result.data["duplicates"] > 0
