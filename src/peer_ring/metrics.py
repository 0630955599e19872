"""Prometheus metrics for a node, collected on scrape.

Each node has its own :class:`prometheus_client.CollectorRegistry` (several
nodes can live in one process, as in tests), filled by a collector that reads
the node's state when ``/metrics`` is scraped: nothing is counted twice and
the hot path pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from peer_ring.membership.base import MemberState

if TYPE_CHECKING:
    from peer_ring.node import Node


class NodeCollector(Collector):
    """Reads a node's membership, ring and transport figures at scrape time."""

    def __init__(self, node: Node) -> None:
        self.node = node
        #: Extra collectors (services, servers) contributing metric families.
        self.extra: list[Callable[[], Iterator[Any]]] = []

    def collect(self) -> Iterator[Any]:
        node = self.node
        states = GaugeMetricFamily(
            "peer_ring_members", "Members by state as seen by this node", labels=["state"]
        )
        counts = dict.fromkeys(MemberState, 0)
        for mid in node.members:
            counts[node.member_state(mid)] += 1
        for state, n in counts.items():
            states.add_metric([state.value], n)
        yield states
        ring = node.ring
        info = InfoMetricFamily("peer_ring_ring", "Ring epoch and shape")
        info.add_metric(
            [],
            {
                "epoch": ring.epoch,
                "partitions": str(ring.partitions),
                "replicas": str(ring.replicas),
            },
        )
        yield info
        owned = GaugeMetricFamily(
            "peer_ring_owned_partitions", "Partitions this node holds a replica of"
        )
        owned.add_metric([], len(ring.partitions_of(node.id)))
        yield owned
        stats: dict[str, int] = getattr(node.transport, "stats", {})
        for name, value in sorted(stats.items()):
            c = CounterMetricFamily(
                f"peer_ring_transport_{name}", f"Transport counter {name.replace('_', ' ')}"
            )
            c.add_metric([], value)
            yield c
        for name, value in sorted(node.metrics().items()):
            text = name.replace("_", " ")
            if name.endswith(("_in_progress", "_queued")):
                g = GaugeMetricFamily(f"peer_ring_{name}", f"Membership change: {text}")
                g.add_metric([], value)
                yield g
            else:
                c = CounterMetricFamily(f"peer_ring_{name}", f"Membership change: {text}")
                c.add_metric([], value)
                yield c
        for ns, metric in node.app_metrics():
            family = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
            f = family(f"peer_ring_{ns}_{metric.name}", metric.help)
            f.add_metric([], metric.value)
            yield f
        for extra in self.extra:
            yield from extra()


def make_registry(node: Node) -> tuple[CollectorRegistry, NodeCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = NodeCollector(node)
    registry.register(collector)
    return registry, collector


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
