"""The generated reference pages are current and complete.

``docs/operations/configuration.md`` and ``docs/operations/metrics.md`` are
written by ``tools/gen_reference.py`` from the config classes and from a real
node's metrics registry. A change to either without rerunning the generator
fails here, and so does a config field or a metric nobody described.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

from peer_ring import Node, NodeConfig
from peer_ring.metrics import NODE_METRICS, TRANSPORT_COUNTERS, make_registry
from peer_ring.transport.memory import MemoryNetwork

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_reference
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return gen_reference


def test_committed_pages_are_current(gen: ModuleType) -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, text in gen.pages().items()
        if not path.exists() or path.read_text() != text
    ]
    assert stale == [], "run .venv/bin/python tools/gen_reference.py and commit the pages"


def test_every_config_field_is_documented(gen: ModuleType) -> None:
    assert gen.undocumented_fields() == []


def test_every_metric_has_a_written_description(gen: ModuleType) -> None:
    families = gen.metric_families()
    assert len(families) > 30
    # the collector's fallbacks for undescribed figures: "Transport counter x y", "x y"
    for name, _kind, help_text, _labels in families:
        assert not help_text.startswith("Transport counter"), name
        assert help_text[:1].isupper(), name


async def test_node_figures_and_transport_counters_are_all_described() -> None:
    node = Node(
        NodeConfig.local("n1", listen="10.0.0.1:7400", transport="memory"), network=MemoryNetwork()
    )
    await node.start()
    try:
        assert set(node.metrics()) - set(NODE_METRICS) == set()
        assert set(node.transport.stats) - set(TRANSPORT_COUNTERS) == set()
    finally:
        await node.stop()


async def test_levels_are_gauges_and_totals_counters() -> None:
    node = Node(
        NodeConfig.local("n1", listen="10.0.0.1:7400", transport="memory"), network=MemoryNetwork()
    )
    await node.start()
    try:
        registry, _ = make_registry(node)
        kinds = {m.name: m.type for m in registry.collect()}
    finally:
        await node.stop()
    # partitions still syncing go down as well as up: a gauge, not a counter
    assert kinds["peer_ring_bootstrap_partitions_syncing"] == "gauge"
    assert kinds["peer_ring_hints_queued"] == "gauge"
    assert kinds["peer_ring_transfers_started"] == "counter"
