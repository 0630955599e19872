"""Users of the RESP server: ``AUTH username password`` and what each may run.

A user has SHA-256 hashes of its passwords (never the passwords; Redis's
ACL format ``#<hex>``, so a users file can be shared with redis-server), an
on/off switch, and permissions among three levels:

* ``read`` -- commands flagged ``readonly`` (GET, MGET, EXISTS, TTL, SCAN...);
* ``write`` -- commands flagged ``write`` (SET, DEL, EXPIRE, INCR...), except
  the admin ones below;
* ``admin`` -- FLUSHALL/FLUSHDB, CONFIG, CLIENT KILL/LIST, ACL SETUSER/
  DELUSER/LIST/USERS/GETUSER, and anything flagged ``admin``.

Connection and server-information commands (PING, HELLO, QUIT, INFO, ACL
WHOAMI, CLIENT SETNAME...) are open to every authenticated user.

Pub/sub (Redis has a separate ``@pubsub`` category and, since 7.0, no
channel access for new users): ``PUBLISH``/``SPUBLISH`` deliver data to
other clients, so they need ``write``; ``(P|S)SUBSCRIBE`` and the
``PUBSUB`` introspection read data, so they need ``read``; the
unsubscribe commands stay open, so any user can always leave.

Rules (``ACL SETUSER`` and the users file, a subset of Redis's): ``on``,
``off``, ``>password``, ``<password`` (remove), ``#<sha256 hex>``,
``nopass``, ``resetpass``, ``+@read``, ``+@write``, ``+@admin``, ``+@all``
(``allcommands``), ``-@...``, ``reset``. A users file has one
``user <name> <rule> ...`` per line (``#`` comments and blank lines ignored).

The ``default`` user is the ``requirepass`` of Redis: with a password it
needs ``AUTH``; without one (and no users file) every connection starts
authenticated with every permission, as before. Unsalted SHA-256 is Redis's
choice for fast per-connection checks; use long random passwords.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from peer_ring.errors import ConfigError
from peer_ring.server.resp._table import CommandError, CommandSpec

if TYPE_CHECKING:
    from peer_ring.server.resp._config import RespConfig

__all__ = ["ALL", "Acl", "User", "hash_password", "needed"]

LEVELS = ("read", "write", "admin")
ALL = frozenset(LEVELS)

_ADMIN_COMMANDS = frozenset(
    {"flushall", "flushdb", "client|kill", "client|list", "acl|setuser", "acl|deluser",
     "acl|list", "acl|users", "acl|getuser", "debug", "shutdown"}
)  # fmt: skip


def hash_password(password: str | bytes) -> str:
    raw = password.encode() if isinstance(password, str) else password
    return hashlib.sha256(raw).hexdigest()


_PUBSUB_WRITE = frozenset({"publish", "spublish"})
_PUBSUB_READ = frozenset({"subscribe", "psubscribe", "ssubscribe"})


def needed(spec: CommandSpec) -> str | None:
    """The permission level ``spec`` needs (None: any authenticated user)."""
    name = spec.name
    if name in _ADMIN_COMMANDS or "admin" in spec.flags:
        return "admin"
    if name in _PUBSUB_WRITE:
        return "write"
    if name in _PUBSUB_READ or name.startswith("pubsub|"):
        return "read"
    if "write" in spec.flags:
        return "write"
    if "readonly" in spec.flags:
        return "read"
    return None


@dataclass
class User:
    name: str
    enabled: bool = True
    hashes: set[str] = field(default_factory=set)
    nopass: bool = False
    perms: set[str] = field(default_factory=set)

    def apply(self, rule: str) -> None:
        """Apply one ACL rule (see the module docstring); ConfigError if unknown."""
        low = rule.lower()
        if low == "on":
            self.enabled = True
        elif low == "off":
            self.enabled = False
        elif rule.startswith(">"):
            self.hashes.add(hash_password(rule[1:]))
            self.nopass = False
        elif rule.startswith("<"):
            self.hashes.discard(hash_password(rule[1:]))
        elif rule.startswith("#"):
            digest = rule[1:].lower()
            if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
                raise ConfigError(f"ACL rule {rule!r}: a password hash is 64 hex digits")
            self.hashes.add(digest)
            self.nopass = False
        elif low == "nopass":
            self.nopass = True
            self.hashes.clear()
        elif low == "resetpass":
            self.nopass = False
            self.hashes.clear()
        elif low in ("allcommands", "+@all"):
            self.perms = set(LEVELS)
        elif low in ("nocommands", "-@all"):
            self.perms.clear()
        elif low in ("+@read", "+@write", "+@admin"):
            self.perms.add(low[2:])
        elif low in ("-@read", "-@write", "-@admin"):
            self.perms.discard(low[2:])
        elif low == "reset":
            self.enabled, self.nopass = False, False
            self.hashes.clear()
            self.perms.clear()
        elif low in ("~*", "allkeys", "&*", "allchannels", "resetkeys"):
            pass  # every user sees every key: key patterns are not supported
        else:
            raise ConfigError(f"unknown or unsupported ACL rule {rule!r}")

    def check_password(self, password: bytes) -> bool:
        if not self.enabled:
            return False
        if self.nopass:
            return True
        digest = hash_password(password)
        return any(hmac.compare_digest(digest, h) for h in self.hashes)

    def describe(self) -> str:
        """The user as ``ACL LIST`` shows it (hashes, never passwords)."""
        parts = ["user", self.name, "on" if self.enabled else "off"]
        parts += ["nopass"] if self.nopass else [f"#{h}" for h in sorted(self.hashes)]
        parts.append("~*")
        if self.perms >= ALL:
            parts.append("+@all")
        else:
            parts += [f"+@{p}" for p in LEVELS if p in self.perms] or ["-@all"]
        return " ".join(parts)


class Acl:
    """The users of one server (see the module docstring)."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}

    @classmethod
    def from_config(cls, config: RespConfig) -> Acl:
        acl = cls()
        default = User("default", perms=set(LEVELS))
        if config.requirepass is None:
            default.nopass = True
        else:
            default.hashes.add(hash_password(config.requirepass))
        acl.users["default"] = default
        if config.users_file is not None:
            acl.load(config.users_file)
        return acl

    @property
    def open(self) -> bool:
        """New connections start authenticated as ``default`` (nopass, all perms)."""
        d = self.users.get("default")
        return d is not None and d.enabled and d.nopass and d.perms >= ALL

    def load(self, path: str | Path) -> None:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read the users file {path}: {exc}") from exc
        for n, line in enumerate(lines, 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if words[0] != "user" or len(words) < 2:
                raise ConfigError(f"{path}:{n}: expected 'user <name> <rules...>'")
            try:
                self.setuser(words[1], words[2:])
            except ConfigError as exc:
                raise ConfigError(f"{path}:{n}: {exc}") from exc

    def setuser(self, name: str, rules: list[str]) -> User:
        user = self.users.get(name) or User(name, enabled=False)
        staged = User(user.name, user.enabled, set(user.hashes), user.nopass, set(user.perms))
        for rule in rules:
            staged.apply(rule)  # all or nothing, as in Redis
        self.users[name] = staged
        return staged

    def authenticate(self, name: str, password: bytes) -> User | None:
        user = self.users.get(name)
        if user is None:
            hash_password(password)  # same work for unknown users
            return None
        return user if user.check_password(password) else None

    @staticmethod
    def check(user: str, perms: frozenset[str], spec: CommandSpec) -> None:
        """Raise NOPERM unless ``perms`` allow ``spec`` (Redis's error text)."""
        level = needed(spec)
        if level is not None and level not in perms:
            raise CommandError(
                f"NOPERM User {user} has no permissions to run the '{spec.name}' command"
            )
