"""Deterministic SWIM scenarios on the simulated network (SimScheduler, no sleeps)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from peer_ring.membership.swim import Keyring, SimCluster, SwimConfig, SwimState
from peer_ring.membership.swim.sim import sim_addr, sim_id
from peer_ring.membership.swim.state import MemberEventKind

ALIVE, SUSPECT, DEAD, LEFT = SwimState.ALIVE, SwimState.SUSPECT, SwimState.DEAD, SwimState.LEFT
LAN = SwimConfig.lan()


def converged_cluster(n: int, config: SwimConfig = LAN, **kw: object) -> SimCluster:
    cluster = SimCluster(config, **kw)  # type: ignore[arg-type]
    cluster.start(n)
    assert cluster.run_until(cluster.converged, timeout=60), "cluster did not converge"
    return cluster


def test_dead_member_detected_everywhere_within_configured_bound() -> None:
    cluster = converged_cluster(10, seed=11)
    cluster.kill(4)
    start = cluster.now
    bound = LAN.detection_bound(10)
    others = list(cluster.nodes)
    assert cluster.run_until(lambda: cluster.all_see(4, [DEAD], others), timeout=bound)
    assert cluster.now - start <= bound
    # Nobody else was declared dead on the way.
    assert {ev.id for _, ev in cluster.events(MemberEventKind.DEAD)} == {sim_id(4)}
    assert all(sim_id(4) not in cluster.view_ids(i) for i in others)


def test_slow_but_alive_member_is_never_declared_dead() -> None:
    """Lifeguard: a node whose round trips take 1.5x the probe timeout is not removed.

    Its direct probes (and the others' probes of it) time out, so indirect
    probes, nacks and the local-health score all come into play; it backs off
    and nobody -- neither it nor a healthy member -- is declared dead.
    """
    cluster = converged_cluster(8, seed=12)
    slow = 3
    cluster.net.set_slowness(sim_addr(slow), LAN.probe_timeout * 0.75)  # per direction
    cluster.run_for(120.0)
    assert cluster.events(MemberEventKind.DEAD) == []
    everyone = {sim_id(i) for i in range(8)}
    assert all(cluster.view_ids(i) == everyone for i in cluster.nodes)
    agent = cluster.nodes[slow].agent
    assert agent.stats["indirect_probes"] > 0  # its timeouts really fired
    others_indirect = sum(cluster.nodes[i].agent.stats["indirect_probes"] for i in cluster.nodes)
    assert others_indirect > agent.stats["indirect_probes"]


def test_suspected_member_refutes_with_higher_incarnation() -> None:
    cluster = converged_cluster(6, seed=13)
    before = cluster.nodes[2].agent.incarnation
    # Pause node 2 long enough to be suspected, shorter than the suspicion timeout.
    cluster.net.pause(sim_addr(2))
    others = [i for i in cluster.nodes if i != 2]
    assert cluster.run_until(
        lambda: any(cluster.state_of(o, 2) is SUSPECT for o in others), timeout=30
    )
    cluster.net.resume(sim_addr(2))
    assert cluster.run_until(lambda: cluster.all_see(2, [ALIVE], others), timeout=10)
    after = cluster.nodes[2].agent.incarnation
    assert after > before
    assert all(cluster.nodes[o].agent.status(sim_id(2)).incarnation == after for o in others)
    assert cluster.events(MemberEventKind.DEAD, 2) == []
    assert cluster.nodes[2].agent.stats["refutations"] >= 1


def test_join_converges_across_50_members_in_log_n_rounds() -> None:
    cluster = converged_cluster(49, seed=14)
    cluster.add(49)
    start = cluster.now
    everyone = list(cluster.nodes)
    assert cluster.run_until(
        lambda: cluster.all_see(49, [ALIVE], everyone), timeout=30, check_every=LAN.gossip_interval
    )
    rounds = (cluster.now - start) / LAN.gossip_interval
    # Epidemic dissemination: O(log N) gossip rounds (fan-out 3).
    assert rounds <= 2 * math.ceil(math.log2(50)), rounds
    assert cluster.converged()


def test_partition_12_8_heals_after_partition_ends() -> None:
    cluster = converged_cluster(20, seed=15)
    left_side = list(range(12))
    right_side = list(range(12, 20))
    cluster.net.partition([sim_addr(i) for i in left_side], [sim_addr(i) for i in right_side])

    def split() -> bool:
        return all(cluster.all_see(r, [DEAD], left_side) for r in right_side) and all(
            cluster.all_see(lft, [DEAD], right_side) for lft in left_side
        )

    assert cluster.run_until(split, timeout=60, check_every=0.5)
    assert cluster.converged(left_side)
    assert cluster.converged(right_side)
    cluster.net.heal()
    assert cluster.run_until(cluster.converged, timeout=60, check_every=0.5)


def test_restarted_node_with_same_id_is_a_new_life_not_a_zombie() -> None:
    cluster = converged_cluster(6, seed=16)
    cluster.kill(5)
    others = list(cluster.nodes)
    assert cluster.run_until(lambda: cluster.all_see(5, [DEAD], others), timeout=60)
    cluster.add(5, life=1)  # same id and address, next restart counter
    assert cluster.run_until(cluster.converged, timeout=30)
    for o in others:
        status = cluster.nodes[o].agent.status(sim_id(5))
        assert status is not None
        assert status.member.incarnation == 1
    # A late "dead" about the old life changes nothing.
    from peer_ring.membership.swim.wire import Dead

    cluster.nodes[0].agent._on_dead(Dead(99, 0, sim_id(5), sim_id(1)))
    assert cluster.state_of(0, 5) is ALIVE


def test_restart_without_new_life_refutes_old_state() -> None:
    cluster = converged_cluster(5, seed=17)
    cluster.kill(4)
    others = list(cluster.nodes)
    assert cluster.run_until(lambda: cluster.all_see(4, [DEAD], others), timeout=60)
    cluster.add(4, life=0)  # the app did not bump the restart counter
    assert cluster.run_until(cluster.converged, timeout=30)
    assert cluster.nodes[4].agent.incarnation > 0


def test_graceful_leave_is_seen_as_left_not_dead() -> None:
    cluster = converged_cluster(6, seed=18)
    cluster.leave(1)
    others = [i for i in cluster.nodes if i != 1]
    assert cluster.run_until(lambda: cluster.all_see(1, [LEFT], others), timeout=5)
    cluster.kill(1)
    cluster.run_for(10)
    assert cluster.events(MemberEventKind.DEAD) == []
    assert all(sim_id(1) not in cluster.view_ids(i) for i in others)


def test_flapping_member_is_damped_then_readmitted() -> None:
    cfg = replace(LAN, flap_half_life=30.0, flap_suppress=2.5, flap_reuse=1.0)
    cluster = converged_cluster(4, cfg, seed=19)
    for life in (1, 2, 3):
        cluster.kill(3)
        assert cluster.run_until(lambda: cluster.all_see(3, [DEAD], [0, 1, 2]), timeout=60)
        cluster.add(3, life=life)
        assert cluster.run_until(lambda: cluster.all_see(3, [ALIVE], [0, 1, 2]), timeout=30)
    observer = cluster.nodes[0].agent
    assert observer.is_damped(sim_id(3))
    assert sim_id(3) not in cluster.view_ids(0)
    assert observer.status(sim_id(3)).damped
    # The penalty decays; the member comes back into the view without any new event.
    assert cluster.run_until(lambda: sim_id(3) in cluster.view_ids(0), timeout=200, check_every=1)
    assert not observer.is_damped(sim_id(3))


def test_members_with_wrong_key_or_label_never_merge() -> None:
    good = Keyring(b"k" * 32)
    keys = {4: Keyring(b"x" * 32)}
    labels = {5: "other-cluster"}
    cluster = SimCluster(
        LAN,
        seed=20,
        keyring_for=lambda i: keys.get(i, good) if i != 5 else good,
        label_for=lambda i: labels.get(i, "prod"),
    )
    cluster.start(6)
    members = [0, 1, 2, 3]
    assert cluster.run_until(lambda: cluster.converged(members), timeout=30)
    cluster.run_for(20)
    assert cluster.converged(members)
    assert cluster.view_ids(4) == {sim_id(4)}
    assert cluster.view_ids(5) == {sim_id(5)}
    drops = sum(cluster.nodes[i].agent.stats["dropped_decrypt"] for i in members)
    labels_dropped = sum(cluster.nodes[i].agent.stats["dropped_label"] for i in members)
    assert drops > 0
    assert labels_dropped > 0


def test_key_rotation_keeps_cluster_together() -> None:
    old, new = b"o" * 16, b"n" * 16
    rings = {i: Keyring(old) for i in range(4)}
    cluster = SimCluster(LAN, seed=21, keyring_for=lambda i: rings[i])
    cluster.start(4)
    assert cluster.run_until(cluster.converged, timeout=30)
    for ring in rings.values():
        ring.install(new)
    for i in (0, 1):
        rings[i].use(new)  # half the cluster already sends with the new key
    cluster.run_for(10)
    for ring in rings.values():
        ring.use(new)
        ring.remove(old)
    cluster.run_for(10)
    assert cluster.converged()
    assert cluster.events(MemberEventKind.DEAD) == []


@pytest.mark.parametrize("loss", [0.05])
def test_no_false_positive_under_message_loss(loss: float) -> None:
    cluster = converged_cluster(20, seed=22, loss=loss)
    cluster.run_for(120)
    assert cluster.events(MemberEventKind.DEAD) == []
    assert cluster.converged()
