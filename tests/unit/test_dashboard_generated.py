"""deploy/grafana/peer-ring.json is what tools/gen_dashboard.py renders (edit the tool)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_dashboard_is_current_and_well_formed() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_dashboard
    finally:
        sys.path.remove(str(ROOT / "tools"))
    committed = gen_dashboard.DASHBOARD.read_text()
    assert committed == gen_dashboard.render(), "stale: run .venv/bin/python tools/gen_dashboard.py"
    doc = json.loads(committed)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        if panel["type"] == "row":
            continue
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        assert panel["targets"]
        assert panel["description"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    assert {v["name"] for v in doc["templating"]["list"]} == {"datasource", "job", "instance"}
