"""Config presets, the TOML file, and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from peer_ring.config import NodeConfig, discovery_table
from peer_ring.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "examples" / "node.toml"


def test_example_config_file_loads() -> None:
    cfg = NodeConfig.from_file(EXAMPLE)
    assert cfg.node_id == "n1"
    assert cfg.seeds == ("127.0.0.3:7400", "127.0.0.4:7400")
    assert cfg.replication.replicas == 3
    assert cfg.failure.failures_to_down == 2
    assert cfg.transport_config.request_timeout == 5.0


def test_flags_override_the_file() -> None:
    cfg = NodeConfig.from_file(EXAMPLE, listen="127.0.0.9:7000", node_id="other")
    assert cfg.listen == "127.0.0.9:7000"
    assert cfg.node_id == "other"


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nnode_id = "x"\nlisten_adress = "127.0.0.1:1"\n')
    with pytest.raises(ConfigError, match="unknown config key 'listen_adress'"):
        NodeConfig.from_file(bad)
    bad.write_text('[node]\nnode_id = "x"\n[node.replication]\nreplica = 3\n')
    with pytest.raises(ConfigError, match="unknown keys in \\[replication\\]"):
        NodeConfig.from_file(bad)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        NodeConfig.from_file(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[node\n")
    with pytest.raises(ConfigError):
        NodeConfig.from_file(broken)


def test_presets_differ_only_in_timing() -> None:
    local, lan, wan = NodeConfig.local("a"), NodeConfig.lan("a"), NodeConfig.wan("a")
    assert local.failure.ping_interval < lan.failure.ping_interval < wan.failure.ping_interval
    assert local.replication == lan.replication == wan.replication


def test_cluster_name_reaches_the_transport_handshake() -> None:
    cfg = NodeConfig("a", cluster="blue")
    assert cfg.transport_config.cluster == "blue"


def test_discovery_table_is_read_and_ignored_by_node_config(tmp_path: Path) -> None:
    f = tmp_path / "d.toml"
    f.write_text(
        '[node]\nnode_id = "x"\n[node.discovery]\nbackend = "etcd"\n'
        'etcd = ["http://127.0.0.1:2379", "http://127.0.0.2:2379"]\netcd_prefix = "/p"\n'
    )
    assert NodeConfig.from_file(f).node_id == "x"
    assert discovery_table(f) == {
        "backend": "etcd",
        "etcd": "http://127.0.0.1:2379,http://127.0.0.2:2379",
        "etcd_prefix": "/p",
    }
    f.write_text('[node]\nnode_id = "x"\n[node.discovery]\netc = "typo"\n')
    with pytest.raises(ConfigError, match="unknown keys in \\[discovery\\]: etc"):
        discovery_table(f)


def test_cli_takes_discovery_from_the_file_and_flags_win(tmp_path: Path) -> None:
    from peer_ring.cli import _discovery_options

    f = tmp_path / "d.toml"
    f.write_text(
        '[node]\nnode_id = "x"\n[node.discovery]\nbackend = "zookeeper"\n'
        'zookeeper = "127.0.0.1:2181"\nzk_path = "/a"\n'
    )
    d = _discovery_options({"config_file": str(f), "zk_path": "/b"})
    assert d.backend == "zookeeper"
    assert d.options["zookeeper"] == "127.0.0.1:2181"
    assert d.options["zk_path"] == "/b"
    assert _discovery_options({"config_file": str(f), "discovery": "static"}).backend == "static"
    assert _discovery_options({}).backend == "static"


def test_quorums_that_tolerate_no_failure_are_warned_about() -> None:
    from peer_ring.cli import _replication
    from peer_ring.config import ReplicationConfig, quorum_warning

    assert quorum_warning(ReplicationConfig()) is None  # N=3, R=W=2
    two = _replication({}, {"replicas": 2})  # R and W follow N: 2 and 2
    warning = quorum_warning(two)
    assert warning is not None
    assert "reads and writes" in warning
    assert "N=3" in warning
    # sloppy writes count fallbacks: only the reads are left
    assert "N=2, R=2, W=2: reads of a key fail" in (quorum_warning(two, sloppy=True) or "")
    assert quorum_warning(ReplicationConfig(replicas=2, read_quorum=1, write_quorum=1)) is None
    assert "writes" in (quorum_warning(ReplicationConfig(replicas=1, read_quorum=1,
                                                         write_quorum=1)) or "")  # fmt: skip


def test_node_command_warns_at_start_when_quorums_tolerate_no_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    import peer_ring.runner
    from peer_ring.cli import main

    started: list[NodeConfig] = []

    def fake_run(config: NodeConfig, *args: object, **kw: object) -> int:
        started.append(config)
        return 0

    monkeypatch.setattr(peer_ring.runner, "run", fake_run)
    runner = CliRunner()
    two = runner.invoke(main, ["node", "--id", "n1", "--replicas", "2"])
    assert two.exit_code == 0, two.output
    assert started[-1].replication.read_quorum == 2
    assert "warning:" in two.output
    assert "tolerate no failure" in two.output
    three = runner.invoke(main, ["node", "--id", "n1"])
    assert three.exit_code == 0, three.output
    assert "warning:" not in three.output


def test_swim_seeds_on_the_peer_port_go_to_the_gossip_port() -> None:
    from peer_ring.runner import swim_seeds

    cfg = NodeConfig.lan(
        "n1", listen="10.0.0.1:7400", seeds=("10.0.0.2:7400", "10.0.0.3:7946", "10.0.0.4:9000")
    )
    seeds, moved = swim_seeds(cfg, {})
    assert seeds == ["10.0.0.2:7946", "10.0.0.3:7946", "10.0.0.4:9000"]
    assert moved == ["10.0.0.2:7400"]
    # with --gossip on another port, that port is the one assumed
    seeds, moved = swim_seeds(cfg, {"gossip": "10.0.0.1:8000"})
    assert seeds[0] == "10.0.0.2:8000"
