"""Handlers of the supported Redis commands, registered in the command table.

Semantics follow Redis 7.2 (reply types, error texts, option rules) over the
:class:`~peer_ring.apps.kv.api.KVApi`. What differs in a distributed store is
documented in ``docs/resp.md``: commands marked *read-modify-write* below
(SET with NX/XX/GET/KEEPTTL, INCR*, APPEND, GETDEL, EXPIRE with NX/XX/GT/LT,
PERSIST) read an entry and write back with its causal context; under
concurrent writers the namespace's conflict mode decides, they are not
atomic. DBSIZE, KEYS and SCAN are cluster-wide coverage queries; FLUSHDB and
FLUSHALL delete the whole cluster's keys.
"""

from __future__ import annotations

import os
import platform
import resource
from typing import TYPE_CHECKING

import peer_ring
from peer_ring._build import build
from peer_ring.apps.kv._memory import MemoryBudget
from peer_ring.apps.kv.local import compile_glob
from peer_ring.apps.kv.store import KVBatch, KVStore
from peer_ring.errors import ConfigError
from peer_ring.server.resp._acl import ALL
from peer_ring.server.resp._reply import (
    OK,
    ONE,
    PONG,
    ZERO,
    RespSet,
    Status,
    Verbatim,
    bulk,
    encode,
    integer,
)
from peer_ring.server.resp._table import ALL_SPECS, CommandError, CommandSpec, command, lookup

if TYPE_CHECKING:
    from peer_ring.server.resp._server import RespConnection

#: The Redis version whose command semantics this server follows.
REDIS_VERSION = "7.2.0"

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_NOT_INT = "ERR value is not an integer or out of range"
_SYNTAX = "ERR syntax error"
_WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."


# -- argument helpers ------------------------------------------------------


def parse_int(arg: bytes, message: str = _NOT_INT) -> int:
    """Parse a signed 64-bit integer the strict way Redis does (``string2ll``):
    canonical decimal only -- no sign ``+``, spaces, leading zeros or ``-0``."""
    if not arg or len(arg) > 20:
        raise CommandError(message)
    try:
        value = int(arg)
    except ValueError:
        raise CommandError(message) from None
    if b"%d" % value != arg or not _INT64_MIN <= value <= _INT64_MAX:
        raise CommandError(message)
    return value


# -- connection ------------------------------------------------------------


@command(
    "ping", -1, "fast", acl="@fast @connection", group="connection", summary="Ping the server."
)
async def cmd_ping(c: RespConnection, args: list[bytes]) -> bytes:
    if len(args) > 2:
        raise CommandError("ERR wrong number of arguments for 'ping' command")
    if c.pubsub is not None and not c.resp3:  # subscribed RESP2: ["pong", message]
        return encode([b"pong", args[1] if len(args) == 2 else b""], False)
    return PONG if len(args) == 1 else bulk(args[1])


@command(
    "echo",
    2,
    "fast",
    acl="@fast @connection",
    group="connection",
    summary="Return the given string.",
)
async def cmd_echo(c: RespConnection, args: list[bytes]) -> bytes:
    return bulk(args[1])


def _login(c: RespConnection, user: bytes, password: bytes) -> None:
    """Authenticate ``c`` as ``user`` (WRONGPASS otherwise). A user with every
    permission runs on the fast paths; a restricted one is checked per command."""
    name = user.decode("utf-8", "replace")
    found = c.server.acl.authenticate(name, password)
    if found is None:
        raise CommandError(_WRONGPASS)
    c.user = name
    if found.perms >= ALL:
        c.authenticated, c.perms = True, None
    else:
        c.authenticated, c.perms = False, frozenset(found.perms)


@command(
    "auth",
    -2,
    "no_auth fast no_multi",
    acl="@fast @connection",
    group="connection",
    summary="Authenticate the connection.",
)
async def cmd_auth(c: RespConnection, args: list[bytes]) -> bytes:
    if len(args) > 3:
        raise CommandError(_SYNTAX)
    default = c.server.acl.users.get("default")
    if len(args) == 2 and (default is None or default.nopass):
        raise CommandError(
            "ERR AUTH <password> called without any password configured for the default "
            "user. Are you sure your configuration is correct?"
        )
    user, password = (b"default", args[1]) if len(args) == 2 else (args[1], args[2])
    _login(c, user, password)
    return OK


@command(
    "hello",
    -1,
    "no_auth fast no_multi",
    acl="@fast @connection",
    group="connection",
    summary="Handshake: choose the protocol version, authenticate, name the client.",
    since="6.0.0",
)
async def cmd_hello(c: RespConnection, args: list[bytes]) -> bytes:
    resp3 = c.resp3
    i = 1
    if len(args) > 1:
        proto = parse_int(args[1], "ERR Protocol version is not an integer or out of range")
        if proto not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
        resp3 = proto == 3
        i = 2
    name: bytes | None = None
    auth: tuple[bytes, bytes] | None = None
    while i < len(args):
        opt = args[i].upper()
        more = len(args) - i - 1
        if opt == b"AUTH" and more >= 2:
            auth = (args[i + 1], args[i + 2])
            i += 3
        elif opt == b"SETNAME" and more >= 1:
            name = args[i + 1]
            _check_client_name(name)
            i += 2
        else:
            raise CommandError(
                f"ERR Syntax error in HELLO option '{args[i].decode('utf-8', 'replace')}'"
            )
    if auth is not None:
        _login(c, *auth)
    if not c.authenticated and c.perms is None:
        raise CommandError(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
            "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
            "select the RESP protocol version at the same time"
        )
    if name is not None:
        c.name = name
    c.set_protocol(resp3)
    return encode(
        {
            "server": "redis",
            "version": REDIS_VERSION,
            "proto": 3 if resp3 else 2,
            "id": c.id,
            "mode": "standalone",
            "role": "master",
            "modules": [],
        },
        resp3,
    )


@command(
    "select",
    2,
    "loading stale fast",
    acl="@keyspace @fast",
    group="connection",
    summary="Change the selected database (only database 0 exists).",
)
async def cmd_select(c: RespConnection, args: list[bytes]) -> bytes:
    if parse_int(args[1]) != 0:
        raise CommandError("ERR DB index is out of range")
    return OK


@command(
    "quit",
    -1,
    "no_auth fast",
    acl="@fast @connection",
    group="connection",
    summary="Close the connection after replying.",
)
async def cmd_quit(c: RespConnection, args: list[bytes]) -> bytes:
    c.quit = True
    return OK


@command(
    "reset",
    1,
    "no_auth fast",
    acl="@fast @connection",
    group="connection",
    summary="Reset the connection: RESP2, no name, not authenticated, no MULTI.",
    since="6.2.0",
)
async def cmd_reset(c: RespConnection, args: list[bytes]) -> bytes:
    if c.pubsub is not None:  # leaves every channel and pattern
        c.pubsub.close()
    c.set_protocol(False)
    c.name = b""
    c.multi = None
    c.multi_dirty = False
    c.authenticated = c.server.acl.open
    c.user, c.perms = "default", None
    return b"+RESET\r\n"


# -- MULTI / EXEC ----------------------------------------------------------


@command(
    "multi",
    1,
    "fast loading stale",
    acl="@fast @transaction",
    group="transactions",
    summary="Start queueing commands (executed in order by EXEC, not atomically).",
)
async def cmd_multi(c: RespConnection, args: list[bytes]) -> bytes:
    if c.multi is not None:
        raise CommandError("ERR MULTI calls can not be nested")
    c.multi = []
    c.multi_dirty = False
    return OK


@command(
    "exec",
    1,
    "loading stale",
    acl="@slow @transaction",
    group="transactions",
    summary="Execute the queued commands in order.",
)
async def cmd_exec(c: RespConnection, args: list[bytes]) -> bytes:
    queued = c.multi
    if queued is None:
        raise CommandError("ERR EXEC without MULTI")
    c.multi = None
    if c.multi_dirty:
        c.multi_dirty = False
        raise CommandError("EXECABORT Transaction discarded because of previous errors.")
    # The queued requests run next, each through the connection's one dispatch
    # path; their replies follow this header in order: the array's elements.
    c.run_next(queued)
    return b"*%d\r\n" % len(queued)


@command(
    "discard",
    1,
    "fast loading stale",
    acl="@fast @transaction",
    group="transactions",
    summary="Drop the queued commands.",
)
async def cmd_discard(c: RespConnection, args: list[bytes]) -> bytes:
    if c.multi is None:
        raise CommandError("ERR DISCARD without MULTI")
    c.multi = None
    c.multi_dirty = False
    return OK


@command(
    "watch",
    -2,
    "fast loading stale no_multi",
    keys=(1, -1, 1),
    acl="@fast @transaction",
    group="transactions",
    summary="Not supported: optimistic locking needs atomicity.",
)
async def cmd_watch(c: RespConnection, args: list[bytes]) -> bytes:
    if c.multi is not None:
        raise CommandError("ERR WATCH inside MULTI is not allowed")
    raise CommandError("ERR WATCH is not supported by peer-ring (no atomic transactions)")


@command(
    "unwatch",
    1,
    "fast loading stale",
    acl="@fast @transaction",
    group="transactions",
    summary="No-op (WATCH is not supported).",
)
async def cmd_unwatch(c: RespConnection, args: list[bytes]) -> bytes:
    return OK


# -- strings ---------------------------------------------------------------


def start_get(c: RespConnection, args: list[bytes]) -> bool:
    """GET in callback form, on a store offering it (into the connection's
    open group, if any)."""
    callbacks = c.callbacks
    if callbacks is None:
        return False
    group = c.group
    if group is not None:
        # the store's own batch and store called natively (compiled: no method
        # looked up by name and no arguments parsed per call)
        if isinstance(group, KVBatch):
            group.get(args[1], c.slot_bulk())
        else:
            group.get(args[1], c.slot_bulk())
        return True
    if isinstance(callbacks, KVStore):
        callbacks.start_get(args[1], c.reply_bulk)
    else:
        callbacks.start_get(args[1], c.reply_bulk)
    return True


@command(
    "get",
    2,
    "readonly fast",
    keys=(1, 1, 1),
    acl="@read @string @fast",
    group="string",
    summary="Get the value of a key.",
    start=start_get,
    group_arity=2,
)
async def cmd_get(c: RespConnection, args: list[bytes]) -> bytes:
    value = await c.kv.get(args[1])
    return c.nil if value is None else bulk(value)


def _expire_arg(arg: bytes, unit_ms: bool, absolute: bool, now: float, name: str) -> float:
    """Expiry option value -> absolute wall-clock seconds (Redis's checks)."""
    value = parse_int(arg)
    invalid = f"ERR invalid expire time in '{name}' command"
    if value <= 0 or (not unit_ms and value > _INT64_MAX // 1000):
        raise CommandError(invalid)
    ms = value if unit_ms else value * 1000
    if not absolute:
        now_ms = int(now * 1000)
        if ms > _INT64_MAX - now_ms:
            raise CommandError(invalid)
        ms += now_ms
    return ms / 1000.0


def start_set(c: RespConnection, args: list[bytes]) -> bool:
    """Plain ``SET key value`` (no options) in callback form, on a store offering it."""
    callbacks = c.callbacks
    if callbacks is None or len(args) != 3:
        return False
    group = c.group
    if group is not None:
        if isinstance(group, KVBatch):  # natively (see start_get)
            group.put(args[1], args[2], c.slot_ok())
        else:
            group.put(args[1], args[2], c.slot_ok())
        return True
    if isinstance(callbacks, KVStore):
        callbacks.start_put(args[1], args[2], c.reply_ok)
    else:
        callbacks.start_put(args[1], args[2], c.reply_ok)
    return True


@command(
    "set",
    -3,
    "write denyoom",
    keys=(1, 1, 1),
    acl="@write @string @slow",
    group="string",
    summary="Set a key's value, with optional expiry and conditions (NX/XX/GET/KEEPTTL).",
    start=start_set,
    group_arity=3,
)
async def cmd_set(c: RespConnection, args: list[bytes]) -> bytes:
    key = args[1]
    value = args[2]
    if len(args) == 3:
        await c.kv.put(key, value)
        return OK
    nx = xx = get = keepttl = False
    expires_at: float | None = None
    ttl: float | None = None
    now = c.server.clock.time()
    i = 3
    n = len(args)
    seen_expiry = False
    while i < n:
        opt = args[i].upper()
        if opt == b"NX" and not xx:
            nx = True
        elif opt == b"XX" and not nx:
            xx = True
        elif opt == b"GET":
            get = True
        elif opt == b"KEEPTTL" and not seen_expiry:
            keepttl = seen_expiry = True
        elif opt in (b"EX", b"PX", b"EXAT", b"PXAT") and not seen_expiry and i + 1 < n:
            seen_expiry = True
            i += 1
            at = _expire_arg(args[i], opt.startswith(b"P"), opt.endswith(b"AT"), now, "set")
            if opt.endswith(b"AT"):
                expires_at = at
            else:
                ttl = parse_int(args[i]) / (1000.0 if opt == b"PX" else 1.0)
        else:
            raise CommandError(_SYNTAX)
        i += 1
    if not (nx or xx or get or keepttl):
        await c.kv.put(key, value, ttl=ttl, expires_at=expires_at)
        return OK
    # Read-modify-write: read the entry, write with its causal context.
    entry = await c.kv.get_entry(key)
    old = c.nil if entry is None else bulk(entry.value)
    if (nx and entry is not None) or (xx and entry is None):
        return old if get else c.nil
    if keepttl and entry is not None:
        expires_at = entry.expires_at
    await c.kv.put(
        key,
        value,
        ttl=ttl,
        expires_at=expires_at,
        context=None if entry is None else entry.context,
    )
    return old if get else OK


@command(
    "setnx",
    3,
    "write denyoom fast",
    keys=(1, 1, 1),
    acl="@write @string @fast",
    group="string",
    summary="Set a key only if it does not exist (read-modify-write).",
)
async def cmd_setnx(c: RespConnection, args: list[bytes]) -> bytes:
    entry = await c.kv.get_entry(args[1])
    if entry is not None:
        return ZERO
    await c.kv.put(args[1], args[2])
    return ONE


async def _setex(c: RespConnection, args: list[bytes], unit_ms: bool, name: str) -> bytes:
    _expire_arg(args[2], unit_ms, False, c.server.clock.time(), name)
    ttl = parse_int(args[2]) / (1000.0 if unit_ms else 1.0)
    await c.kv.put(args[1], args[3], ttl=ttl)
    return OK


@command(
    "setex",
    4,
    "write denyoom",
    keys=(1, 1, 1),
    acl="@write @string @slow",
    group="string",
    summary="Set a key's value and its time to live in seconds.",
)
async def cmd_setex(c: RespConnection, args: list[bytes]) -> bytes:
    return await _setex(c, args, False, "setex")


@command(
    "psetex",
    4,
    "write denyoom",
    keys=(1, 1, 1),
    acl="@write @string @slow",
    group="string",
    summary="Set a key's value and its time to live in milliseconds.",
)
async def cmd_psetex(c: RespConnection, args: list[bytes]) -> bytes:
    return await _setex(c, args, True, "psetex")


@command(
    "getset",
    3,
    "write denyoom fast",
    keys=(1, 1, 1),
    acl="@write @string @fast",
    group="string",
    summary="Set a key's value and return the old one (read-modify-write).",
)
async def cmd_getset(c: RespConnection, args: list[bytes]) -> bytes:
    entry = await c.kv.get_entry(args[1])
    await c.kv.put(args[1], args[2], context=None if entry is None else entry.context)
    return c.nil if entry is None else bulk(entry.value)


@command(
    "getdel",
    2,
    "write fast",
    keys=(1, 1, 1),
    acl="@write @string @fast",
    group="string",
    summary="Return a key's value and delete it (read-modify-write).",
    since="6.2.0",
)
async def cmd_getdel(c: RespConnection, args: list[bytes]) -> bytes:
    entry = await c.kv.get_entry(args[1])
    if entry is None:
        return c.nil
    await c.kv.delete(args[1], context=entry.context)
    return bulk(entry.value)


@command(
    "strlen",
    2,
    "readonly fast",
    keys=(1, 1, 1),
    acl="@read @string @fast",
    group="string",
    summary="Length of a key's value (0 if missing).",
)
async def cmd_strlen(c: RespConnection, args: list[bytes]) -> bytes:
    value = await c.kv.get(args[1])
    return integer(0 if value is None else len(value))


@command(
    "append",
    3,
    "write denyoom fast",
    keys=(1, 1, 1),
    acl="@write @string @fast",
    group="string",
    summary="Append to a key's value (read-modify-write).",
)
async def cmd_append(c: RespConnection, args: list[bytes]) -> bytes:
    entry = await c.kv.get_entry(args[1])
    if entry is None:
        value = args[2]
        await c.kv.put(args[1], value)
    else:
        value = entry.value + args[2]
        await c.kv.put(args[1], value, expires_at=entry.expires_at, context=entry.context)
    return integer(len(value))


@command(
    "mget",
    -2,
    "readonly fast",
    keys=(1, -1, 1),
    acl="@read @string @fast",
    group="string",
    summary="Values of several keys.",
)
async def cmd_mget(c: RespConnection, args: list[bytes]) -> bytes:
    values = await c.kv.get_many(args[1:])
    nil = c.nil
    parts = [b"*%d\r\n" % len(values)]
    for v in values:
        parts.append(nil if v is None else bulk(v))
    return b"".join(parts)


@command(
    "mset",
    -3,
    "write denyoom",
    keys=(1, -1, 2),
    acl="@write @string @slow",
    group="string",
    summary="Set several keys (each write is separate, not atomic).",
)
async def cmd_mset(c: RespConnection, args: list[bytes]) -> bytes:
    if len(args) % 2 != 1:
        raise CommandError("ERR wrong number of arguments for 'mset' command")
    await c.kv.put_many(list(zip(args[1::2], args[2::2], strict=True)))
    return OK


async def _incr(c: RespConnection, key: bytes, delta: int) -> bytes:
    entry = await c.kv.get_entry(key)
    current = 0 if entry is None else parse_int(entry.value)
    new = current + delta
    if not _INT64_MIN <= new <= _INT64_MAX:
        raise CommandError("ERR increment or decrement would overflow")
    if entry is None:
        await c.kv.put(key, b"%d" % new)
    else:
        await c.kv.put(key, b"%d" % new, expires_at=entry.expires_at, context=entry.context)
    return integer(new)


@command(
    "incr",
    2,
    "write denyoom fast",
    keys=(1, 1, 1),
    acl="@write @string @fast",
    group="string",
    summary="Increment a key's integer value by one (read-modify-write).",
)
async def cmd_incr(c: RespConnection, args: list[bytes]) -> bytes:
    return await _incr(c, args[1], 1)


@command(
    "decr",
    2,
    "write denyoom fast",
    keys=(1, 1, 1),
    acl="@write @string @fast",
    group="string",
    summary="Decrement a key's integer value by one (read-modify-write).",
)
async def cmd_decr(c: RespConnection, args: list[bytes]) -> bytes:
    return await _incr(c, args[1], -1)


@command(
    "incrby",
    3,
    "write denyoom fast",
    keys=(1, 1, 1),
    acl="@write @string @fast",
    group="string",
    summary="Increment a key's integer value (read-modify-write).",
)
async def cmd_incrby(c: RespConnection, args: list[bytes]) -> bytes:
    return await _incr(c, args[1], parse_int(args[2]))


@command(
    "decrby",
    3,
    "write denyoom fast",
    keys=(1, 1, 1),
    acl="@write @string @fast",
    group="string",
    summary="Decrement a key's integer value (read-modify-write).",
)
async def cmd_decrby(c: RespConnection, args: list[bytes]) -> bytes:
    delta = parse_int(args[2])
    if delta == _INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    return await _incr(c, args[1], -delta)


# -- keyspace --------------------------------------------------------------


@command(
    "del",
    -2,
    "write",
    keys=(1, -1, 1),
    acl="@keyspace @write @slow",
    group="generic",
    summary="Delete keys; returns how many existed.",
)
async def cmd_del(c: RespConnection, args: list[bytes]) -> bytes:
    # batched, each distinct key once (``DEL a a`` counts a once, as in Redis)
    keys = list(dict.fromkeys(args[1:]))
    if len(keys) == 1:
        return integer(int(await c.kv.delete(keys[0])))
    return integer(sum(await c.kv.delete_many(keys)))


@command(
    "unlink",
    -2,
    "write fast",
    keys=(1, -1, 1),
    acl="@keyspace @write @fast",
    group="generic",
    summary="Same as DEL.",
    since="4.0.0",
)
async def cmd_unlink(c: RespConnection, args: list[bytes]) -> bytes:
    return await cmd_del(c, args)


@command(
    "exists",
    -2,
    "readonly fast",
    keys=(1, -1, 1),
    acl="@keyspace @read @fast",
    group="generic",
    summary="How many of the keys exist (duplicates count twice).",
)
async def cmd_exists(c: RespConnection, args: list[bytes]) -> bytes:
    values = await c.kv.get_many(args[1:])
    return integer(sum(1 for v in values if v is not None))


@command(
    "type",
    2,
    "readonly fast",
    keys=(1, 1, 1),
    acl="@keyspace @read @fast",
    group="generic",
    summary="Type of a key: string or none.",
)
async def cmd_type(c: RespConnection, args: list[bytes]) -> bytes:
    return b"+none\r\n" if await c.kv.get(args[1]) is None else b"+string\r\n"


async def _expire(c: RespConnection, args: list[bytes], unit_ms: bool, absolute: bool) -> bytes:
    name = args[0].decode("utf-8", "replace").lower()
    key = args[1]
    when = parse_int(args[2])
    nx = xx = gt = lt = False
    for raw in args[3:]:
        opt = raw.upper()
        if opt == b"NX":
            nx = True
        elif opt == b"XX":
            xx = True
        elif opt == b"GT":
            gt = True
        elif opt == b"LT":
            lt = True
        else:
            raise CommandError(f"ERR Unsupported option {raw.decode('utf-8', 'replace')}")
    if nx and (xx or gt or lt):
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    invalid = f"ERR invalid expire time in '{name}' command"
    if not unit_ms and not -(2**63) // 1000 <= when <= _INT64_MAX // 1000:
        raise CommandError(invalid)
    ms = when if unit_ms else when * 1000
    now = c.server.clock.time()
    if not absolute:
        now_ms = int(now * 1000)
        if ms > _INT64_MAX - now_ms:
            raise CommandError(invalid)
        ms += now_ms
    expires_at = ms / 1000.0
    kv = c.kv
    if not (nx or xx or gt or lt):
        if expires_at <= now:
            return ONE if await kv.delete(key) else ZERO
        return ONE if await kv.set_expiry(key, expires_at) else ZERO
    entry = await kv.get_entry(key)
    if entry is None:
        return ZERO
    current = entry.expires_at
    if (
        (nx and current is not None)
        or (xx and current is None)
        or (gt and (current is None or expires_at <= current))
        or (lt and current is not None and expires_at >= current)
    ):
        return ZERO
    if expires_at <= now:
        return ONE if await kv.delete(key, context=entry.context) else ZERO
    # write back what we read (set_expiry would read the key a second time)
    await kv.put(key, entry.value, expires_at=expires_at, context=entry.context)
    return ONE


_EXPIRE_DOC = "Set a key's time to live{}; 1 if set, 0 if not."


@command(
    "expire",
    -3,
    "write fast",
    keys=(1, 1, 1),
    acl="@keyspace @write @fast",
    group="generic",
    summary=_EXPIRE_DOC.format(" in seconds"),
)
async def cmd_expire(c: RespConnection, args: list[bytes]) -> bytes:
    return await _expire(c, args, False, False)


@command(
    "pexpire",
    -3,
    "write fast",
    keys=(1, 1, 1),
    acl="@keyspace @write @fast",
    group="generic",
    summary=_EXPIRE_DOC.format(" in milliseconds"),
    since="2.6.0",
)
async def cmd_pexpire(c: RespConnection, args: list[bytes]) -> bytes:
    return await _expire(c, args, True, False)


@command(
    "expireat",
    -3,
    "write fast",
    keys=(1, 1, 1),
    acl="@keyspace @write @fast",
    group="generic",
    summary=_EXPIRE_DOC.format(" as a Unix time in seconds"),
    since="1.2.0",
)
async def cmd_expireat(c: RespConnection, args: list[bytes]) -> bytes:
    return await _expire(c, args, False, True)


@command(
    "pexpireat",
    -3,
    "write fast",
    keys=(1, 1, 1),
    acl="@keyspace @write @fast",
    group="generic",
    summary=_EXPIRE_DOC.format(" as a Unix time in milliseconds"),
    since="2.6.0",
)
async def cmd_pexpireat(c: RespConnection, args: list[bytes]) -> bytes:
    return await _expire(c, args, True, True)


@command(
    "persist",
    2,
    "write fast",
    keys=(1, 1, 1),
    acl="@keyspace @write @fast",
    group="generic",
    summary="Remove a key's expiry; 1 if removed.",
    since="2.2.0",
)
async def cmd_persist(c: RespConnection, args: list[bytes]) -> bytes:
    entry = await c.kv.get_entry(args[1])
    if entry is None or entry.expires_at is None:
        return ZERO
    await c.kv.put(args[1], entry.value, context=entry.context)  # no expiry: persisted
    return ONE


async def _ttl_ms(c: RespConnection, key: bytes) -> int:
    entry = await c.kv.get_entry(key)
    if entry is None:
        return -2
    if entry.expires_at is None:
        return -1
    remaining = round((entry.expires_at - c.server.clock.time()) * 1000)
    return max(remaining, 0)


@command(
    "ttl",
    2,
    "readonly fast",
    keys=(1, 1, 1),
    acl="@keyspace @read @fast",
    group="generic",
    summary="Seconds to live (-1 no expiry, -2 no key).",
)
async def cmd_ttl(c: RespConnection, args: list[bytes]) -> bytes:
    ms = await _ttl_ms(c, args[1])
    return integer(ms if ms < 0 else (ms + 500) // 1000)


@command(
    "pttl",
    2,
    "readonly fast",
    keys=(1, 1, 1),
    acl="@keyspace @read @fast",
    group="generic",
    summary="Milliseconds to live (-1 no expiry, -2 no key).",
    since="2.6.0",
)
async def cmd_pttl(c: RespConnection, args: list[bytes]) -> bytes:
    return integer(await _ttl_ms(c, args[1]))


@command(
    "dbsize",
    1,
    "readonly fast",
    acl="@keyspace @read @fast",
    group="server",
    summary="Number of keys in the cluster (a coverage query).",
)
async def cmd_dbsize(c: RespConnection, args: list[bytes]) -> bytes:
    return integer(await c.kv.count())


@command(
    "keys",
    2,
    "readonly",
    acl="@keyspace @read @slow @dangerous",
    group="generic",
    summary="All keys matching a glob pattern (a full cluster scan).",
)
async def cmd_keys(c: RespConnection, args: list[bytes]) -> bytes:
    pattern = None if args[1] == b"*" else args[1]
    seen: dict[bytes, None] = {}
    cursor = 0
    while True:
        cursor, batch = await c.kv.scan(cursor, 1000, pattern)
        for key in batch:
            seen[key] = None
        if cursor == 0:
            break
    return encode(list(seen), c.resp3)


@command(
    "scan",
    -2,
    "readonly",
    acl="@keyspace @read @slow",
    group="generic",
    summary="Iterate the cluster's keys with a cursor.",
    since="2.8.0",
)
async def cmd_scan(c: RespConnection, args: list[bytes]) -> bytes:
    try:
        cursor = int(args[1])
    except ValueError:
        raise CommandError("ERR invalid cursor") from None
    if cursor < 0 or cursor >= 2**64:
        raise CommandError("ERR invalid cursor")
    count = 10
    match: bytes | None = None
    only_strings = True
    i = 2
    while i < len(args):
        opt = args[i].upper()
        if i + 1 >= len(args):
            raise CommandError(_SYNTAX)
        if opt == b"COUNT":
            count = parse_int(args[i + 1])
            if count < 1:
                raise CommandError(_SYNTAX)
        elif opt == b"MATCH":
            match = None if args[i + 1] == b"*" else args[i + 1]
        elif opt == b"TYPE":
            only_strings = args[i + 1].lower() == b"string"
        else:
            raise CommandError(_SYNTAX)
        i += 2
    if match is not None:
        compile_glob(match)
    cursor, keys = await c.kv.scan(cursor, count, match)
    return encode([str(cursor).encode(), keys if only_strings else []], c.resp3)


async def _flush(c: RespConnection, args: list[bytes]) -> bytes:
    if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"ASYNC", b"SYNC")):
        raise CommandError(_SYNTAX)
    if not c.server.config.allow_flush:
        raise CommandError(
            f"ERR {args[0].decode('utf-8', 'replace').upper()} is disabled on this server "
            "(RespConfig.allow_flush)"
        )
    await c.kv.flush()
    streams = c.server.apps.get("streams")
    if streams is not None:  # the streams keyspace too (docs/streams.md)
        await streams.flush()
    return OK


@command(
    "flushdb",
    -1,
    "write",
    acl="@keyspace @write @slow @dangerous",
    group="server",
    summary="Delete every key of the cluster.",
)
async def cmd_flushdb(c: RespConnection, args: list[bytes]) -> bytes:
    return await _flush(c, args)


@command(
    "flushall",
    -1,
    "write",
    acl="@keyspace @write @slow @dangerous",
    group="server",
    summary="Delete every key of the cluster.",
)
async def cmd_flushall(c: RespConnection, args: list[bytes]) -> bytes:
    return await _flush(c, args)


# -- server ----------------------------------------------------------------


@command(
    "time",
    1,
    "loading stale fast",
    acl="@fast",
    group="server",
    summary="The server's clock: [seconds, microseconds].",
    since="2.6.0",
)
async def cmd_time(c: RespConnection, args: list[bytes]) -> bytes:
    us = int(c.server.clock.time() * 1_000_000)
    return encode([b"%d" % (us // 1_000_000), b"%d" % (us % 1_000_000)], c.resp3)


def _used_memory() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _memory_budget(c: RespConnection) -> MemoryBudget | None:
    """The replica's memory budget when the served store keeps one (KVStore)."""
    budget = getattr(c.kv, "memory", None)
    return budget if isinstance(budget, MemoryBudget) else None


def _human(n: int) -> str:
    for unit, size in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n}B"


async def _info_text(c: RespConnection, sections: set[str]) -> str:
    server = c.server
    stats = server.stats
    everything = not sections or sections & {"all", "default", "everything"}
    lines: list[str] = []

    def want(name: str) -> bool:
        return bool(everything) or name in sections

    if want("server"):
        uptime = int(server.clock.monotonic() - server.started_at)
        lines += [
            "# Server",
            f"redis_version:{REDIS_VERSION}",
            f"peer_ring_version:{peer_ring.__version__}",
            f"peer_ring_build:{build()}",
            "redis_mode:standalone",
            f"os:{platform.system()} {platform.release()} {platform.machine()}",
            "arch_bits:64",
            f"python_version:{platform.python_version()}",
            f"process_id:{os.getpid()}",
            f"run_id:{server.run_id}",
            f"tcp_port:{server.port}",
            f"uptime_in_seconds:{uptime}",
            f"uptime_in_days:{uptime // 86400}",
            "",
        ]
    if want("clients"):
        lines += [
            "# Clients",
            f"connected_clients:{len(server.connections)}",
            f"maxclients:{server.config.max_clients}",
            "blocked_clients:0",
            "",
        ]
    if want("memory"):
        rss = _used_memory()
        budget = _memory_budget(c)
        if budget is None:
            lines += ["# Memory", f"used_memory:{rss}", f"used_memory_rss:{rss}", ""]
        else:
            # used_memory: the data this node holds, as maxmemory counts it
            lines += [
                "# Memory",
                f"used_memory:{budget.used}",
                f"used_memory_human:{_human(budget.used)}",
                f"used_memory_rss:{rss}",
                f"used_memory_rss_human:{_human(rss)}",
                f"used_memory_dataset:{budget.used}",
                f"maxmemory:{budget.maxmemory}",
                f"maxmemory_human:{_human(budget.maxmemory)}",
                f"maxmemory_policy:{budget.policy}",
                f"evicted_keys:{budget.evicted}",
                f"oom_rejections:{budget.oom_rejections}",
                "",
            ]
    if want("stats"):
        lines += [
            "# Stats",
            f"total_connections_received:{stats.connections_received}",
            f"total_commands_processed:{stats.commands_processed}",
            f"rejected_connections:{stats.rejected_connections}",
            f"total_error_replies:{stats.error_replies}",
            f"protocol_errors:{stats.protocol_errors}",
            f"evicted_keys:{(b.evicted if (b := _memory_budget(c)) is not None else 0)}",
            *(f"closed_{why}_clients:{n}" for why, n in server.watchdog.closed.items()),
            "",
        ]
    if want("replication"):
        lines += ["# Replication", "role:master", "connected_slaves:0", ""]
    if want("cluster"):
        lines += ["# Cluster", "cluster_enabled:0", ""]
    if want("keyspace"):
        lines.append("# Keyspace")
        keys = await c.kv.count()
        if keys:
            lines.append(f"db0:keys={keys},expires=0,avg_ttl=0")
        lines.append("")
    return "\r\n".join(lines)


@command(
    "info",
    -1,
    "loading stale",
    acl="@slow @dangerous",
    group="server",
    summary="Server information and statistics.",
)
async def cmd_info(c: RespConnection, args: list[bytes]) -> bytes:
    sections = {a.decode("utf-8", "replace").lower() for a in args[1:]}
    text = await _info_text(c, sections)
    return encode(Verbatim(text.encode()), c.resp3)


def _config_params(c: RespConnection) -> dict[str, str]:
    cfg = c.server.config
    return {
        "save": "",
        "appendonly": "no",
        "databases": "1",
        "maxmemory": str(b.maxmemory if (b := _memory_budget(c)) is not None else 0),
        "maxmemory-policy": b.policy if b is not None else "noeviction",
        "maxclients": str(cfg.max_clients),
        "proto-max-bulk-len": str(c.server.max_bulk),
        "client-query-buffer-limit": str(cfg.max_request_size),
        "timeout": str(int(cfg.timeout)),
        "client-output-buffer-limit": f"normal {cfg.output_buffer_limit} 0 0",
        "port": str(c.server.port),
        "bind": c.server.host,
    }


@command("config", -2, "", acl="@slow", group="server", summary="Read the configuration.")
async def cmd_config(c: RespConnection, args: list[bytes]) -> bytes:
    raise AssertionError("dispatched to subcommands")  # pragma: no cover


@command(
    "get",
    -3,
    "admin noscript loading stale",
    container="config",
    group="server",
    summary="Configuration parameters matching glob patterns.",
    since="2.0.0",
)
async def cmd_config_get(c: RespConnection, args: list[bytes]) -> bytes:
    params = _config_params(c)
    out: dict[str, str] = {}
    for pattern in args[2:]:
        regex = compile_glob(pattern.lower())
        for name, value in params.items():
            if regex.fullmatch(name.encode()):
                out[name] = value
    return encode(out, c.resp3)


@command(
    "set",
    -4,
    "admin noscript loading stale",
    container="config",
    group="server",
    summary="Not supported: configure peer-ring through RespConfig.",
    since="2.0.0",
)
async def cmd_config_set(c: RespConnection, args: list[bytes]) -> bytes:
    raise CommandError("ERR CONFIG SET is not supported; configure peer-ring with RespConfig")


@command(
    "resetstat",
    2,
    "admin noscript loading stale",
    container="config",
    group="server",
    summary="Reset the statistics reported by INFO.",
    since="2.0.0",
)
async def cmd_config_resetstat(c: RespConnection, args: list[bytes]) -> bytes:
    c.server.stats.reset()
    return OK


@command(
    "help",
    2,
    "loading stale",
    container="config",
    group="server",
    summary="Show helpful text about the different subcommands.",
    since="5.0.0",
)
async def cmd_config_help(c: RespConnection, args: list[bytes]) -> bytes:
    return _help(c, "config")


def _help(c: RespConnection, container: str) -> bytes:
    parent = lookup(container.encode())
    assert parent is not None
    lines = [f"{container.upper()} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"]
    for spec in _unique(parent.subcommands.values()):
        lines.append(f"{spec.name.split('|')[1].upper()}")
        lines.append(f"    {spec.summary}")
    return encode([Status(line) for line in lines], c.resp3)


def _unique(specs: object) -> list[CommandSpec]:
    out: dict[str, CommandSpec] = {}
    for spec in specs:  # type: ignore[attr-defined]
        out.setdefault(spec.name, spec)
    return list(out.values())


# -- CLIENT ----------------------------------------------------------------


def _check_client_name(name: bytes) -> None:
    if any(ch <= 32 or ch > 126 for ch in name):
        raise CommandError(
            "ERR Client names cannot contain spaces, newlines or special characters."
        )


@command(
    "client",
    -2,
    "",
    acl="@slow",
    group="connection",
    summary="Inspect and name client connections.",
)
async def cmd_client(c: RespConnection, args: list[bytes]) -> bytes:
    raise AssertionError("dispatched to subcommands")  # pragma: no cover


@command(
    "id",
    2,
    "loading stale",
    container="client",
    group="connection",
    summary="This connection's id.",
    since="5.0.0",
)
async def cmd_client_id(c: RespConnection, args: list[bytes]) -> bytes:
    return integer(c.id)


@command(
    "setname",
    3,
    "loading stale",
    container="client",
    group="connection",
    summary="Name this connection.",
    since="2.6.9",
)
async def cmd_client_setname(c: RespConnection, args: list[bytes]) -> bytes:
    _check_client_name(args[2])
    c.name = args[2]
    return OK


@command(
    "getname",
    2,
    "loading stale",
    container="client",
    group="connection",
    summary="This connection's name (nil if unset).",
    since="2.6.9",
)
async def cmd_client_getname(c: RespConnection, args: list[bytes]) -> bytes:
    return bulk(c.name) if c.name else c.nil


@command(
    "setinfo",
    4,
    "loading stale",
    container="client",
    group="connection",
    summary="Record the client library's name (LIB-NAME) or version (LIB-VER).",
    since="7.2.0",
)
async def cmd_client_setinfo(c: RespConnection, args: list[bytes]) -> bytes:
    attr = args[2].upper()
    if attr not in (b"LIB-NAME", b"LIB-VER"):
        raise CommandError(f"ERR Unrecognized option '{args[2].decode('utf-8', 'replace')}'")
    if any(ch < 32 or ch > 126 or (ch == 32 and attr == b"LIB-NAME") for ch in args[3]):
        raise CommandError(
            f"ERR {attr.decode()} cannot contain spaces, newlines or special characters."
        )
    if attr == b"LIB-NAME":
        c.lib_name = args[3]
    else:
        c.lib_ver = args[3]
    return OK


@command(
    "list",
    -2,
    "admin noscript loading stale",
    container="client",
    group="connection",
    summary="One line per client connection.",
    since="2.4.0",
)
async def cmd_client_list(c: RespConnection, args: list[bytes]) -> bytes:
    text = "".join(conn.info_line() + "\n" for conn in c.server.connections.values())
    return encode(Verbatim(text.encode()), c.resp3)


@command(
    "info",
    2,
    "loading stale",
    container="client",
    group="connection",
    summary="This connection's line of CLIENT LIST.",
    since="6.2.0",
)
async def cmd_client_info(c: RespConnection, args: list[bytes]) -> bytes:
    return encode(Verbatim((c.info_line() + "\n").encode()), c.resp3)


@command(
    "help",
    2,
    "loading stale",
    container="client",
    group="connection",
    summary="Show helpful text about the different subcommands.",
    since="5.0.0",
)
async def cmd_client_help(c: RespConnection, args: list[bytes]) -> bytes:
    return _help(c, "client")


# -- COMMAND ---------------------------------------------------------------


def _spec_info(spec: CommandSpec) -> list[object]:
    subs = [_spec_info(s) for s in _unique(spec.subcommands.values())]
    return [
        spec.name,
        spec.arity,
        RespSet(Status(f) for f in spec.flags),
        spec.first_key,
        spec.last_key,
        spec.step,
        RespSet(Status(a) for a in spec.acl),
        [],
        [],
        subs,
    ]


def _spec_docs(spec: CommandSpec) -> dict[str, object]:
    doc: dict[str, object] = {
        "summary": spec.summary,
        "since": spec.since,
        "group": spec.group,
    }
    if spec.subcommands:
        doc["subcommands"] = {s.name: _spec_docs(s) for s in _unique(spec.subcommands.values())}
    return doc


@command(
    "command",
    -1,
    "loading stale",
    acl="@slow @connection",
    group="server",
    summary="Details about the supported commands.",
    since="2.8.13",
)
async def cmd_command(c: RespConnection, args: list[bytes]) -> bytes:
    if len(args) == 1:
        return encode([_spec_info(s) for s in ALL_SPECS], c.resp3)
    sub = args[1].upper()
    if sub == b"COUNT" and len(args) == 2:
        return integer(len(ALL_SPECS))
    if sub == b"LIST":
        return encode([s.name for s in ALL_SPECS], c.resp3)
    if sub == b"INFO":
        names = args[2:]
        if not names:
            return encode([_spec_info(s) for s in ALL_SPECS], c.resp3)
        infos: list[object] = []
        for name in names:
            spec = _find_spec(name)
            infos.append(None if spec is None else _spec_info(spec))
        return encode(infos, c.resp3)
    if sub == b"DOCS":
        names = args[2:]
        docs: dict[str, object] = {}
        if not names:
            docs = {s.name: _spec_docs(s) for s in ALL_SPECS}
        for name in names:
            spec = _find_spec(name)
            if spec is not None:
                docs[spec.name] = _spec_docs(spec)
        return encode(docs, c.resp3)
    if sub == b"HELP" and len(args) == 2:
        return encode(
            [
                Status(line)
                for line in (
                    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "(no subcommand)",
                    "    Return details about all commands.",
                    "COUNT",
                    "    Return the total number of commands.",
                    "LIST",
                    "    Return a list of all command names.",
                    "INFO [<command-name> ...]",
                    "    Return details about the commands.",
                    "DOCS [<command-name> ...]",
                    "    Return documentation about the commands.",
                )
            ],
            c.resp3,
        )
    if sub in (b"COUNT", b"HELP"):
        raise CommandError(
            f"ERR wrong number of arguments for 'command|{sub.decode().lower()}' command"
        )
    raise CommandError(
        f"ERR unknown subcommand '{args[1].decode('utf-8', 'replace')[:128]}'. Try COMMAND HELP."
    )


def _find_spec(name: bytes) -> CommandSpec | None:
    if b"|" in name:
        top, _, sub = name.partition(b"|")
        parent = lookup(top)
        return None if parent is None else parent.subcommands.get(sub.lower())
    return lookup(name)


# -- rate limiting (redis-cell) ---------------------------------------------------


@command(
    "cl.throttle",
    -5,
    "write fast",
    keys=(1, 1, 1),
    acl="@write @fast",
    group="ratelimit",
    summary="redis-cell's GCRA rate limit: [limited, limit, remaining, retry_after, reset_after].",
    since="1.0.0",
)
async def cmd_cl_throttle(c: RespConnection, args: list[bytes]) -> bytes:
    """``CL.THROTTLE key max_burst count period [quantity]``, decided at the
    key's owner by the cluster's rate limiter (``docs/ratelimit.md``)."""
    if len(args) > 6:
        raise CommandError("ERR wrong number of arguments for 'cl.throttle' command")
    throttler = c.server.config.throttler
    if throttler is None:
        raise CommandError("ERR CL.THROTTLE needs the rate limiter, which this node does not run")
    try:
        key = args[1].decode()
    except UnicodeDecodeError:
        raise CommandError("ERR CL.THROTTLE keys must be UTF-8") from None
    nums = [parse_int(a) for a in args[2:]]
    max_burst, count, period = nums[0], nums[1], nums[2]
    quantity = nums[3] if len(nums) == 4 else 1
    if count <= 0 or period <= 0:
        raise CommandError("ERR count and period must be positive (zero rates are not supported)")
    if max_burst < 0:
        raise CommandError("ERR max_burst must not be negative")
    reply = await throttler.throttle(key, max_burst, count, period, quantity)
    return encode(list(reply), c.resp3)


# -- ACL -------------------------------------------------------------------


@command("acl", -2, "", acl="@slow", group="server", summary="Users and their permissions.")
async def cmd_acl(c: RespConnection, args: list[bytes]) -> bytes:
    raise AssertionError("dispatched to subcommands")  # pragma: no cover


@command("whoami", 2, "noscript loading stale", container="acl", group="server",
         summary="The user this connection is authenticated as.", since="6.0.0")  # fmt: skip
async def cmd_acl_whoami(c: RespConnection, args: list[bytes]) -> bytes:
    return bulk(c.user.encode())


@command("list", 2, "admin noscript loading stale", container="acl", group="server",
         summary="Every user as ACL rules (password hashes, never passwords).",
         since="6.0.0")  # fmt: skip
async def cmd_acl_list(c: RespConnection, args: list[bytes]) -> bytes:
    users = c.server.acl.users
    return encode([users[n].describe().encode() for n in sorted(users)], c.resp3)


@command("users", 2, "admin noscript loading stale", container="acl", group="server",
         summary="The user names.", since="6.0.0")  # fmt: skip
async def cmd_acl_users(c: RespConnection, args: list[bytes]) -> bytes:
    return encode([n.encode() for n in sorted(c.server.acl.users)], c.resp3)


@command("setuser", -3, "admin noscript loading stale", container="acl", group="server",
         summary="Create or change a user with ACL rules (on, >password, +@read...).",
         since="6.0.0")  # fmt: skip
async def cmd_acl_setuser(c: RespConnection, args: list[bytes]) -> bytes:
    name = args[2].decode("utf-8", "replace")
    try:
        c.server.acl.setuser(name, [a.decode("utf-8", "replace") for a in args[3:]])
    except ConfigError as exc:
        raise CommandError(f"ERR Error in ACL SETUSER modifier: {exc}") from exc
    return OK


@command("deluser", -3, "admin noscript loading stale", container="acl", group="server",
         summary="Delete users (not the default user).", since="6.0.0")  # fmt: skip
async def cmd_acl_deluser(c: RespConnection, args: list[bytes]) -> bytes:
    users = c.server.acl.users
    names = [a.decode("utf-8", "replace") for a in args[2:]]
    if "default" in names:
        raise CommandError("ERR The 'default' user cannot be removed")
    return integer(sum(users.pop(n, None) is not None for n in names))


@command("kill", -3, "admin noscript loading stale", container="client", group="connection",
         summary="Close connections: CLIENT KILL ID id | ADDR ip:port | USER name.",
         since="2.4.0")  # fmt: skip
async def cmd_client_kill(c: RespConnection, args: list[bytes]) -> bytes:
    if len(args) % 2 != 0:
        raise CommandError(_SYNTAX)
    filters = {args[i].upper(): args[i + 1].decode("utf-8", "replace")
               for i in range(2, len(args), 2)}  # fmt: skip
    if not filters.keys() <= {b"ID", b"ADDR", b"USER"}:
        raise CommandError(_SYNTAX)
    killed = 0
    for conn in list(c.server.connections.values()):
        if (
            (b"ID" in filters and str(conn.id) != filters[b"ID"])
            or (b"ADDR" in filters and conn.addr != filters[b"ADDR"])
            or (b"USER" in filters and conn.user != filters[b"USER"])
        ):
            continue
        killed += 1
        if conn is c:
            c.quit = True  # after this reply, as Redis does
        elif conn.transport is not None:
            conn.transport.close()
    if not killed and b"ID" in filters and len(filters) == 1:
        raise CommandError("ERR No such client")
    return integer(killed)
