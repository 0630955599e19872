"""The peer wire protocol: every operation code, frame shape and the version.

Peer messages are msgpack arrays whose first element names the operation.
This module is the only place that knows their layout: subsystems build
frames with the ``*_frame`` functions and read them with the ``parse_*``
functions, which check every field's type and raise
:class:`~peer_ring.errors.InvalidRequest` with the operation's name when a
frame is malformed (a peer speaking nonsense gets a clear error, never a
crash of the node).

Frames (``->`` the answer)::

    ["p"]                                                 ping -> [node_id, ring epoch]
    ["m", records]                                        member exchange -> records
    ["st"]                                                status -> map
    ["s", ns, command, key, partition, payload, origin(, epoch)]
                                                          service command (epoch fenced;
                                                          without an epoch -- diagnostic
                                                          probes -- served unfenced)
    ["sd", ns, command, key, partition, payload, origin]  dual write to an old holder
    ["cv", ns, command, partitions, payload, origin, epoch]
                                                          coverage command: one replica,
                                                          many partitions (epoch fenced)
    ["sb", ns, origin, epoch, items]                      batch of service commands for one
                                                          replica, ``items`` flat: command,
                                                          key, partition, payload per command
                                                          -> flat [status, value] per command
                                                          (status 0: the answer; 1: value is
                                                          [error code, message])
    ["h", owner, ns, command, key, partition, payload, origin]
                                                          hinted command for a down owner
    ["hd", ns, partition, records]                        hint / record delivery
    ["ae", ns, partition, leaves]                         anti-entropy tree exchange
    ["ae_get", ns, partition, keys]                       anti-entropy pull
    ["ae_roots", depth, [[ns, partition, root], ...]]     compare Merkle roots of many
                                                          partitions -> those that differ
    ["xf_done", partition, sender, targets, reason]       a transfer finished
    ["xf_fail", partition, sender]                        a transfer failed
    ["xf_plan"]                                           transfers planned for the asker
    ["xf_at", transfer_id]                                resume position of a transfer
    stream header ["xf", ns, partition, sender(, transfer_id, start)]
    ["leave"]                                             decommission (admin)
    ["kv", verb, key, ...]                                ``peer-ring kv`` (admin)
    ["bench", spec]                                       in-node load run (--testing)
    ["ratelimit", "hit"|"stats", ...]                     ``peer-ring ratelimit`` (admin)

Operations reserved for the node (:data:`NODE_OPS`) and for the framework's
subsystems (:data:`FRAMEWORK_OPS`) cannot be taken by anything else
(``Node.add_peer_handler`` refuses them); admin operations
(:data:`ADMIN_OPS`) are registered by the process that runs the node.
Authorisation (when peer authentication is configured): :data:`ADMIN_REQUIRED`
needs an admin credential, ``PING`` any authenticated peer, everything else a
proven member (see ``peer_ring.transport.auth``).

Version history (:data:`PROTOCOL_VERSION`, checked in every connection's
handshake: a peer with another version is refused with
:class:`~peer_ring.errors.VersionMismatch`, never misread):

* 2 -- resumable transfer streams (6-field header, ``xf_at``), ``xf_done``
  carries the job's reason, additive Merkle leaves.
* 3 -- coverage commands (``cv``) with ring-epoch fencing; the framework
  sends every service command with the sender's epoch.
* 4 -- batched service commands (``sb``): the quorum rounds started
  together (a RESP pipeline, MSET/MGET, ``put_many``) travel as one request
  per replica, each command answered (or failed) on its own.
* 5 -- ``ae_roots``: one request compares the Merkle roots of many
  partitions (a restarted node's bootstrap asks each peer once, and
  exchanges trees only for the partitions that differ).
* 6 -- the KV store's plain writes replicate with the replica command
  ``repl`` (a ``merge`` that answers nil, see ``peer_ring.apps.kv.replica``),
  which a node of protocol 5 would refuse as an unknown command: the version
  keeps such a node out of the cluster instead. ``merge`` is still served.
* 7 -- a KV state of one version may travel in its packed form
  (``peer_ring.apps.kv._state.pack``: ``[actor, value, expires_at, n]`` or
  ``[actor, value, expires_at, stamp, n]``, one array instead of three
  nested ones); plain writes replicate ``repl`` in it, which a node of
  protocol 6 would refuse as a malformed state.
* 8 -- a KV state of one value with several actors' entries may travel in
  the vector form (``[actor, value, expires_at, stamp, n, actor2, n2,
  ...]``: the value's entry, then the other actors' counters, one array
  instead of up to eight nested ones), in ``repl`` payloads and in quorum
  reads' answers, which a node of protocol 7 would refuse as a malformed
  state; and a forwarded plain write (``coord_put``) may say in a seventh
  field that its writer does not ask whether a value existed, so that its
  coordinator replicates it with ``repl`` instead of ``merge``.

Invariant: this module imports nothing but :mod:`peer_ring.errors` (no
asyncio, no transport); it is pure data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from peer_ring.errors import InvalidRequest

__all__ = [
    "ADMIN_OPS",
    "ADMIN_REQUIRED",
    "AE_GET",
    "AE_ROOTS",
    "AE_TREE",
    "BATCH",
    "BATCH_ERROR",
    "BATCH_OK",
    "BENCH",
    "COVER",
    "DUAL",
    "FRAMEWORK_OPS",
    "HINTED",
    "HINT_DELIVERY",
    "KV_ADMIN",
    "LEAVE",
    "MEMBERS",
    "NODE_OPS",
    "PING",
    "PROTOCOL_VERSION",
    "RATELIMIT_ADMIN",
    "SERVICE",
    "STATUS",
    "TRANSFER_STREAM",
    "XF_AT",
    "XF_DONE",
    "XF_FAIL",
    "XF_PLAN",
    "Batch",
    "Cover",
    "Hinted",
    "ServiceCommand",
    "ServiceFields",
    "batch_frame",
    "bench_frame",
    "cover_frame",
    "decode_records",
    "delivery_frame",
    "dual_frame",
    "hinted_frame",
    "kv_admin_frame",
    "leave_frame",
    "parse_batch",
    "parse_batch_answer",
    "parse_cover",
    "parse_dual",
    "parse_hinted",
    "parse_partition_frame",
    "parse_roots",
    "parse_roots_answer",
    "parse_service",
    "ping_frame",
    "probe_frame",
    "pull_frame",
    "ratelimit_frame",
    "roots_frame",
    "service_frame",
    "status_frame",
    "tree_frame",
]

#: Version of the peer wire protocol (see the module docstring's history).
PROTOCOL_VERSION: Final = 8

# -- operations the node answers itself ----------------------------------------
PING: Final = "p"
MEMBERS: Final = "m"
STATUS: Final = "st"
SERVICE: Final = "s"
DUAL: Final = "sd"
COVER: Final = "cv"
BATCH: Final = "sb"

# -- operations of the replication subsystems ----------------------------------
HINTED: Final = "h"
HINT_DELIVERY: Final = "hd"
AE_TREE: Final = "ae"
AE_GET: Final = "ae_get"
AE_ROOTS: Final = "ae_roots"
XF_DONE: Final = "xf_done"
XF_FAIL: Final = "xf_fail"
XF_PLAN: Final = "xf_plan"
XF_AT: Final = "xf_at"
#: Stream header kind of a partition transfer.
TRANSFER_STREAM: Final = "xf"

# -- operations of the process running the node (runner) -----------------------
LEAVE: Final = "leave"
KV_ADMIN: Final = "kv"
BENCH: Final = "bench"
RATELIMIT_ADMIN: Final = "ratelimit"

#: Dispatched by the node itself: no handler may be registered for them.
NODE_OPS: Final = frozenset({PING, MEMBERS, STATUS, SERVICE, DUAL, COVER, BATCH})
#: Answered by the framework's replication subsystems (each registers its own).
FRAMEWORK_OPS: Final = frozenset(
    {HINTED, HINT_DELIVERY, AE_TREE, AE_GET, AE_ROOTS, XF_DONE, XF_FAIL, XF_PLAN, XF_AT}
)
#: Registered by ``peer_ring.runner`` for the CLI and benchmarks.
ADMIN_OPS: Final = frozenset({LEAVE, KV_ADMIN, BENCH, RATELIMIT_ADMIN})
#: What needs an admin credential once peer authentication is configured: the
#: admin operations and the status details. ``PING`` is open to any
#: authenticated peer; every other operation needs a proven member.
ADMIN_REQUIRED: Final = ADMIN_OPS | {STATUS}


class ServiceCommand(NamedTuple):
    """A service command as a replica receives it (``s``, ``sd`` and ``h``)."""

    namespace: str
    command: str
    key: bytes
    partition: int
    payload: Any
    origin: str


class Hinted(NamedTuple):
    """A hinted command: ``command`` is meant for ``owner``, who is down."""

    owner: str
    command: ServiceCommand


class Cover(NamedTuple):
    """A coverage command: one replica answers for several partitions."""

    namespace: str
    command: str
    partitions: list[int]
    payload: Any
    origin: str
    epoch: Any


class Batch(NamedTuple):
    """A batch of service commands for one replica (``sb``).

    ``items`` is flat: ``command, key, partition, payload`` per command, in
    the order the sender started them (the receiver applies them in it).
    """

    namespace: str
    origin: str
    epoch: Any
    items: list[Any]


#: Status of one command's answer in a batch answer.
BATCH_OK: Final = 0
BATCH_ERROR: Final = 1


# -- builders --------------------------------------------------------------------
def service_frame(
    namespace: str,
    command: str,
    key: bytes,
    partition: int,
    payload: Any,
    origin: str,
    epoch: str,
) -> list[Any]:
    """``["s", ...]``: a command for one replica of ``key``, fenced by ``epoch``."""
    return [SERVICE, namespace, command, key, partition, payload, origin, epoch]


def probe_frame(
    namespace: str, command: str, key: bytes, partition: int, payload: Any, origin: str
) -> list[Any]:
    """``["s", ...]`` without an epoch: a diagnostic read of one replica's local
    state (fault harness, probes), served unfenced -- never for data a client
    acts on."""
    return [SERVICE, namespace, command, key, partition, payload, origin]


def dual_frame(service: list[Any]) -> list[Any]:
    """The dual-write copy of a :func:`service_frame` for a node still handing off."""
    return [DUAL, *service[1:7]]


def hinted_frame(owner: str, service: list[Any]) -> list[Any]:
    """The hinted copy of a :func:`service_frame`, kept for the down ``owner``."""
    return [HINTED, owner, *service[1:7]]


def cover_frame(
    namespace: str,
    command: str,
    partitions: Sequence[int],
    payload: Any,
    origin: str,
    epoch: str,
) -> list[Any]:
    """``["cv", ...]``: ``command`` on one replica for all of ``partitions``."""
    return [COVER, namespace, command, partitions, payload, origin, epoch]


def batch_frame(namespace: str, origin: str, epoch: str, items: list[Any]) -> list[Any]:
    """``["sb", ...]``: several commands for one replica in one request, fenced by
    ``epoch``; ``items`` flat (``command, key, partition, payload`` each)."""
    return [BATCH, namespace, origin, epoch, items]


# -- parsers ---------------------------------------------------------------------
def _command(op: str, fields: list[Any]) -> ServiceCommand:
    ns, command, key, partition, payload, origin = fields
    if type(ns) is not str or type(command) is not str:
        raise InvalidRequest(f"{op}: namespace and command must be strings")
    if type(key) is not bytes or type(partition) is not int:
        raise InvalidRequest(f"{op}: key must be bytes, partition an int")
    if type(origin) is not str:
        raise InvalidRequest(f"{op}: origin must be a node id")
    return ServiceCommand(ns, command, key, partition, payload, origin)


#: ``parse_service``'s answer: namespace, command, key, partition, payload,
#: origin, and the sender's ring epoch (None when absent). A plain tuple, not
#: a :class:`ServiceCommand`: the compiled build passes it between native
#: functions unboxed, with no object built per replica request (a NamedTuple
#: is built by interpreted code).
ServiceFields = tuple[str, str, bytes, int, Any, str, Any]


def parse_service(message: list[Any]) -> ServiceFields:
    """``["s", ...]`` -> its fields (see :data:`ServiceFields`), checked."""
    n = len(message)
    if n != 8 and n != 7:
        raise InvalidRequest("service command needs 7 or 8 fields")
    # the hot path of every replica command: checked here, in one place,
    # without a slice or a call per field
    ns = message[1]
    command = message[2]
    key = message[3]
    partition = message[4]
    origin = message[6]
    if (
        type(ns) is not str
        or type(command) is not str
        or type(key) is not bytes
        or type(partition) is not int
        or type(origin) is not str
    ):
        _command(SERVICE, message[1:7])  # raises the precise error
    return ns, command, key, partition, message[5], origin, (message[7] if n == 8 else None)


def parse_dual(message: list[Any]) -> ServiceCommand:
    """``["sd", ...]`` -> the command copied to an old holder."""
    if len(message) != 7:
        raise InvalidRequest("dual write needs 7 fields")
    return _command(DUAL, message[1:7])


def parse_hinted(message: list[Any]) -> Hinted:
    """``["h", owner, ...]`` -> the owner and its command."""
    if len(message) != 8 or type(message[1]) is not str:
        raise InvalidRequest("hinted command needs 8 fields, the owner first")
    return Hinted(message[1], _command(HINTED, message[2:8]))


def parse_cover(message: list[Any], partitions: int) -> Cover:
    """``["cv", ...]`` -> the coverage command (partitions checked against the ring)."""
    if len(message) != 7:
        raise InvalidRequest("coverage command needs 7 fields")
    _, ns, command, parts, payload, origin, epoch = message
    if type(ns) is not str or type(command) is not str or type(origin) is not str:
        raise InvalidRequest("cv: namespace, command and origin must be strings")
    if type(parts) is not list or not all(type(p) is int and 0 <= p < partitions for p in parts):
        raise InvalidRequest(f"cv: partitions must be a list of ints in [0, {partitions})")
    return Cover(ns, command, parts, payload, origin, epoch)


def parse_batch(message: list[Any]) -> Batch:
    """``["sb", ...]`` -> the batch; every command's fields are checked here (a
    malformed batch is refused whole, before any command of it is applied)."""
    if len(message) != 5:
        raise InvalidRequest("batch needs 5 fields")
    _, ns, origin, epoch, items = message
    if type(ns) is not str or type(origin) is not str:
        raise InvalidRequest("sb: namespace and origin must be strings")
    if type(items) is not list or len(items) % 4:
        raise InvalidRequest("sb: items must be a flat list of 4 fields per command")
    for i in range(0, len(items), 4):
        if (
            type(items[i]) is not str
            or type(items[i + 1]) is not bytes
            or type(items[i + 2]) is not int
        ):
            raise InvalidRequest("sb: each command needs a string, a bytes key, an int partition")
    return Batch(ns, origin, epoch, items)


def parse_batch_answer(answer: Any, count: int) -> list[Any]:
    """A batch's answer -> flat ``[status, value]`` per command, checked to hold
    ``count`` commands with known statuses (errors as ``[code, message]``)."""
    if type(answer) is not list or len(answer) != 2 * count:
        raise InvalidRequest(f"sb: the answer must hold {count} [status, value] pairs")
    for i in range(0, len(answer), 2):
        status = answer[i]
        if status != BATCH_OK and (
            status != BATCH_ERROR
            or type(answer[i + 1]) is not list
            or len(answer[i + 1]) != 2
            or type(answer[i + 1][0]) is not str
            or type(answer[i + 1][1]) is not str
        ):
            raise InvalidRequest("sb: an answer's status must be 0, or 1 with [code, message]")
    return answer


def ping_frame() -> list[Any]:
    """``["p"]``: liveness probe; answered with ``[node_id, ring epoch]``."""
    return [PING]


def status_frame() -> list[Any]:
    """``["st"]``: the node's status map (``peer-ring status``)."""
    return [STATUS]


def leave_frame() -> list[Any]:
    """``["leave"]``: decommission the node (hand over, then exit)."""
    return [LEAVE]


def kv_admin_frame(verb: str, key: bytes, *args: Any) -> list[Any]:
    """``["kv", verb, key, ...]``: ``peer-ring kv get|put|del`` (``put``: value, ttl)."""
    return [KV_ADMIN, verb, key, *args]


def bench_frame(spec: dict[str, Any]) -> list[Any]:
    """``["bench", spec]``: a bounded load run inside a ``--testing`` node."""
    return [BENCH, spec]


def ratelimit_frame(verb: str, *args: Any) -> list[Any]:
    """``["ratelimit", verb, ...]``: ``peer-ring ratelimit hit`` (``hit``: key,
    limit, period, hits, algorithm) and the limiter's figures (``stats``)."""
    return [RATELIMIT_ADMIN, verb, *args]


def decode_records(chunk: Any) -> list[tuple[bytes, Any]]:
    """Records received from a peer (transfer chunks, ``hd``): ``[[key: bytes, state], ...]``."""
    if type(chunk) is not list:
        raise InvalidRequest("records must be a list")
    out: list[tuple[bytes, Any]] = []
    for item in chunk:
        if type(item) is not list or len(item) != 2 or type(item[0]) is not bytes:
            raise InvalidRequest("a record must be [key: bytes, state]")
        out.append((item[0], item[1]))
    return out


def delivery_frame(namespace: str, partition: int, records: list[Any]) -> list[Any]:
    """``["hd", ns, partition, records]``: records merged into the receiver's replica."""
    return [HINT_DELIVERY, namespace, partition, records]


def tree_frame(namespace: str, partition: int, leaves: list[Any]) -> list[Any]:
    """``["ae", ns, partition, leaves]``: an anti-entropy exchange of Merkle leaves."""
    return [AE_TREE, namespace, partition, leaves]


def pull_frame(namespace: str, partition: int, keys: list[bytes]) -> list[Any]:
    """``["ae_get", ns, partition, keys]``: the records of ``keys`` from the receiver."""
    return [AE_GET, namespace, partition, keys]


def roots_frame(depth: int, roots: list[list[Any]]) -> list[Any]:
    """``["ae_roots", depth, [[ns, partition, root], ...]]``: the sender's Merkle
    roots (trees of ``depth``); the receiver answers the partitions whose root
    differs from its own for some namespace (:func:`parse_roots_answer`)."""
    return [AE_ROOTS, depth, roots]


def parse_roots(message: list[Any]) -> tuple[int, list[tuple[str, int, int]]]:
    """An ``ae_roots`` frame -> (depth, [(ns, partition, root), ...])."""
    if len(message) != 3 or type(message[1]) is not int or type(message[2]) is not list:
        raise InvalidRequest("ae_roots takes [depth, [[namespace, partition, root], ...]]")
    out: list[tuple[str, int, int]] = []
    for entry in message[2]:
        if (
            type(entry) is not list
            or len(entry) != 3
            or type(entry[0]) is not str
            or type(entry[1]) is not int
            or type(entry[2]) is not int
        ):
            raise InvalidRequest("an ae_roots entry is [namespace, partition, root]")
        out.append((entry[0], entry[1], entry[2]))
    return message[1], out


def parse_roots_answer(answer: Any) -> set[int]:
    """The answer to ``ae_roots``: the partitions whose roots differ."""
    if type(answer) is not list or not all(type(p) is int for p in answer):
        raise InvalidRequest("bad ae_roots answer")
    return set(answer)


def parse_partition_frame(message: list[Any], op: str, last: type) -> tuple[str, int, Any]:
    """``[op, ns, partition, x]`` frames (``hd``, ``ae``, ``ae_get``) -> (ns, partition, x),
    ``x`` of type ``last``."""
    if (
        len(message) != 4
        or type(message[1]) is not str
        or type(message[2]) is not int
        or type(message[3]) is not last
    ):
        raise InvalidRequest(f"{op} takes [namespace, partition, {last.__name__}]")
    return message[1], message[2], message[3]
