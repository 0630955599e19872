"""Kubernetes backend: the real kubernetes_asyncio client against an in-test API server.

No API server can run on this machine, so :mod:`fake_kube` serves the real
list/watch protocol for EndpointSlices over HTTP on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from discovery_helpers import eventually, view_ids
from fake_kube import FakeKube, endpoint

from peer_ring.errors import DiscoveryError
from peer_ring.membership.base import Member
from peer_ring.membership.kubernetes import KubernetesConfig, KubernetesDiscovery

pytestmark = pytest.mark.integration

PODS = {"ring-0": "10.0.0.10", "ring-1": "10.0.0.11", "ring-2": "10.0.0.12"}


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    fake = FakeKube()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def kubeconfig(kube: FakeKube, tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(kube.kubeconfig())  # JSON is YAML
    return str(path)


Starter = Callable[..., Awaitable[KubernetesDiscovery]]


@pytest.fixture
async def start(kubeconfig: str) -> AsyncIterator[Starter]:
    started: list[KubernetesDiscovery] = []

    async def start_one(pod: str, **kw: object) -> KubernetesDiscovery:
        options: dict[str, object] = {
            "namespace": "ns",
            "service": "ring",
            "kubeconfig": kubeconfig,
            "start_timeout": 10.0,
            "retry_initial": 0.05,
            "retry_max": 0.2,
        }
        options.update(kw)
        d = KubernetesDiscovery(KubernetesConfig(**options))  # type: ignore[arg-type]
        await d.start(Member(pod, f"{PODS.get(pod, '10.0.0.99')}:7100"))
        started.append(d)
        return d

    yield start_one
    for d in started:
        await d.stop()


def three_pods(kube: FakeKube, **overrides: dict[str, object]) -> None:
    kube.put_slice(
        "ring-abc",
        [endpoint(pod, ip, zone="zone-a", **overrides.get(pod, {})) for pod, ip in PODS.items()],  # type: ignore[arg-type]
    )


async def test_three_pods_find_each_other_via_kubeconfig(kube: FakeKube, start: Starter) -> None:
    three_pods(kube)
    kube.put_slice("other-xyz", [endpoint("other-0", "10.0.9.9")], service="other")
    nodes = [await start(pod) for pod in PODS]
    await eventually(lambda: all(view_ids(d) == set(PODS) for d in nodes), "3 pods everywhere")
    member = nodes[0].members()["ring-1"]
    assert member.address == "10.0.0.11:7100"
    assert member.zone == "zone-a"
    assert member.meta["uid"] == "uid-ring-1"
    assert all(d.ready for d in nodes)
    # Every request was namespace-scoped, label-selected and authenticated.
    assert all(r["labelSelector"] == "kubernetes.io/service-name=ring" for r in kube.requests)
    assert all(r.get("allowWatchBookmarks") in ("true", "True") for r in kube.watch_requests)


async def test_terminating_and_not_ready_pods_leave_the_ring(
    kube: FakeKube, start: Starter
) -> None:
    three_pods(kube)
    nodes = [await start("ring-0"), await start("ring-1")]
    three_pods(kube, **{"ring-2": {"terminating": True}})
    await eventually(
        lambda: all(view_ids(d) == {"ring-0", "ring-1"} for d in nodes), "terminating pod left"
    )
    three_pods(kube, **{"ring-1": {"ready": False}})
    await eventually(
        lambda: all(view_ids(d) == {"ring-0", "ring-2"} for d in nodes[:1]), "not-ready pod left"
    )
    three_pods(kube)
    await eventually(lambda: all(view_ids(d) == set(PODS) for d in nodes), "all back")
    kube.delete_slice("ring-abc")
    kube.put_slice("ring-def", [endpoint("ring-0", PODS["ring-0"])])
    await eventually(lambda: view_ids(nodes[0]) == {"ring-0"}, "slice deletion followed")


async def test_reused_pod_name_gets_a_new_incarnation(kube: FakeKube, start: Starter) -> None:
    three_pods(kube)
    d = await start("ring-0")
    assert d.members()["ring-2"].incarnation == 0
    three_pods(kube, **{"ring-2": {"uid": "uid-ring-2-second-life"}})
    await eventually(
        lambda: d.members()["ring-2"].meta.get("uid") == "uid-ring-2-second-life", "new pod"
    )
    assert d.members()["ring-2"].incarnation == 1


async def test_watch_timeout_resumes_from_bookmark_without_relist(
    kube: FakeKube, start: Starter
) -> None:
    three_pods(kube)
    d = await start("ring-0")
    await eventually(lambda: kube.open_watches == 1, "watch open")
    mark = kube.bookmark()
    await eventually(lambda: d.resource_version == str(mark), "bookmark applied")
    watches_before = len(kube.watch_requests)
    kube.end_watches()  # the server's watch timeout
    await eventually(lambda: len(kube.watch_requests) > watches_before, "watch re-opened")
    assert kube.watch_requests[-1]["resourceVersion"] == str(mark)
    assert len(kube.list_requests) == 1, "a watch timeout must not relist"
    three_pods(kube, **{"ring-1": {"terminating": True}})
    await eventually(lambda: "ring-1" not in d.members(), "events flow on the new watch")


async def test_410_gone_forces_a_relist(kube: FakeKube, start: Starter) -> None:
    three_pods(kube)
    d = await start("ring-0")
    await eventually(lambda: kube.open_watches == 1, "watch open")
    kube.silent = True  # this change never reaches the watcher...
    kube.put_slice("ring-abc", [endpoint("ring-0", PODS["ring-0"])])
    kube.compact()  # ...and its history is compacted away
    kube.silent = False
    kube.end_watches()
    await eventually(lambda: view_ids(d) == {"ring-0"}, "relisted state")
    assert len(kube.list_requests) == 2
    await eventually(
        lambda: kube.watch_requests[-1]["resourceVersion"] == str(kube.rv),
        "watch resumed from the relisted version",
    )


async def test_malformed_slices_and_events_are_skipped(kube: FakeKube, start: Starter) -> None:
    three_pods(kube)
    kube.put_slice("bad-noports", [endpoint("x-0", "10.0.1.1")], ports=[])
    kube.put_slice(
        "bad-endpoint",
        [{"conditions": {"ready": True}}, endpoint("ring-3", "10.0.1.3")],
    )
    d = await start("ring-0")
    assert view_ids(d) == {*PODS, "ring-3"}
    assert d.skipped == 2
    kube.send_raw(b"this is not json\n")
    kube.put_slice("bad-noports", [{"addresses": "nope"}])
    kube.put_slice("late", [endpoint("ring-4", "10.0.1.4")])
    await eventually(lambda: "ring-4" in d.members(), "valid slice after bad input")
    assert d.skipped >= 3
    assert view_ids(d) >= set(PODS)


async def test_api_server_outage_keeps_last_view(kube: FakeKube, start: Starter) -> None:
    three_pods(kube)
    d = await start("ring-0")
    port = kube.port
    await kube.stop()
    await eventually(lambda: d.last_error is not None, "outage noticed")
    assert view_ids(d) == set(PODS)
    kube.slices.clear()
    kube.put_slice("ring-abc", [endpoint("ring-0", PODS["ring-0"])])
    await kube.start(port)
    await eventually(lambda: view_ids(d) == {"ring-0"}, "state after recovery")


async def test_start_times_out_when_own_pod_is_never_listed(kube: FakeKube, start: Starter) -> None:
    three_pods(kube)
    with pytest.raises(DiscoveryError, match="ring-9 not listed"):
        await start("ring-9", start_timeout=0.5)


async def test_wrong_token_is_a_clear_start_error(
    kube: FakeKube, start: Starter, tmp_path: Path
) -> None:
    three_pods(kube)
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text(kube.kubeconfig().replace(kube.token, "wrong"))
    with pytest.raises(DiscoveryError, match="401"):
        await start("ring-0", kubeconfig=str(bad), start_timeout=0.5)
