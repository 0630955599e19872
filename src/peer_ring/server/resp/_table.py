"""The data-driven command table: name -> handler, arity, flags, docs.

Every command the server understands is one :class:`CommandSpec` registered
with :func:`command`; dispatch, arity checks, the auth gate and the replies of
COMMAND / COMMAND INFO / COMMAND DOCS / COMMAND COUNT all read this table, so
adding a command here is the whole job.

A command has a coroutine :data:`Handler` and may have a callback form, a
:data:`Starter`, which the server tries first: it runs the command without a
task (see the module docstring of ``_server``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COMMANDS", "CommandError", "CommandSpec", "Handler", "Starter", "command", "lookup"]

#: A handler gets the connection and the full argument list (``args[0]`` is
#: the command name as sent) and returns the encoded reply. It runs in the
#: connection's worker task; it must not block the event loop. The connection
#: is typed ``Any`` here (each handler in ``_commands`` names it
#: ``RespConnection``): the table sits below the server, and naming the
#: server's class would be an import cycle.
Handler = Callable[[Any, list[bytes]], Awaitable[bytes]]

#: A command's callback form: gets the same arguments as its handler and
#: either returns False having done nothing (the handler runs instead) or
#: starts the command and returns True, having handed the completion of the
#: connection (``complete(reply)``, ``reply_bulk``, ``reply_ok``) to whoever
#: finishes it -- called exactly once, on the event loop, possibly before
#: the starter returns. It runs in whatever called the connection (a
#: ``data_received``, the previous command's completion): it must not block
#: and must not raise once it has handed the completion over.
Starter = Callable[[Any, list[bytes]], bool]


class CommandError(Exception):
    """Raised by a handler to answer with an error reply (``-<message>``).

    ``message`` starts with the error code, e.g. ``ERR syntax error``. The
    connection stays usable. Not a :class:`peer_ring.errors.PeerRingError`:
    it never leaves the RESP server.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(eq=False, slots=True)
class CommandSpec:
    """One command (or subcommand, named ``container|sub``).

    ``arity`` counts the command name: ``n`` means exactly ``n`` arguments,
    ``-n`` at least ``n`` (Redis's convention). ``flags`` use Redis's names
    (``readonly``, ``write``, ``fast``, ``no_auth``, ...); ``no_auth``
    commands run before AUTH, ``no_multi`` ones cannot be queued in MULTI.
    ``first_key``/``last_key``/``step`` locate the key arguments (1-based,
    ``last_key`` -1 = the last argument; all 0 for keyless commands).
    ``start`` is the optional callback form (:data:`Starter`).
    ``group_arity``: requests of exactly this many arguments (the key at
    ``args[1]``) may join a group of a pipeline (0: never); the starter then
    adds them to the connection's ``group`` batch.
    """

    name: str
    handler: Handler
    arity: int
    flags: frozenset[str]
    first_key: int = 0
    last_key: int = 0
    step: int = 0
    acl: frozenset[str] = frozenset()
    group: str = "generic"
    summary: str = ""
    since: str = "1.0.0"
    index: int = 0
    subcommands: dict[bytes, CommandSpec] = field(default_factory=dict)
    start: Starter | None = None
    group_arity: int = 0

    @property
    def no_auth(self) -> bool:
        return "no_auth" in self.flags


#: Lowercase *and* uppercase names -> spec, so the common spellings are found
#: with a single dict lookup.
COMMANDS: dict[bytes, CommandSpec] = {}
#: Every top-level spec once, in registration order.
ALL_SPECS: list[CommandSpec] = []


def command(
    name: str,
    arity: int,
    flags: str = "",
    *,
    keys: tuple[int, int, int] = (0, 0, 0),
    acl: str = "",
    group: str = "generic",
    summary: str = "",
    since: str = "1.0.0",
    container: str | None = None,
    start: Starter | None = None,
    group_arity: int = 0,
) -> Callable[[Handler], Handler]:
    """Register the decorated handler as ``name`` (under ``container`` if
    given), with ``start`` as its callback form if given."""

    def register(handler: Handler) -> Handler:
        full = f"{container}|{name}" if container else name
        spec = CommandSpec(
            name=full,
            handler=handler,
            arity=arity,
            flags=frozenset(flags.split()),
            first_key=keys[0],
            last_key=keys[1],
            step=keys[2],
            acl=frozenset(acl.split()),
            group=group,
            summary=summary,
            since=since,
            start=start,
            group_arity=group_arity,
        )
        if container is not None:
            parent = COMMANDS[container.encode()]
            parent.subcommands[name.encode()] = spec
            parent.subcommands[name.upper().encode()] = spec
        else:
            spec.index = len(ALL_SPECS)
            ALL_SPECS.append(spec)
            COMMANDS[name.encode()] = spec
            COMMANDS[name.upper().encode()] = spec
        return handler

    return register


def lookup(name: bytes) -> CommandSpec | None:
    """The spec for a command name in any letter case, or None."""
    spec = COMMANDS.get(name)
    if spec is None:
        spec = COMMANDS.get(name.lower())
    return spec
