"""The shipped Prometheus alert rules parse and name only metrics a node exports."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "peer-ring-alerts.yaml"
#: Prometheus's own series, not a node's.
EXTERNAL = {"up"}


def exported_metrics() -> set[str]:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_reference
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return {name for name, _kind, _help, _labels in gen_reference.metric_families()}


def test_every_rule_is_complete_and_names_real_metrics() -> None:
    doc = yaml.safe_load(RULES.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert len(rules) >= 10
    exported = exported_metrics()
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]
        names = set(re.findall(r"\bpeer_ring_\w+", rule["expr"]))
        names |= {n for n in EXTERNAL if re.search(rf"\b{n}\{{", rule["expr"])}
        assert names, rule["alert"]
        assert names - exported - EXTERNAL == set(), rule["alert"]
    assert len({rule["alert"] for rule in rules}) == len(rules)
