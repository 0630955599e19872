"""The state file and requests behind `peer-ring cluster add/remove` (no node started)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from peer_ring.testing.cluster import LocalCluster
from peer_ring.testing.control import (
    ControlError,
    find_node,
    read_state,
    running_nodes,
    serve_requests,
    submit,
    write_state,
)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_no_cluster_and_a_gone_cluster_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match=r"no local cluster in .* `peer-ring cluster up"):
        read_state(tmp_path)
    cluster = LocalCluster(3, subnet="127.0.34", artefacts=tmp_path)
    write_state(cluster, supervisor=_dead_pid())
    with pytest.raises(ControlError, match="is not running"):
        read_state(tmp_path)
    with pytest.raises(ControlError, match="is not running"):
        submit(tmp_path, "add")


def test_the_state_names_every_node_and_only_running_ones_are_found(tmp_path: Path) -> None:
    cluster = LocalCluster(3, subnet="127.0.34", artefacts=tmp_path, partitions=64)
    write_state(cluster)  # this process plays the supervisor; no node was started
    state = read_state(tmp_path)
    assert (state["replicas"], state["partitions"], state["supervisor"]) == (3, 64, os.getpid())
    assert sorted(state["nodes"]) == ["n1", "n2", "n3"]
    assert state["nodes"]["n2"]["address"] == "127.0.34.3:7400"
    assert running_nodes(state) == {}
    with pytest.raises(ControlError, match="no running node 'n2'"):
        find_node(state, "n2")
    fake: dict[str, Any] = dict(state, nodes={"n2": dict(state["nodes"]["n2"], pid=os.getpid())})
    assert find_node(fake, "n2")[0] == "n2"
    assert find_node(fake, "127.0.34.3:7400")[0] == "n2"


def test_a_request_nobody_serves_times_out_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    cluster = LocalCluster(1, subnet="127.0.34", artefacts=tmp_path)
    write_state(cluster)
    with pytest.raises(ControlError, match="did not answer within"):
        submit(tmp_path, "add", timeout=0.2)
    assert not list((tmp_path / "requests").glob("*.json")), "the request was not withdrawn"
    (tmp_path / "requests" / "r1.json").write_text(json.dumps({"op": "grow", "id": "r1"}))
    assert serve_requests(cluster) == []
    answer = json.loads((tmp_path / "requests" / "r1.answer.json").read_text())
    assert answer == {"error": "unknown request 'grow'"}
