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


# -- scaling: disruption budget, preStop decommission, grace period, autoscaler ---------

EXAMPLES = DEPLOY / "examples"

#: Keys per second a decommissioning node hands over, measured with
#: `bench/rebalance.py --steps --keys 1000000 --partitions 1024` (the remove
#: steps, handover and exit: 65,645 and 70,692 keys/s; docs/benchmarks.md,
#: "Scaling 3 -> 5 -> 3"), rounded down.
MEASURED_KEYS_PER_S = 65_000
#: Memory a node needs per key it holds, 100-byte values (docs/operations/scaling.md).
BYTES_PER_KEY = 330
#: Margin of the grace-period formula: a pod limited to a fraction of a core
#: hands over more slowly than the benchmark's free core.
SAFETY = 4


def container() -> dict[str, Any]:
    spec = the("StatefulSet")["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = spec["containers"]
    assert len(containers) == 1
    return containers[0]


def node_config() -> Any:
    """The StatefulSet's command line parsed by `peer-ring node` (downward API filled in)."""
    import re

    from peer_ring.cli import _node_config, node

    env = {"POD_NAME": "peer-ring-0", "POD_NAMESPACE": "peer-ring", "POD_IP": "10.0.0.7"}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container()["args"]]
    with node.make_context("node", args[1:]) as ctx:
        return _node_config(ctx.params)


def max_unavailable_for(n: int, r: int, w: int) -> int:
    """Pods that may be down at once with every key keeping R and W live replicas."""
    return n - max(r, w)


def test_the_budget_formula() -> None:
    assert max_unavailable_for(3, 2, 2) == 1
    assert max_unavailable_for(5, 3, 3) == 2
    assert max_unavailable_for(3, 1, 3) == 0  # W = N: no pod may go


def test_pdb_keeps_a_read_and_a_write_quorum_of_every_key() -> None:
    rep = node_config().replication
    allowed = max_unavailable_for(rep.replicas, rep.read_quorum, rep.write_quorum)
    assert allowed >= 1, "N, R, W leave no room for a drain"
    spec = the("PodDisruptionBudget")["spec"]
    if "maxUnavailable" in spec:
        unavailable = spec["maxUnavailable"]
    else:
        unavailable = the("StatefulSet")["spec"]["replicas"] - spec["minAvailable"]
    assert isinstance(unavailable, int), "a percentage rounds differently at every size"
    assert 1 <= unavailable <= allowed, (rep, spec)


def test_prestop_decommissions_the_pod_with_the_admin_certificate() -> None:
    from peer_ring.cli import leave

    c = container()
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["peer-ring", "leave"]
    with leave.make_context("leave", command[2:]) as ctx:
        params = ctx.params
    peer_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "peer")
    assert params["address"] == f"127.0.0.1:{peer_port}"
    assert f"--listen=0.0.0.0:{peer_port}" in c["args"]
    # an admin credential: the peer-ring-admin certificate, mounted from its secret
    admin = next(d for d in by_kind("Certificate") if d["metadata"]["name"] == "peer-ring-admin")
    assert admin["spec"]["commonName"] == "peer-ring-admin"  # TransportAuth admin_names default
    volumes = {v["name"]: v for v in the("StatefulSet")["spec"]["template"]["spec"]["volumes"]}
    secret = admin["spec"]["secretName"]
    mounts = [
        m
        for m in c["volumeMounts"]
        if volumes.get(m["name"], {}).get("secret", {}).get("secretName") == secret
    ]
    assert len(mounts) == 1
    assert mounts[0]["readOnly"] is True
    for flag in ("tls_cert", "tls_key", "tls_ca"):
        assert params[flag].startswith(mounts[0]["mountPath"] + "/"), flag


def test_grace_period_covers_the_handover_of_a_full_pod() -> None:
    from peer_ring.cli import leave
    from peer_ring.config import NodeConfig

    c = container()
    grace = the("StatefulSet")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    with leave.make_context("leave", c["lifecycle"]["preStop"]["exec"]["command"][2:]) as ctx:
        timeout = ctx.params["timeout"]
    limit = c["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    keys = int(limit[:-2]) * 2**20 // BYTES_PER_KEY
    # the formula of docs/operations/scaling.md
    assert timeout >= SAFETY * keys / MEASURED_KEYS_PER_S
    stop = NodeConfig.lan("x").stop_timeout
    assert grace >= timeout + stop + 5, "the kubelet would kill the pod mid-handover"


def test_hpa_example_scales_in_one_pod_at_a_time_and_never_below_n() -> None:
    hpa = yaml.safe_load((EXAMPLES / "hpa.yaml").read_text())
    sts = the("StatefulSet")
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", sts["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= node_config().replication.replicas
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    grace = sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    down = hpa["spec"]["behavior"]["scaleDown"]
    assert down["selectPolicy"] == "Min"
    for policy in down["policies"]:
        assert (policy["type"], policy["value"]) == ("Pods", 1)
        assert policy["periodSeconds"] > grace  # the previous handover is over
    assert down["stabilizationWindowSeconds"] >= max(p["periodSeconds"] for p in down["policies"])
