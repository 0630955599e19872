"""What the Kubernetes tutorial (docs/tutorials/kubernetes.md) can check without a cluster.

No Kubernetes API server runs on the test machines, so `kubectl apply`,
rollout and scaling are not run here (the page says so). What is checked:
the kustomization renders exactly the manifests the page describes, and the
StatefulSet's command line -- with the downward-API variables filled in as
the kubelet would -- is one `peer-ring node` accepts, with Kubernetes
discovery on the headless Service. tests/unit/discovery/test_deploy_manifests.py
checks the manifests' contents (RBAC, probes, PDB, labels).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from peer_ring.cli import _discovery_options, _node_config, node

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def statefulset() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "statefulset.yaml").read_text())


def test_the_kustomization_lists_every_manifest_of_the_directory() -> None:
    listed = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    present = sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_renders_the_kustomization() -> None:
    command = ["kubectl", "kustomize", str(DEPLOY)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(out) if d]
    assert sorted(kinds) == sorted(
        ["ServiceAccount", "Role", "RoleBinding", "Service", "Service", "StatefulSet",
         "PodDisruptionBudget", "Issuer", "Issuer", "Certificate", "Certificate"]
    )  # fmt: skip


def test_the_statefulset_command_line_is_a_valid_node_configuration() -> None:
    container = statefulset()["spec"]["template"]["spec"]["containers"][0]
    env = {"POD_NAME": "peer-ring-2", "POD_NAMESPACE": "shop", "POD_IP": "10.1.2.3"}
    names = {e["name"] for e in container["env"]}
    assert names == set(env)  # every variable the args use comes from the downward API
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    assert args[0] == "node"
    with node.make_context("node", args[1:]) as ctx:
        config = _node_config(ctx.params)
        discovery = _discovery_options(ctx.params)
    assert config.node_id == "peer-ring-2"
    assert config.peer_address == "10.1.2.3:7100"
    assert (config.resp, config.http) == ("0.0.0.0:6379", "0.0.0.0:8080")
    assert discovery.backend == "kubernetes"
    assert discovery.options["k8s_namespace"] == "shop"
    assert discovery.options["k8s_service"] == "peer-ring"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"peer": 7100, "resp": 6379, "resp-tls": 6380, "http": 8080}
    # mutual TLS between the nodes (cert-manager's CSI driver mounts the files)
    tls = config.transport_config.tls
    assert tls is not None
    assert tls.require_client_cert
    assert tls.cert_file == "/etc/peer-ring/tls/tls.crt"
