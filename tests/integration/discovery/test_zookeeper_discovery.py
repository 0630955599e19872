"""ZooKeeper backend against a real ZooKeeper started on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from discovery_helpers import Runner, eventually, view_ids
from kazoo.client import KazooClient

from peer_ring.errors import DiscoveryError
from peer_ring.membership._registry import encode_record
from peer_ring.membership.base import Member
from peer_ring.membership.zookeeper import ZooKeeperConfig, ZooKeeperDiscovery
from peer_ring.testing.servers import ZooKeeperServer, free_port, zookeeper_missing

pytestmark = pytest.mark.integration

SESSION = 3.0


def config(hosts: str, path: str, **kw: object) -> ZooKeeperConfig:
    return ZooKeeperConfig.from_options(hosts, path, session_timeout=SESSION, retry_max=0.5, **kw)


@pytest.fixture
async def instances() -> AsyncIterator[list[ZooKeeperDiscovery]]:
    started: list[ZooKeeperDiscovery] = []
    yield started
    for d in started:
        await d.stop()


@pytest.fixture
def kazoo(zk_server: ZooKeeperServer) -> Iterator[KazooClient]:
    client = KazooClient(hosts=zk_server.hosts)
    client.start(timeout=10)
    yield client
    client.stop()
    client.close()


async def start(
    instances: list[ZooKeeperDiscovery], cfg: ZooKeeperConfig, node_id: str, host: str
) -> ZooKeeperDiscovery:
    d = ZooKeeperDiscovery(cfg)
    await d.start(Member(node_id, f"{host}:7100", zone="z2", meta={"role": "test"}))
    instances.append(d)
    return d


async def test_three_instances_find_each_other_kill_and_join(
    zk_server: ZooKeeperServer,
    unique_path: str,
    instances: list[ZooKeeperDiscovery],
    spawn_runner: Callable[..., Awaitable[Runner]],
) -> None:
    cfg = config(zk_server.hosts, unique_path)
    a = await start(instances, cfg, "a", "127.0.0.2")
    b = await start(instances, cfg, "b", "127.0.0.3")
    c = await spawn_runner(
        "zookeeper", zk_server.hosts, unique_path, "c", "127.0.0.4:7100", str(SESSION)
    )
    await eventually(lambda: all(view_ids(d) == {"a", "b", "c"} for d in (a, b)), "3 members")
    assert a.ready
    assert a.members()["b"].zone == "z2"
    assert dict(a.members()["b"].meta) == {"role": "test"}

    await c.kill()  # SIGKILL: the session must time out
    await eventually(
        lambda: all(view_ids(d) == {"a", "b"} for d in (a, b)), "killed member removed"
    )

    d4 = await start(instances, cfg, "d", "127.0.0.5")
    await eventually(
        lambda: all(view_ids(d) == {"a", "b", "d"} for d in (a, b, d4)), "new member everywhere"
    )


async def test_graceful_stop_and_stale_znode_of_older_life(
    zk_server: ZooKeeperServer,
    unique_path: str,
    instances: list[ZooKeeperDiscovery],
    kazoo: KazooClient,
) -> None:
    cfg = config(zk_server.hosts, unique_path)
    a = await start(instances, cfg, "a", "127.0.0.2")
    # An older life of "b" left a znode owned by another (live) session.
    kazoo.create(
        f"{cfg.members_path}/b",
        encode_record(Member("b", "127.0.0.3:7100", incarnation=1)),
        ephemeral=True,
    )
    await eventually(lambda: a.members().get("b") is not None, "old b visible")
    b = ZooKeeperDiscovery(cfg)
    await b.start(Member("b", "127.0.0.3:7200", incarnation=2))
    await eventually(
        lambda: a.members().get("b") == Member("b", "127.0.0.3:7200", incarnation=2),
        "newer life of b replaced the old znode",
    )
    await b.stop()
    await eventually(lambda: view_ids(a) == {"a"}, "b left at once")


async def test_malformed_and_incompatible_entries_are_skipped(
    zk_server: ZooKeeperServer,
    unique_path: str,
    instances: list[ZooKeeperDiscovery],
    kazoo: KazooClient,
) -> None:
    cfg = config(zk_server.hosts, unique_path)
    base = cfg.members_path
    kazoo.create(f"{base}/garbage", b"\xff", makepath=True)
    kazoo.create(f"{base}/future", b'{"v": 3, "id": "x", "addr": "127.0.0.9:1"}')
    kazoo.create(f"{base}/good", encode_record(Member("good", "127.0.0.6:7100")))
    a = await start(instances, cfg, "a", "127.0.0.2")
    assert view_ids(a) == {"a", "good"}
    assert a.skipped >= 2
    kazoo.create(f"{base}/nomap", b'"just a string"')
    kazoo.create(f"{base}/lg", encode_record(Member("lg", "127.0.0.7:7100")))
    await eventually(lambda: view_ids(a) == {"a", "good", "lg"}, "valid child via watch")


async def test_registry_restart_keeps_views_and_reregisters(
    tmp_path_factory: pytest.TempPathFactory,
    unique_path: str,
    instances: list[ZooKeeperDiscovery],
) -> None:
    reason = zookeeper_missing()
    if reason:
        pytest.skip(reason)
    with ZooKeeperServer(tmp_path_factory.mktemp("zk-restart")) as server:
        cfg = config(server.hosts, unique_path)
        nodes = [
            await start(instances, cfg, name, f"127.0.0.{i + 2}") for i, name in enumerate("abc")
        ]
        await eventually(lambda: all(view_ids(d) == set("abc") for d in nodes), "3 members")

        await server.astop()
        await eventually(lambda: not any(d.connected for d in nodes), "outage noticed")
        assert all(view_ids(d) == set("abc") for d in nodes), "view must survive the outage"

        # Back with an empty data dir: every session and znode is gone.
        await server.arestart(wipe=True)
        await eventually(
            lambda: all(d.reregistrations >= 1 for d in nodes), "re-registered", timeout=30
        )
        await eventually(lambda: all(view_ids(d) == set("abc") for d in nodes), "views whole")
        check = KazooClient(hosts=server.hosts)
        await asyncio.to_thread(check.start, 10)
        try:
            assert sorted(check.get_children(cfg.members_path)) == ["a", "b", "c"]
        finally:
            check.stop()
            check.close()
        for d in nodes:
            await d.stop()


async def test_start_fails_with_clear_error_when_zookeeper_unreachable() -> None:
    cfg = ZooKeeperConfig(
        hosts=(f"127.0.0.1:{free_port()}",), start_timeout=1.0, retry_max=0.2, session_timeout=2.0
    )
    d = ZooKeeperDiscovery(cfg)
    with pytest.raises(DiscoveryError, match=r"did not become ready within 1\.0s"):
        await d.start(Member("a", "127.0.0.2:7100"))
    await asyncio.wait_for(d.stop(), 10)
