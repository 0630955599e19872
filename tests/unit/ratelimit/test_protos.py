"""The committed gRPC modules are what ``make protos`` generates, and the
protos keep gubernator's and Envoy's numbers."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peer_ring.apps.ratelimit import Algorithm, Behavior, Status
from peer_ring.server.grpc_api.protos import gubernator_pb2 as gpb
from peer_ring.server.grpc_api.protos.envoy.service.ratelimit.v3 import rls_pb2 as rls

SRC = Path(__file__).resolve().parents[3] / "src"
PROTO_DIR = SRC / "peer_ring" / "server" / "grpc_api" / "protos"


def test_committed_generated_modules_are_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) regenerates them")
    tree = tmp_path / "src"
    shutil.copytree(PROTO_DIR, tree / PROTO_DIR.relative_to(SRC), ignore=shutil.ignore_patterns(
        "*.py", "*.pyi", "__pycache__"))  # fmt: skip
    protos = sorted(str(p.relative_to(tree)) for p in tree.rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "--python_out=.",
         "--pyi_out=.", "--grpc_python_out=.", *protos],
        cwd=tree, check=True, capture_output=True,
    )  # fmt: skip
    generated = sorted(p.relative_to(tree) for p in tree.rglob("*_pb2*.py*"))
    assert len(generated) == 15  # 5 protos x (_pb2.py, _pb2.pyi, _pb2_grpc.py)
    stale = [str(g) for g in generated if not filecmp.cmp(tree / g, SRC / g, shallow=False)]
    assert not stale, f"run `make protos` and commit: {stale}"


def test_gubernator_numbers() -> None:
    fields = {f.name: f.number for f in gpb.RateLimitReq.DESCRIPTOR.fields}
    assert fields == {"name": 1, "unique_key": 2, "hits": 3, "limit": 4, "duration": 5,
                      "algorithm": 6, "behavior": 7, "burst": 8, "metadata": 9,
                      "created_at": 10}  # fmt: skip
    resp = {f.name: f.number for f in gpb.RateLimitResp.DESCRIPTOR.fields}
    assert resp == {"status": 1, "limit": 2, "remaining": 3, "reset_time": 4, "error": 5,
                    "metadata": 6}  # fmt: skip
    assert gpb.DESCRIPTOR.package == "pb.gubernator"
    assert gpb.DESCRIPTOR.services_by_name["V1"].full_name == "pb.gubernator.V1"
    for alg in Algorithm:
        assert gpb.Algorithm.Value(alg.name) == alg.value
    for flag in Behavior:
        assert gpb.Behavior.Value(flag.name) == flag.value
    for st in Status:
        assert gpb.Status.Value(st.name) == st.value


def test_envoy_numbers() -> None:
    assert rls.DESCRIPTOR.package == "envoy.service.ratelimit.v3"
    req = {f.name: f.number for f in rls.RateLimitRequest.DESCRIPTOR.fields}
    assert req == {"domain": 1, "descriptors": 2, "hits_addend": 3}
    resp = {f.name: f.number for f in rls.RateLimitResponse.DESCRIPTOR.fields}
    assert resp == {"overall_code": 1, "statuses": 2, "response_headers_to_add": 3,
                    "request_headers_to_add": 4, "raw_body": 5, "dynamic_metadata": 6,
                    "quota": 7}  # fmt: skip
    status = {f.name: f.number for f in rls.RateLimitResponse.DescriptorStatus.DESCRIPTOR.fields}
    assert status == {"code": 1, "current_limit": 2, "limit_remaining": 3,
                      "duration_until_reset": 4, "quota": 5}  # fmt: skip
    desc = rls.RateLimitRequest.DESCRIPTOR.fields_by_name["descriptors"].message_type
    assert desc.full_name == "envoy.extensions.common.ratelimit.v3.RateLimitDescriptor"
    assert rls.RateLimitResponse.Code.Value("OVER_LIMIT") == 2
