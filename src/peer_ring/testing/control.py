"""Scaling a running ``peer-ring cluster up`` from other commands: its state file and requests.

``peer-ring cluster up`` (the *supervisor*) owns every node process of a
local cluster: they are its children, so its Ctrl-C (or its death, through
``PR_SET_PDEATHSIG``) stops all of them. Other commands never start or signal
node processes themselves; they talk to the supervisor through its log
directory:

* ``cluster.json`` -- the state, written by the supervisor only (atomically:
  a temporary file renamed over the old one), after every change: each
  node's name, addresses, PID, whether it reported ready, and its exit code
  once it exited. Readers poll it.
* ``requests/<id>.json`` -- a request of another command (``{"op": "add"}``).
  The supervisor serves requests from its watch loop (every 0.5 s) and
  answers in ``requests/<id>.answer.json`` with the node it started, or an
  error.

A remove (a decommission) needs no request: the removing command sends the
node the ``leave`` peer operation itself, and the supervisor reports the
exit like any other.

Invariants: node processes are signalled only by the supervisor, by the PID
it started; only 127.0.0.0/8 addresses are used (:class:`LocalCluster`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from peer_ring.testing.cluster import LocalCluster

STATE_FILE = "cluster.json"
REQUESTS_DIR = "requests"


class ControlError(RuntimeError):
    """No supervisor answers in that directory, or it refused the request."""


def write_state(cluster: LocalCluster, supervisor: int | None = None) -> None:
    """Write the supervisor's ``cluster.json`` (atomically)."""
    nodes: dict[str, Any] = {}
    for table, removed in ((cluster.nodes, False), (cluster.removed, True)):
        for name, n in table.items():
            code = n.proc.poll() if n.proc is not None else None
            nodes[name] = {
                "address": n.address,
                "resp": n.resp,
                "http": n.http,
                "pid": n.pid,
                "ready": bool(n.ready),
                "exit_code": code,
                "removed": removed,
                "log": str(n.log_path),
            }
    state = {
        "supervisor": os.getpid() if supervisor is None else supervisor,
        "partitions": cluster.partitions,
        "replicas": cluster.replicas,
        "transport": cluster.transport,
        "nodes": nodes,
        "updated": time.time(),
    }
    path = cluster.dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    tmp.replace(path)


def read_state(directory: Path) -> dict[str, Any]:
    """The state of the supervisor of ``directory``; :class:`ControlError` when
    there is none or its supervisor is gone."""
    path = directory / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ControlError(
            f"no local cluster in {directory} (start one with `peer-ring cluster up "
            f"--log-dir {directory}`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ControlError(f"cannot read {path}: {exc}") from exc
    if not pid_alive(int(state.get("supervisor") or 0)):
        raise ControlError(
            f"the cluster of {directory} is not running (its `peer-ring cluster up` exited)"
        )
    return state


def running_nodes(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The nodes of ``state`` whose process has not exited."""
    return {
        name: n
        for name, n in state["nodes"].items()
        if n["exit_code"] is None and not n["removed"] and pid_alive(int(n["pid"] or 0))
    }


def find_node(state: dict[str, Any], node: str) -> tuple[str, dict[str, Any]]:
    """A running node by name (``n4``) or peer address (``127.0.0.5:7400``)."""
    for name, n in running_nodes(state).items():
        if node in (name, n["address"]):
            return name, n
    known = ", ".join(f"{k} ({v['address']})" for k, v in running_nodes(state).items())
    raise ControlError(f"no running node {node!r} in this cluster; running: {known or 'none'}")


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (Linux ``/proc``; elsewhere ``kill 0``)."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- requests ---------------------------------------------------------------------
def submit(directory: Path, op: str, timeout: float = 15.0) -> dict[str, Any]:
    """Ask the supervisor of ``directory`` to do ``op`` and return its answer."""
    read_state(directory)  # a clear error when nothing runs there
    requests = directory / REQUESTS_DIR
    requests.mkdir(exist_ok=True)
    rid = uuid.uuid4().hex[:12]
    tmp = requests / f"{rid}.tmp"
    tmp.write_text(json.dumps({"op": op, "id": rid}))
    tmp.replace(requests / f"{rid}.json")
    answer_path = requests / f"{rid}.answer.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answer_path.exists():
            answer: dict[str, Any] = json.loads(answer_path.read_text())
            answer_path.unlink()
            if "error" in answer:
                raise ControlError(answer["error"])
            return answer
        time.sleep(0.05)
    (requests / f"{rid}.json").unlink(missing_ok=True)
    raise ControlError(f"the cluster of {directory} did not answer within {timeout:.0f}s")


def serve_requests(cluster: LocalCluster) -> list[str]:
    """Serve pending requests (the supervisor's watch loop); returns the names
    of the nodes started. An added node is started, not waited for: the
    loop follows its ready line with :meth:`LocalCluster.poll_ready`."""
    requests = cluster.dir / REQUESTS_DIR
    started: list[str] = []
    if not requests.is_dir():
        return started
    for path in sorted(requests.glob("*.json")):
        if path.name.endswith(".answer.json"):
            continue
        try:
            request = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        path.unlink(missing_ok=True)
        answer: dict[str, Any]
        if request.get("op") == "add":
            try:
                node = cluster.add(start=False)
                cluster.spawn(node.name)
            except (OSError, ValueError, RuntimeError) as exc:
                answer = {"error": f"cannot add a node: {exc}"}
            else:
                started.append(node.name)
                answer = {
                    "name": node.name, "address": node.address, "pid": node.pid,
                    "resp": node.resp, "http": node.http, "log": str(node.log_path),
                }  # fmt: skip
        else:
            answer = {"error": f"unknown request {request.get('op')!r}"}
        out = requests / f"{request.get('id', path.stem)}.answer.json"
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(answer))
        tmp.replace(out)
    return started
