"""The web console's picture of the cluster, built from the nodes' status maps.

:func:`build` turns the status map of the node serving the console
(``Node.status``) and those of the other members (the same map, asked over
the peer transport with ``["st"]``) into one JSON-ready snapshot: members,
the ring as one owner per partition with the partitions in transfer,
transfers (running, and finished recently) with progress and time left,
hinted-handoff queues, anti-entropy, load and each app's ``status()`` per
node. :class:`Rates` turns the counters of two successive snapshots into
per-second rates.

Pure: no I/O, no clock of its own (the caller passes ``now``), so the shape
is tested without a cluster (``tests/unit/server/test_console.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SNAPSHOT_VERSION", "Rates", "build", "ring_picture"]

#: Bumped when a field of the snapshot changes meaning (the page checks it).
SNAPSHOT_VERSION = 1

#: Finished transfers (done or failed, in the last minute) the snapshot lists,
#: newest first; ``transfer_summary`` counts them all per receiving node.
FINISHED_SHOWN = 12

#: Counters of ``Node.load`` turned into ``<name>_per_second``.
RATE_COUNTERS = ("rounds", "requests_in", "requests_out")


class Rates:
    """Per-second rates of each node's load counters between two readings.

    A reading closer than ``min_gap`` seconds to the previous one keeps the
    previous rates (two browsers asking at once do not produce a rate over
    a few milliseconds). A counter that went down (the node restarted)
    restarts the rate from the new reading.
    """

    def __init__(self, min_gap: float = 0.25) -> None:
        self.min_gap = min_gap
        #: node id -> (time, counters) of the reading the rates are measured from
        self._last: dict[str, tuple[float, dict[str, float]]] = {}
        self._rates: dict[str, dict[str, float]] = {}

    def update(self, node_id: str, now: float, counters: Mapping[str, Any]) -> dict[str, float]:
        values = {k: float(counters.get(k) or 0) for k in RATE_COUNTERS}
        last = self._last.get(node_id)
        if last is None:
            self._last[node_id] = (now, values)
            return self._rates.setdefault(node_id, {})
        then, old = last
        gap = now - then
        if gap < self.min_gap:
            return self._rates.get(node_id, {})
        rates = {
            f"{k}_per_second": max(values[k] - old[k], 0.0) / gap if values[k] >= old[k] else 0.0
            for k in RATE_COUNTERS
        }
        self._last[node_id] = (now, values)
        self._rates[node_id] = rates
        return rates

    def forget(self, keep: Sequence[str]) -> None:
        """Drop the readings of nodes no longer members."""
        for nid in [n for n in self._last if n not in keep]:
            self._last.pop(nid, None)
            self._rates.pop(nid, None)


def ring_picture(preference_lists: Sequence[Sequence[str]], moving: set[int]) -> dict[str, Any]:
    """The ring as the page draws it: ``nodes`` (ids, sorted), ``owners`` (per
    partition the index in ``nodes`` of its primary, -1 for none) and
    ``moving`` (partitions in transfer, ascending)."""
    nodes = sorted({lst[0] for lst in preference_lists if lst})
    index = {nid: i for i, nid in enumerate(nodes)}
    owners = [index[lst[0]] if lst else -1 for lst in preference_lists]
    return {"nodes": nodes, "owners": owners, "moving": sorted(moving)}


def _node_view(
    st: Mapping[str, Any] | None, error: str | None, rates: dict[str, float]
) -> dict[str, Any]:
    if st is None:
        return {"reachable": False, "error": error}
    load = dict(st.get("load") or {})
    load.update(rates)
    return {
        "reachable": True,
        "error": None,
        "uptime": st.get("uptime"),
        "epoch": st.get("epoch"),
        "load": load,
        "antientropy": st.get("antientropy") or {},
        "hints": st.get("hints") or {},
        "apps": st.get("apps") or {},
        "services": st.get("services") or [],
    }


def build(
    local: Mapping[str, Any],
    remote: Mapping[str, Mapping[str, Any] | str],
    *,
    preference_lists: Sequence[Sequence[str]],
    holders_moving: set[int],
    rates: Rates,
    now: float,
    interval: float,
    actions: Mapping[str, Any],
    actions_log: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The console snapshot.

    ``local`` is the serving node's status map; ``remote`` maps every other
    member id to its status map, or to a string saying why it has none
    (down, unreachable, not authorised). ``holders_moving``: partitions this
    node knows are still being handed off (``TransferManager.holders_of``).
    ``now`` is the monotonic time the rates are measured with.
    """
    me = str(local["node"])
    statuses: dict[str, Mapping[str, Any] | None] = {me: local}
    errors: dict[str, str | None] = {me: None}
    for nid, answer in remote.items():
        if isinstance(answer, str):
            statuses[nid], errors[nid] = None, answer
        else:
            statuses[nid], errors[nid] = answer, None
    nodes: dict[str, Any] = {}
    for nid, st in statuses.items():
        rate = rates.update(nid, now, st.get("load") or {}) if st is not None else {}
        nodes[nid] = _node_view(st, errors[nid], rate)
    rates.forget(list(statuses))
    transfers: list[dict[str, Any]] = []
    moving = set(holders_moving)
    for st in statuses.values():
        if st is None:
            continue
        for t in st.get("transfers") or []:
            transfers.append({**t, "state": "running"})
            moving.add(int(t["partition"]))
        for t in st.get("transfers_recent") or []:
            transfers.append({**t, "state": t.get("outcome", "done")})
    summary: dict[str, dict[str, int]] = {}
    for t in transfers:
        counts = summary.setdefault(str(t.get("to")), {"running": 0, "done": 0, "failed": 0})
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    running = sorted(
        (t for t in transfers if t["state"] == "running"),
        key=lambda t: (str(t.get("to")), t["partition"]),
    )
    finished = sorted(
        (t for t in transfers if t["state"] != "running"), key=lambda t: t.get("ago") or 0.0
    )
    return {
        "version": SNAPSHOT_VERSION,
        "node": me,
        "address": local.get("address"),
        "epoch": local.get("epoch"),
        "partitions": local.get("partitions"),
        "replicas": local.get("replicas"),
        "interval": interval,
        "failure_bound": local.get("failure_bound"),
        "actions": dict(actions),
        "actions_log": [dict(a) for a in actions_log],
        "members": list(local.get("members") or []),
        "services": list(local.get("services") or []),
        "ring": ring_picture(preference_lists, moving),
        # every running transfer, the newest finished ones; the summary counts all
        "transfers": running + finished[:FINISHED_SHOWN],
        "transfers_finished": len(finished),
        "transfer_summary": dict(sorted(summary.items())),
        "nodes": nodes,
    }
