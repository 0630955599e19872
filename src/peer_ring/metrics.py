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

#: HELP text of each peer transport counter (``transport.stats``), exposed as
#: ``peer_ring_transport_NAME_total``.
TRANSPORT_COUNTERS: dict[str, str] = {
    "requests_out": "Requests this node sent to peers",
    "requests_in": "Requests peers sent to this node",
    "oneway_in": "One-way messages (no answer expected) received from peers",
    "timeouts": "Requests to peers that got no answer before their deadline",
    "protocol_errors": "Malformed frames or handshakes received (the channel was closed)",
    "auth_failures": "Peer channels refused because the other end failed authentication",
}

#: Kind (``counter`` or ``gauge``) and HELP text of each figure of
#: :meth:`Node.metrics`, exposed as ``peer_ring_NAME`` (counters with ``_total``).
#: A figure missing here is still exported, as a counter with a generated
#: text; the docs test (tests/unit/test_docs_generated.py) fails until it is
#: described.
NODE_METRICS: dict[str, tuple[str, str]] = {
    "transfers_started": ("counter", "Partition transfers this node started sending"),
    "transfers_completed": ("counter", "Partition transfers this node finished sending"),
    "transfers_failed": ("counter", "Partition transfers that failed after every retry"),
    "transfers_received": ("counter", "Partition transfers this node received completely"),
    "transfers_in_progress": ("gauge", "Partition transfers this node is sending now"),
    "transfers_queued": ("gauge", "Partition transfers waiting for a free stream slot"),
    "records_sent": ("counter", "Records sent in partition transfers"),
    "records_received": ("counter", "Records received in partition transfers"),
    "records_not_resent": (
        "counter",
        "Records a resumed transfer skipped because the receiver already had them",
    ),
    "bytes_sent": ("counter", "Bytes (packed chunks) sent in partition transfers"),
    "partitions_dropped": (
        "counter",
        "Partitions this node dropped after handing them to their new owners",
    ),
    "members_reaped": ("counter", "Members removed after being down longer than dead_after"),
    "hints_stored": ("counter", "Hinted writes this node stored for a down owner"),
    "hints_refused": ("counter", "Hinted writes refused because hint_max_records was reached"),
    "hints_delivered": ("counter", "Stored hints delivered to their owner"),
    "hints_queued": ("gauge", "Hints stored here and not yet delivered"),
    "hint_delivery_failures": ("counter", "Failed attempts to deliver hints to their owner"),
    "ae_exchanges": ("counter", "Anti-entropy exchanges (one partition with one co-owner)"),
    "ae_keys_pushed": ("counter", "Keys anti-entropy sent to a co-owner that lacked them"),
    "ae_keys_pulled": ("counter", "Keys anti-entropy fetched from a co-owner"),
    "ae_failures": ("counter", "Anti-entropy exchanges that failed"),
    "ae_skipped_moving": (
        "counter",
        "Anti-entropy turns skipped because the partition was being transferred",
    ),
    "bootstrap_partitions_syncing": (
        "gauge",
        "Owned partitions not yet synced since this node started (reads refused)",
    ),
    "bootstrap_partitions_synced": (
        "counter",
        "Owned partitions synced with their co-owners after a start",
    ),
    "bootstrap_partitions_by_transfer": (
        "counter",
        "Owned partitions a joining node received by transfer instead of a sync",
    ),
    "bootstrap_partitions_equal_roots": (
        "counter",
        "Owned partitions found in sync after a start by comparing Merkle roots alone",
    ),
    "bootstrap_exchange_failures": ("counter", "Failed bootstrap sync exchanges (retried)"),
    "epoch_mismatches": ("counter", "Service commands that arrived with another ring epoch"),
    "requests_fenced": (
        "counter",
        "Service commands refused with RingMismatch (this node does not own the partition)",
    ),
    "member_syncs": ("counter", "Member-list exchanges started because ring views differed"),
    "quorum_rounds": ("counter", "Quorum rounds this node coordinated (reads and writes)"),
    "quorum_failures": (
        "counter",
        "Quorum rounds that failed with QuorumNotReached (too few replicas answered in time)",
    ),
}


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
            text = TRANSPORT_COUNTERS.get(name, f"Transport counter {name.replace('_', ' ')}")
            c = CounterMetricFamily(f"peer_ring_transport_{name}", text)
            c.add_metric([], value)
            yield c
        for name, value in sorted(node.metrics().items()):
            kind, text = NODE_METRICS.get(name, ("counter", name.replace("_", " ")))
            family = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
            m = family(f"peer_ring_{name}", text)
            m.add_metric([], value)
            yield m
        for ns, metric in node.app_metrics():
            app_family = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
            f = app_family(f"peer_ring_{ns}_{metric.name}", metric.help)
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
