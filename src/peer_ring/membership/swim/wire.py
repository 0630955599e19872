"""Wire format of SWIM packets: messages, compound envelopes, replay guard.

Envelope (the same for UDP datagrams and TCP frames)::

    byte 0      format: 0x01 plaintext, 0x02 AES-GCM sealed
    byte 1      L = length of the cluster label (0..255)
    2 .. 2+L    label, UTF-8
    rest        body, or keyring.seal(body, aad=bytes[0:2+L])

Body: a msgpack header ``[session, seq, ts_ms, sender_id]`` followed by
zero or more msgpack messages back to back (a *compound* packet: updates
piggyback on probes). Each message is a msgpack array whose first item is its
type code (:class:`MsgType`).

Invariants of :func:`decode_envelope` / :func:`decode_messages`: they either
return well-typed objects or raise :class:`Dropped` with a ``reason`` used as
a counter name -- never another exception, whatever the bytes.

Replay protection (:class:`ReplayGuard`): every sender picks a random 63-bit
*session* at start and numbers its packets ``seq = 1, 2, ...``; each packet
also carries the sender's wall clock in ms. A receiver drops a packet whose
timestamp is more than ``replay_window`` from its own wall clock, and, within
the window, one whose ``(sender, session, seq)`` it has already accepted
(a sliding 1024-sequence bitmap per session; older sequences are dropped as
replays too). A captured packet therefore cannot be replayed after the window,
and not twice within it. The scheme protects integrity only when encryption
is on: without a key an attacker can forge fresh headers anyway. It assumes
wall clocks agree within ``replay_window`` (NTP).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from peer_ring.errors import ConfigError, ProtocolError
from peer_ring.membership.base import Member, format_address, parse_address
from peer_ring.membership.swim.keyring import OVERHEAD, DecryptError, Keyring

Addr = tuple[str, int]

FORMAT_PLAIN = 0x01
FORMAT_SEALED = 0x02
#: Bytes of header + envelope overhead reserved when filling a packet.
ENVELOPE_RESERVE = 2 + 255 + OVERHEAD + 48


class Dropped(ProtocolError):
    """A packet was rejected; ``reason`` names the counter it increments."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"swim packet dropped ({reason}){': ' + detail if detail else ''}")


class MsgType(enum.IntEnum):
    PING = 1
    INDIRECT_PING = 2
    ACK = 3
    NACK = 4
    ALIVE = 5
    SUSPECT = 6
    DEAD = 7
    PUSH_PULL = 8


class SwimState(enum.IntEnum):
    """A member's state in the SWIM state machine."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    target: str  # id the sender expects to answer (a restarted node with another id ignores)
    source: str


@dataclass(frozen=True, slots=True)
class IndirectPing:
    seq: int
    target: str
    target_addr: Addr
    source: str
    nack: bool


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


@dataclass(frozen=True, slots=True)
class Nack:
    seq: int


@dataclass(frozen=True, slots=True)
class Alive:
    inc: int  # SWIM refutation counter
    member: Member  # member.incarnation is the node's restart counter ("life")
    gossip: Addr


@dataclass(frozen=True, slots=True)
class Suspect:
    inc: int
    life: int
    node: str
    source: str


@dataclass(frozen=True, slots=True)
class Dead:
    """``source == node`` means a graceful leave."""

    inc: int
    life: int
    node: str
    source: str


@dataclass(frozen=True, slots=True)
class StateRecord:
    inc: int
    state: SwimState
    member: Member
    gossip: Addr


@dataclass(frozen=True, slots=True)
class PushPull:
    join: bool
    states: tuple[StateRecord, ...]


Message = Ping | IndirectPing | Ack | Nack | Alive | Suspect | Dead | PushPull


@dataclass(frozen=True, slots=True)
class Header:
    session: int
    seq: int
    ts_ms: int
    sender: str


def _addr_wire(addr: Addr) -> str:
    return format_address(addr[0], addr[1])


def encode_message(msg: Message) -> bytes:
    """msgpack bytes of one message."""
    obj: list[Any]
    match msg:
        case Ping(seq, target, source):
            obj = [MsgType.PING, seq, target, source]
        case IndirectPing(seq, target, taddr, source, nack):
            obj = [MsgType.INDIRECT_PING, seq, target, _addr_wire(taddr), source, nack]
        case Ack(seq):
            obj = [MsgType.ACK, seq]
        case Nack(seq):
            obj = [MsgType.NACK, seq]
        case Alive(inc, member, gossip):
            obj = [MsgType.ALIVE, inc, member.to_wire(), _addr_wire(gossip)]
        case Suspect(inc, life, node, source):
            obj = [MsgType.SUSPECT, inc, life, node, source]
        case Dead(inc, life, node, source):
            obj = [MsgType.DEAD, inc, life, node, source]
        case PushPull(join, states):
            obj = [
                MsgType.PUSH_PULL,
                join,
                [[r.inc, int(r.state), r.member.to_wire(), _addr_wire(r.gossip)] for r in states],
            ]
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _int(v: Any) -> int:
    if type(v) is not int or v < 0 or v >= 2**63:
        raise Dropped("malformed", f"expected a non-negative int, got {v!r}")
    return v


def _str(v: Any) -> str:
    if type(v) is not str or not v or len(v) > 256:
        raise Dropped("malformed", f"expected a short string, got {v!r}")
    return v


def _addr(v: Any) -> Addr:
    try:
        return parse_address(_str(v))
    except ConfigError as exc:
        raise Dropped("malformed", str(exc)) from None


def _member(v: Any) -> Member:
    try:
        return Member.from_wire(v)
    except ConfigError as exc:
        raise Dropped("malformed", str(exc)) from None


def _message(obj: Any) -> Message:
    if not isinstance(obj, list) or not obj or type(obj[0]) is not int:
        raise Dropped("malformed", "message is not [type, ...]")
    try:
        kind = MsgType(obj[0])
    except ValueError:
        raise Dropped("unknown_type", f"type {obj[0]}") from None
    f = obj[1:]
    arity = {
        MsgType.PING: 3,
        MsgType.INDIRECT_PING: 5,
        MsgType.ACK: 1,
        MsgType.NACK: 1,
        MsgType.ALIVE: 3,
        MsgType.SUSPECT: 4,
        MsgType.DEAD: 4,
        MsgType.PUSH_PULL: 2,
    }[kind]
    if len(f) != arity:
        raise Dropped("malformed", f"{kind.name} needs {arity} fields, got {len(f)}")
    match kind:
        case MsgType.PING:
            return Ping(_int(f[0]), _str(f[1]), _str(f[2]))
        case MsgType.INDIRECT_PING:
            if type(f[4]) is not bool:
                raise Dropped("malformed", "nack flag")
            return IndirectPing(_int(f[0]), _str(f[1]), _addr(f[2]), _str(f[3]), f[4])
        case MsgType.ACK:
            return Ack(_int(f[0]))
        case MsgType.NACK:
            return Nack(_int(f[0]))
        case MsgType.ALIVE:
            return Alive(_int(f[0]), _member(f[1]), _addr(f[2]))
        case MsgType.SUSPECT:
            return Suspect(_int(f[0]), _int(f[1]), _str(f[2]), _str(f[3]))
        case MsgType.DEAD:
            return Dead(_int(f[0]), _int(f[1]), _str(f[2]), _str(f[3]))
        case MsgType.PUSH_PULL:
            if type(f[0]) is not bool or not isinstance(f[1], list):
                raise Dropped("malformed", "push-pull")
            records = []
            for rec in f[1]:
                if not isinstance(rec, list) or len(rec) != 4:
                    raise Dropped("malformed", "push-pull record")
                try:
                    state = SwimState(_int(rec[1]))
                except ValueError:
                    raise Dropped("malformed", "state code") from None
                records.append(StateRecord(_int(rec[0]), state, _member(rec[2]), _addr(rec[3])))
            return PushPull(f[0], tuple(records))
    raise AssertionError("unreachable")  # pragma: no cover


def encode_envelope(
    header: Header,
    messages: Iterable[bytes],
    *,
    label: str,
    keyring: Keyring | None,
) -> bytes:
    """Frame pre-encoded messages (see :func:`encode_message`) into one packet."""
    head: bytes = msgpack.packb([header.session, header.seq, header.ts_ms, header.sender])
    body = head + b"".join(messages)
    label_b = label.encode()
    if keyring is None:
        return bytes((FORMAT_PLAIN, len(label_b))) + label_b + body
    prefix = bytes((FORMAT_SEALED, len(label_b))) + label_b
    return prefix + keyring.seal(body, prefix)


def decode_envelope(
    data: bytes, *, label: str, keyring: Keyring | None, max_size: int
) -> tuple[Header, list[Message]]:
    """Check, decrypt and parse one packet or frame; :class:`Dropped` on any problem."""
    if len(data) > max_size:
        raise Dropped("oversize", f"{len(data)} bytes")
    if len(data) < 2:
        raise Dropped("truncated")
    fmt, label_len = data[0], data[1]
    if fmt not in (FORMAT_PLAIN, FORMAT_SEALED):
        raise Dropped("malformed", f"format byte {fmt:#x}")
    if len(data) < 2 + label_len:
        raise Dropped("truncated")
    if data[2 : 2 + label_len] != label.encode():
        raise Dropped("label")
    prefix, rest = data[: 2 + label_len], data[2 + label_len :]
    if keyring is not None:
        if fmt != FORMAT_SEALED:
            raise Dropped("unencrypted")
        try:
            body = keyring.open(rest, prefix)
        except DecryptError:
            raise Dropped("decrypt") from None
    else:
        if fmt != FORMAT_PLAIN:
            raise Dropped("encrypted", "got a sealed packet but no keyring is configured")
        body = rest
    return decode_body(body)


def decode_body(body: bytes) -> tuple[Header, list[Message]]:
    unpacker = msgpack.Unpacker(
        raw=False,
        max_buffer_size=max(len(body), 1),
        strict_map_key=True,
        use_list=True,
    )
    objs: list[Any] = []
    end = 0  # offset just past the last complete object
    try:
        unpacker.feed(body)
        for obj in unpacker:
            objs.append(obj)
            end = unpacker.tell()
    except Exception as exc:  # msgpack raises many types on bad input
        raise Dropped("malformed", repr(exc)) from None
    if end != len(body):
        raise Dropped("truncated")
    if not objs:
        raise Dropped("truncated")
    head = objs[0]
    if not isinstance(head, list) or len(head) != 4:
        raise Dropped("malformed", "header")
    header = Header(_int(head[0]), _int(head[1]), _int(head[2]), _str(head[3]))
    return header, [_message(o) for o in objs[1:]]


class ReplayGuard:
    """Drops packets outside the time window or already seen (see module doc)."""

    BITS = 1024

    def __init__(self, window: float) -> None:
        self.window = window
        # (sender, session) -> [highest seq, bitmap (bit i = highest - i seen), last wall]
        self._seen: dict[tuple[str, int], list[Any]] = {}
        self._sweep_at = 0.0

    def check(self, header: Header, now_wall: float) -> None:
        """Record the packet or raise :class:`Dropped` ("replay")."""
        if self.window > 0 and abs(header.ts_ms / 1000.0 - now_wall) > self.window:
            raise Dropped("replay", "timestamp outside the replay window")
        key = (header.sender, header.session)
        entry = self._seen.get(key)
        if entry is None:
            self._seen[key] = [header.seq, 1, now_wall]
        else:
            high, bits = entry[0], entry[1]
            if header.seq > high:
                shift = header.seq - high
                bits = ((bits << shift) | 1) & ((1 << self.BITS) - 1) if shift < self.BITS else 1
                entry[0], entry[1] = header.seq, bits
            else:
                back = high - header.seq
                if back >= self.BITS or (bits >> back) & 1:
                    raise Dropped("replay", "sequence already seen or too old")
                entry[1] = bits | (1 << back)
            entry[2] = now_wall
        if now_wall >= self._sweep_at:
            self._sweep(now_wall)

    def _sweep(self, now_wall: float) -> None:
        horizon = max(self.window, 1.0) * 2
        self._seen = {k: v for k, v in self._seen.items() if now_wall - v[2] <= horizon}
        self._sweep_at = now_wall + horizon

    def __len__(self) -> int:
        return len(self._seen)


def state_records(records: Sequence[StateRecord]) -> PushPull:
    return PushPull(False, tuple(records))
