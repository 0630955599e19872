"""Write the Grafana dashboard of a peer-ring cluster: ``deploy/grafana/peer-ring.json``.

The dashboard is data (the panel list below), rendered into Grafana's JSON
model (schema 39, Grafana 10/11), so that panels stay uniform and the file
is reviewable. Every expression names metrics a node exports:
``tests/integration/core/test_dashboards_and_alerts.py`` scrapes a real
node's ``/metrics`` and fails on any other name. Run
``.venv/bin/python tools/gen_dashboard.py`` after changing a panel;
``--check`` exits 1 when the committed file is stale (the unit test
``tests/unit/test_dashboard_generated.py`` does the same).

Import: Grafana -> Dashboards -> New -> Import, upload the file, choose your
Prometheus data source. The ``instance`` variable filters nodes; the
``job`` variable is the scrape job of the nodes (``peer-ring`` by default).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "peer-ring.json"

#: Label matcher every expression carries (the dashboard's variables).
SEL = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"


def rate(metric: str, what: str = "") -> tuple[str, str]:
    """Per-second rate of a counter per node, and its legend."""
    return (
        f"sum by (instance) (rate({metric}{{{SEL}}}[{RATE}]))",
        f"{{{{instance}}}} {what}".strip(),
    )


def increase(metric: str, what: str = "") -> tuple[str, str]:
    return (
        f"sum by (instance) (increase({metric}{{{SEL}}}[{RATE}]))",
        f"{{{{instance}}}} {what}".strip(),
    )


def gauge(metric: str, what: str = "") -> tuple[str, str]:
    return (f"sum by (instance) ({metric}{{{SEL}}})", f"{{{{instance}}}} {what}".strip())


# (title, unit, [(expression, legend)], description) per panel, by row.
ROWS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]], str]]]] = [
    (
        "Cluster",
        [
            (
                "Members by state (each node's view)",
                "short",
                [
                    (
                        f"sum by (instance, state) (peer_ring_members{{{SEL}}})",
                        "{{instance}} {{state}}",
                    )
                ],
                "Members each node sees, by state. Any 'down' for long: the PeerRingNodeDown "
                "alert. During a scale-out the count grows on every node within a few "
                "member-exchange intervals.",
            ),
            (
                "Distinct ring epochs",
                "short",
                [(f"count(count by (epoch) (peer_ring_ring_info{{{SEL}}}))", "epochs")],
                "1 when every node computes the same ring. Above 1 for more than a few "
                "seconds after a join or leave: views differ (PeerRingRingViewsDiffer).",
            ),
            (
                "Owned partitions",
                "short",
                [(f"peer_ring_owned_partitions{{{SEL}}}", "{{instance}}")],
                "Partition replicas each node holds: after a scale step they even out "
                "(about Q x N / nodes each).",
            ),
            (
                "Quorum rounds and failures /s",
                "ops",
                [
                    rate("peer_ring_quorum_rounds_total", "rounds"),
                    rate("peer_ring_quorum_failures_total", "failures"),
                ],
                "Reads and writes this node coordinated, and those that failed with "
                "QuorumNotReached (PeerRingQuorumFailures). Failures during a scale "
                "step mean too few replicas answered: look at members and transfers.",
            ),
        ],
    ),
    (
        "Scaling: partition transfers",
        [
            (
                "Transfers running and queued",
                "short",
                [
                    (
                        f"sum by (instance) (peer_ring_transfers_in_progress{{{SEL}}})",
                        "{{instance}} running",
                    ),
                    (
                        f"sum by (instance) (peer_ring_transfers_queued{{{SEL}}})",
                        "{{instance}} queued",
                    ),
                ],
                "Non-zero while a join or leave moves partitions. Wait for 0 on every "
                "node before the next scale step.",
            ),
            (
                "Records moved /s",
                "ops",
                [
                    rate("peer_ring_records_sent_total", "sent"),
                    rate("peer_ring_records_received_total", "received"),
                ],
                "Transfer throughput. A leaving pod's sent rate is the rate of the "
                "grace-period formula (docs/operations/scaling.md).",
            ),
            (
                "Transfer bytes sent /s",
                "Bps",
                [rate("peer_ring_bytes_sent_total")],
                "Packed chunk bytes: compare with HandoffConfig.max_bytes_per_second.",
            ),
            (
                "Transfers completed and failed",
                "short",
                [
                    increase("peer_ring_transfers_completed_total", "completed"),
                    increase("peer_ring_transfers_failed_total", "failed"),
                ],
                "Failed transfers are retried by the sweep; any failure is worth a "
                "look (PeerRingTransfersFailing).",
            ),
            (
                "Bootstrap: partitions not yet synced",
                "short",
                [(f"peer_ring_bootstrap_partitions_syncing{{{SEL}}}", "{{instance}}")],
                "A started or joining node refuses reads of these until they arrive "
                "by transfer or sync; the pod is not ready meanwhile.",
            ),
            (
                "Partitions dropped after handoff /s",
                "short",
                [rate("peer_ring_partitions_dropped_total")],
                "Old owners drop a partition only after every new owner confirmed it.",
            ),
        ],
    ),
    (
        "Hints and repair",
        [
            (
                "Hints queued",
                "short",
                [(f"peer_ring_hints_queued{{{SEL}}}", "{{instance}}")],
                "Writes kept for a down owner. Growing: an owner stays down "
                "(PeerRingHintsGrowing, PeerRingHintsBacklog).",
            ),
            (
                "Hints stored, delivered, refused /s",
                "ops",
                [
                    rate("peer_ring_hints_stored_total", "stored"),
                    rate("peer_ring_hints_delivered_total", "delivered"),
                    rate("peer_ring_hints_refused_total", "refused"),
                ],
                "Refused hints fail writes whose home replica is down.",
            ),
            (
                "Anti-entropy keys repaired /s",
                "ops",
                [
                    rate("peer_ring_ae_keys_pushed_total", "pushed"),
                    rate("peer_ring_ae_keys_pulled_total", "pulled"),
                    rate("peer_ring_ae_failures_total", "failed exchanges"),
                ],
                "With every node up, replicas should rarely differ.",
            ),
        ],
    ),
    (
        "Clients and transport",
        [
            (
                "Redis commands /s",
                "ops",
                [
                    rate("peer_ring_resp_commands_processed_total", "commands"),
                    rate("peer_ring_resp_error_replies_total", "errors"),
                ],
                "Error replies are mostly -TRYAGAIN (quorum not reached).",
            ),
            (
                "Redis connections",
                "short",
                [(f"peer_ring_resp_connections{{{SEL}}}", "{{instance}}")],
                "Open RESP connections per node.",
            ),
            (
                "Peer requests and timeouts /s",
                "ops",
                [
                    rate("peer_ring_transport_requests_out_total", "requests"),
                    rate("peer_ring_transport_timeouts_total", "timeouts"),
                ],
                "Timeouts above ~1 % of requests: overloaded nodes or network.",
            ),
            (
                "KV keys per node",
                "short",
                [(f"peer_ring_kv_keys{{{SEL}}}", "{{instance}} keys")],
                "Key states each node holds (replicas included). Memory is the first "
                "capacity limit: scale out before the pods' memory limit.",
            ),
            (
                "KV memory used",
                "bytes",
                [(f"peer_ring_kv_memory_used_bytes{{{SEL}}}", "{{instance}}")],
                "Data bytes the KV store accounts for (--maxmemory applies to it).",
            ),
        ],
    ),
    (
        "Applications",
        [
            (
                "Rate limiter decisions and over-limit /s",
                "ops",
                [
                    rate("peer_ring_ratelimit_decisions_total", "decisions"),
                    rate("peer_ring_ratelimit_over_limit_total", "over limit"),
                ],
                "A surge of over-limit decisions: PeerRingRateLimitOverLimitSurge.",
            ),
            (
                "Rate limiter keys",
                "short",
                [
                    (f"peer_ring_ratelimit_keys{{{SEL}}}", "{{instance}} keys"),
                    (f"peer_ring_ratelimit_unreplicated{{{SEL}}}", "{{instance}} unreplicated"),
                ],
                "Counters this node keeps, and those not yet copied to a replica.",
            ),
            (
                "Streams: entries and pending",
                "short",
                [
                    (f"peer_ring_streams_entries{{{SEL}}}", "{{instance}} entries"),
                    (f"peer_ring_streams_pending{{{SEL}}}", "{{instance}} pending"),
                ],
                "Entries held and delivered-but-unacknowledged entries.",
            ),
            (
                "Pub/sub messages /s",
                "ops",
                [
                    rate("peer_ring_pubsub_publishes_total", "published"),
                    rate("peer_ring_pubsub_deliveries_total", "delivered"),
                ],
                "Messages published through this node and delivered to its subscribers.",
            ),
        ],
    ),
]


def _variable(name: str, query: str, label: str, default: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": default, "value": default},
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    """The dashboard model (deterministic: ids and positions from the panel order)."""
    panels: list[dict[str, Any]] = []
    pid = 0
    y = 0
    for row_title, row_panels in ROWS:
        pid += 1
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        for i, (title, unit, targets, description) in enumerate(row_panels):
            pid += 1
            panels.append(
                {
                    "id": pid,
                    "type": "timeseries",
                    "title": title,
                    "description": description,
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "gridPos": {"h": 8, "w": 8, "x": (i % 3) * 8, "y": y + (i // 3) * 8},
                    "fieldConfig": {
                        "defaults": {"unit": unit, "custom": {"fillOpacity": 10}},
                        "overrides": [],
                    },
                    "options": {
                        "legend": {"displayMode": "list", "placement": "bottom"},
                        "tooltip": {"mode": "multi", "sort": "desc"},
                    },
                    "targets": [
                        {
                            "refId": chr(ord("A") + j),
                            "expr": expr,
                            "legendFormat": legend,
                            "datasource": {"type": "prometheus", "uid": "${datasource}"},
                        }
                        for j, (expr, legend) in enumerate(targets)
                    ],
                }
            )
        y += ((len(row_panels) + 2) // 3) * 8
    return {
        "title": "peer-ring",
        "uid": "peer-ring",
        "description": "A peer-ring cluster: members, ring, quorums, partition transfers "
        "while scaling, hints and repair, clients, applications (tools/gen_dashboard.py).",
        "tags": ["peer-ring"],
        "timezone": "",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                _variable("job", "label_values(peer_ring_ring_info, job)", "job", "peer-ring"),
                _variable(
                    "instance",
                    'label_values(peer_ring_ring_info{job=~"$job"}, instance)',
                    "node",
                    "$__all",
                ),
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args()
    text = render()
    if DASHBOARD.exists() and DASHBOARD.read_text() == text:
        return 0
    if args.check:
        print(f"stale: {DASHBOARD.relative_to(ROOT)} (run tools/gen_dashboard.py)", file=sys.stderr)
        return 1
    DASHBOARD.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD.write_text(text)
    print(f"wrote {DASHBOARD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
