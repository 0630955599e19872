"""Wire format, keyring, replay guard, config, and hostile input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer_ring.errors import ConfigError
from peer_ring.membership.base import Member
from peer_ring.membership.swim import Keyring, SimCluster, SwimConfig
from peer_ring.membership.swim.keyring import DecryptError
from peer_ring.membership.swim.sim import sim_addr
from peer_ring.membership.swim.wire import (
    Ack,
    Alive,
    Dead,
    Dropped,
    Header,
    IndirectPing,
    Nack,
    Ping,
    PushPull,
    ReplayGuard,
    StateRecord,
    Suspect,
    SwimState,
    decode_envelope,
    encode_envelope,
    encode_message,
)

MEMBER = Member("n1", "10.0.0.1:9000", zone="a", incarnation=2, meta={"k": "v"})
MESSAGES = [
    Ping(1, "n2", "n1"),
    IndirectPing(2, "n3", ("10.0.0.3", 7946), "n1", True),
    Ack(3),
    Nack(4),
    Alive(5, MEMBER, ("10.0.0.1", 7946)),
    Suspect(6, 2, "n1", "n2"),
    Dead(7, 2, "n1", "n1"),
    PushPull(True, (StateRecord(1, SwimState.SUSPECT, MEMBER, ("10.0.0.1", 7946)),)),
]
HEADER = Header(42, 7, 1_700_000_000_000, "n9")


@pytest.mark.parametrize("keyring", [None, Keyring(b"a" * 32)])
def test_compound_packet_round_trips_every_message(keyring: Keyring | None) -> None:
    data = encode_envelope(
        HEADER, [encode_message(m) for m in MESSAGES], label="L", keyring=keyring
    )
    header, msgs = decode_envelope(data, label="L", keyring=keyring, max_size=65535)
    assert header == HEADER
    assert msgs == MESSAGES
    assert msgs[4].member.meta == {"k": "v"}  # type: ignore[union-attr]


def test_label_and_encryption_mismatches_are_dropped_with_reasons() -> None:
    ring = Keyring(b"a" * 16)
    sealed = encode_envelope(HEADER, [encode_message(Ack(1))], label="A", keyring=ring)
    plain = encode_envelope(HEADER, [encode_message(Ack(1))], label="A", keyring=None)
    cases = [
        (sealed, "B", ring, "label"),
        (sealed, "A", Keyring(b"b" * 16), "decrypt"),
        (plain, "A", ring, "unencrypted"),
        (sealed, "A", None, "encrypted"),
        (sealed[:-3], "A", ring, "decrypt"),
        (plain[:-1], "A", None, "truncated"),
        (b"\x09\x00garbage", "", None, "malformed"),
        (b"\x01", "", None, "truncated"),
    ]
    for data, label, keyring, reason in cases:
        with pytest.raises(Dropped) as info:
            decode_envelope(data, label=label, keyring=keyring, max_size=65535)
        assert info.value.reason == reason
    # Tampering with the (cleartext) label inside a sealed packet breaks authentication.
    forged = sealed[:2] + b"B" + sealed[3:]
    with pytest.raises(Dropped) as info:
        decode_envelope(forged, label="B", keyring=ring, max_size=65535)
    assert info.value.reason == "decrypt"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_dropped(data: bytes) -> None:
    for keyring in (None, Keyring(b"z" * 16)):
        with contextlib.suppress(Dropped):
            decode_envelope(data, label="", keyring=keyring, max_size=200)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(min_value=-(2**63), max_value=2**64 - 1),
            st.text(max_size=5),
            st.none(),
            st.booleans(),
        ),
        max_size=6,
    )
)
def test_well_framed_but_wrong_messages_are_dropped(fields: list[object]) -> None:
    import msgpack

    body = msgpack.packb([1, 1, 1, "x"]) + msgpack.packb(fields)
    data = bytes((1, 0)) + body
    reason: str | None = None
    try:
        header, msgs = decode_envelope(data, label="", keyring=None, max_size=65535)
    except Dropped as exc:
        reason = exc.reason
    if reason is not None:
        # a message that is not [known type, fields of the right types]
        assert reason in ("malformed", "unknown_type"), reason
        return
    # only a genuine message gets through, and it is exactly what was sent
    assert header == Header(1, 1, 1, "x")
    assert len(msgs) == 1
    assert msgpack.unpackb(encode_message(msgs[0])) == fields


def test_replay_guard_drops_duplicates_old_sequences_and_stale_timestamps() -> None:
    guard = ReplayGuard(window=60.0)
    now = 1_700_000_000.0
    h = Header(1, 10, int(now * 1000), "n1")
    guard.check(h, now)
    with pytest.raises(Dropped):
        guard.check(h, now)  # exact replay
    guard.check(Header(1, 5, int(now * 1000), "n1"), now)  # reordered, unseen: fine
    guard.check(Header(1, 2000, int(now * 1000), "n1"), now)
    with pytest.raises(Dropped):
        guard.check(Header(1, 11, int(now * 1000), "n1"), now)  # fell out of the window
    with pytest.raises(Dropped):
        guard.check(Header(2, 1, int((now - 120) * 1000), "n1"), now)  # too old
    guard.check(Header(2, 1, int(now * 1000), "n1"), now)  # a new session of the same sender


def test_keyring_rotation_steps() -> None:
    ring = Keyring(b"1" * 16, [b"2" * 24])
    sealed = ring.seal(b"hello", b"aad")
    ring.use(b"2" * 24)
    assert ring.open(sealed, b"aad") == b"hello"  # old primary still accepted
    ring.remove(b"1" * 16)
    with pytest.raises(DecryptError):
        ring.open(sealed, b"aad")
    with pytest.raises(ConfigError):
        ring.remove(b"2" * 24)  # primary
    with pytest.raises(ConfigError):
        Keyring(b"short")
    with pytest.raises(ConfigError):
        ring.use(b"3" * 16)  # not installed
    assert Keyring.from_hex(["00" * 16, "11" * 32]).keys() == [b"\0" * 16, b"\x11" * 32]


def test_presets_are_valid_and_formulas_documented() -> None:
    for cfg in (SwimConfig.local(), SwimConfig.lan(), SwimConfig.wan()):
        assert cfg.probe_timeout < cfg.probe_interval
        assert cfg.suspicion_max_timeout(50) == pytest.approx(
            cfg.suspicion_max_timeout_mult * cfg.suspicion_min_timeout(50)
        )
    lan = SwimConfig.lan()
    # mult x log10(max(N,10)) x probe interval
    assert lan.suspicion_min_timeout(5) == pytest.approx(lan.suspicion_mult * lan.probe_interval)
    assert lan.suspicion_min_timeout(100) == pytest.approx(
        2 * lan.suspicion_mult * lan.probe_interval
    )
    assert lan.retransmit_limit(9) == lan.retransmit_mult
    assert lan.retransmit_limit(200) == 3 * lan.retransmit_mult
    assert lan.suspicion_confirmations(3) == 0
    assert lan.suspicion_confirmations(10) == 2
    assert lan.push_pull_interval_for(128) == 3 * lan.push_pull_interval
    with pytest.raises(ConfigError):
        SwimConfig(probe_timeout=2.0, probe_interval=1.0)
    with pytest.raises(ConfigError):
        SwimConfig.preset("lan", no_such_field=1)
    with pytest.raises(ConfigError):
        SwimConfig.preset("moon")
    assert SwimConfig.preset("wan", gossip_nodes=5).gossip_nodes == 5


def test_hostile_packets_are_counted_and_never_crash_a_running_node() -> None:
    ring = Keyring(b"q" * 32)
    cluster = SimCluster(
        SwimConfig.lan(), seed=5, keyring_for=lambda i: ring, label_for=lambda i: "c"
    )
    cluster.start(3)
    assert cluster.run_until(cluster.converged, timeout=20)
    victim = cluster.nodes[1].agent
    attacker = cluster.net.attach(("evil", 1))
    valid = victim._envelope([encode_message(Ping(1, "n1", "n0"))])  # a real packet from n1's keys
    good = encode_envelope(
        Header(77, 1, int(cluster.scheduler.wall() * 1000), "n0"),
        [encode_message(Ping(99, "n1", "n0"))],
        label="c",
        keyring=ring,
    )
    packets = {
        "malformed": b"\x02\x01c" + ring.seal(b"\xc1\xc1", b"\x02\x01c"),
        "truncated": valid[:2],
        "decrypt": valid[:-1] + bytes([valid[-1] ^ 1]),
        "unencrypted": encode_envelope(HEADER, [encode_message(Ack(1))], label="c", keyring=None),
        "label": encode_envelope(HEADER, [], label="d", keyring=ring),
    }
    for data in packets.values():
        attacker.send_to(sim_addr(1), data)
    attacker.send_to(sim_addr(1), good)
    attacker.send_to(sim_addr(1), good)  # replayed
    for data in packets.values():  # and over the TCP path
        attacker.exchange(sim_addr(1), data, 1.0, lambda reply: None)
    cluster.run_for(5)
    for reason in packets:
        assert victim.stats[f"dropped_{reason}"] >= 2, reason
    assert victim.stats["dropped_replay"] >= 1
    assert victim.stats["internal_errors"] == 0
    assert cluster.converged()
