"""The Kubernetes manifests in deploy/kubernetes parse and agree with each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"


def load_all() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in load_all() if d["kind"] == kind]


def the(kind: str) -> dict[str, Any]:
    found = by_kind(kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def test_every_essential_kind_is_present() -> None:
    kinds = {d["kind"] for d in load_all()}
    assert {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
    } <= kinds
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_rbac_is_exactly_read_only_endpointslices() -> None:
    role = the("Role")
    assert role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    assert not by_kind("ClusterRole"), "discovery is namespace-scoped"
    binding = the("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = the("ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    pod = the("StatefulSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account


def headless_service() -> dict[str, Any]:
    headless = [s for s in by_kind("Service") if s["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1
    return headless[0]


def test_labels_and_selectors_are_consistent() -> None:
    sts = the("StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    selector = sts["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    for service in by_kind("Service"):
        assert service["spec"]["selector"].items() <= pod_labels.items()
    pdb = the("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert sts["spec"]["serviceName"] == headless_service()["metadata"]["name"]


def test_headless_service_publishes_not_ready_pods_and_names_the_peer_port() -> None:
    service = headless_service()
    assert service["spec"]["publishNotReadyAddresses"] is True
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert "peer" in port_names  # KubernetesConfig.port_name default
    container = the("StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in container_ports


def test_probes_hit_healthz_and_readyz_on_the_http_port() -> None:
    container = the("StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    http_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    assert f"--http=0.0.0.0:{http_port}" in container["args"]
    args = container["args"]
    assert "--discovery=kubernetes" in args
    assert f"--k8s-service={headless_service()['metadata']['name']}" in args


def test_pdb_allows_at_most_one_voluntary_disruption() -> None:
    spec = the("PodDisruptionBudget")["spec"]
    assert spec.get("maxUnavailable") == 1
