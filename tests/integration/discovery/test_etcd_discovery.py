"""etcd backend against a real etcd started on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aetcd
import pytest
from discovery_helpers import Runner, eventually, view_ids

from peer_ring.errors import DiscoveryError
from peer_ring.membership._registry import encode_record
from peer_ring.membership.base import Member
from peer_ring.membership.etcd import EtcdConfig, EtcdDiscovery
from peer_ring.testing.servers import EtcdServer, etcd_missing, free_port

pytestmark = pytest.mark.integration

TTL = 2


def config(endpoint: str, prefix: str, **kw: object) -> EtcdConfig:
    return EtcdConfig.from_options(endpoint, prefix, lease_ttl=TTL, retry_max=0.5, **kw)


@pytest.fixture
async def instances() -> AsyncIterator[list[EtcdDiscovery]]:
    started: list[EtcdDiscovery] = []
    yield started
    for d in started:
        await d.stop()


async def start(
    instances: list[EtcdDiscovery], cfg: EtcdConfig, node_id: str, host: str
) -> EtcdDiscovery:
    d = EtcdDiscovery(cfg)
    await d.start(Member(node_id, f"{host}:7100", zone="z1", meta={"role": "test"}))
    instances.append(d)
    return d


async def test_three_instances_find_each_other_kill_and_join(
    etcd_server: EtcdServer,
    unique_path: str,
    instances: list[EtcdDiscovery],
    spawn_runner: Callable[..., Awaitable[Runner]],
) -> None:
    cfg = config(etcd_server.endpoint, unique_path)
    a = await start(instances, cfg, "a", "127.0.0.2")
    b = await start(instances, cfg, "b", "127.0.0.3")
    c = await spawn_runner(
        "etcd", etcd_server.endpoint, unique_path, "c", "127.0.0.4:7100", str(TTL)
    )
    await eventually(lambda: all(view_ids(d) == {"a", "b", "c"} for d in (a, b)), "3 members")
    assert a.ready
    assert b.ready
    assert a.members()["b"].address == "127.0.0.3:7100"
    assert a.members()["b"].zone == "z1"
    assert dict(a.members()["b"].meta) == {"role": "test"}

    await c.kill()  # SIGKILL: no deregistration, the lease must expire
    await eventually(
        lambda: all(view_ids(d) == {"a", "b"} for d in (a, b)), "killed member removed"
    )

    d4 = await start(instances, cfg, "d", "127.0.0.5")
    await eventually(
        lambda: all(view_ids(d) == {"a", "b", "d"} for d in (a, b, d4)), "new member everywhere"
    )


async def test_graceful_stop_removes_member_at_once(
    etcd_server: EtcdServer, unique_path: str, instances: list[EtcdDiscovery]
) -> None:
    cfg = config(etcd_server.endpoint, unique_path)
    a = await start(instances, cfg, "a", "127.0.0.2")
    b = EtcdDiscovery(cfg)
    await b.start(Member("b", "127.0.0.3:7100"))
    await eventually(lambda: view_ids(a) == {"a", "b"}, "b joined")
    await b.stop()
    await eventually(lambda: view_ids(a) == {"a"}, "b left")


async def test_malformed_and_incompatible_entries_are_skipped(
    etcd_server: EtcdServer, unique_path: str, instances: list[EtcdDiscovery]
) -> None:
    base = unique_path.encode() + b"/members/"
    async with aetcd.Client(host=etcd_server.host, port=etcd_server.client_port) as client:
        await client.put(base + b"garbage", b"\xff not json")
        await client.put(base + b"future", b'{"v": 2, "id": "x", "addr": "127.0.0.9:1"}')
        await client.put(base + b"badaddr", b'{"v": 1, "id": "y", "addr": "nowhere"}')
        await client.put(base + b"good", encode_record(Member("good", "127.0.0.6:7100")))
        a = await start(instances, config(etcd_server.endpoint, unique_path), "a", "127.0.0.2")
        assert view_ids(a) == {"a", "good"}
        assert a.skipped == 3
        # A bad entry arriving through the watch is skipped too; the view survives.
        await client.put(base + b"later", b"[1, 2]")
        await client.put(base + b"late-good", encode_record(Member("lg", "127.0.0.7:7100")))
        await eventually(lambda: view_ids(a) == {"a", "good", "lg"}, "valid entry via watch")
        assert a.skipped == 4


async def test_registry_restart_keeps_views_and_reregisters(
    tmp_path_factory: pytest.TempPathFactory, unique_path: str, instances: list[EtcdDiscovery]
) -> None:
    reason = etcd_missing()
    if reason:
        pytest.skip(reason)
    with EtcdServer(tmp_path_factory.mktemp("etcd-restart")) as server:
        cfg = config(server.endpoint, unique_path)
        nodes = [
            await start(instances, cfg, name, f"127.0.0.{i + 2}") for i, name in enumerate("abc")
        ]
        await eventually(lambda: all(view_ids(d) == set("abc") for d in nodes), "3 members")

        await server.astop()
        await eventually(lambda: all(d.last_error is not None for d in nodes), "outage noticed")
        assert all(view_ids(d) == set("abc") for d in nodes), "view must survive the outage"

        # Back with an empty data dir: every lease and key is gone.
        await server.arestart(wipe=True)
        await eventually(lambda: all(d.reregistrations >= 1 for d in nodes), "re-registered")
        async with aetcd.Client(host=server.host, port=server.client_port) as client:
            listing = await client.get_prefix(cfg.members_prefix)
            assert sorted(kv.key.rsplit(b"/", 1)[1] for kv in listing) == [b"a", b"b", b"c"]
        assert all(view_ids(d) == set("abc") for d in nodes)

        # Lease loss is followed through: killing one instance still removes it.
        await nodes[2].abandon()
        instances.remove(nodes[2])
        await eventually(
            lambda: all(view_ids(d) == {"a", "b"} for d in nodes[:2]), "dead member expired"
        )
        for d in nodes[:2]:
            await d.stop()


async def test_start_fails_with_clear_error_when_etcd_unreachable() -> None:
    cfg = EtcdConfig(
        endpoints=(f"http://127.0.0.1:{free_port()}",),
        start_timeout=1.0,
        request_timeout=0.5,
        retry_max=0.2,
    )
    d = EtcdDiscovery(cfg)
    with pytest.raises(DiscoveryError, match=r"did not become ready within 1\.0s"):
        await d.start(Member("a", "127.0.0.2:7100"))
    await asyncio.wait_for(d.stop(), 5)  # idempotent after a failed start
