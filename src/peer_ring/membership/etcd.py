"""etcd discovery: a lease-bound key per node, a prefix listing and a watch.

Every node writes its registration record under ``PREFIX/members/ID``,
attached to a lease of ``lease_ttl`` seconds that it keeps alive every
``lease_ttl / 3``. A node that dies stops its keep-alive, the lease expires
and etcd deletes the key: every watcher sees a DELETE and drops the member.

Protocol of one *session* (one connection to one etcd endpoint):

1. register: grant a lease if we hold none (or it expired), ``put`` our
   record with it;
2. list: ``get`` the prefix; the response header's revision ``R`` is the
   snapshot the view is built from;
3. watch the prefix from ``R + 1`` -- no event between the listing and the
   watch is lost, none is seen twice;
4. keep the lease alive; a keep-alive answer with TTL 0 means the lease is
   gone (expired while we were cut off, or the registry lost its state):
   grant a new one and re-register. A DELETE of our own key re-registers too.

Invariants:

* While etcd cannot be reached the last published view stays as it is -- the
  backend never publishes an empty view because the *registry* failed -- and
  the session is retried with capped exponential backoff (with jitter),
  rotating over the configured endpoints.
* After a reconnect, members missing from the fresh listing but present in
  the last view are kept for one ``lease_ttl``: they are given the time to
  re-register (the registry may have lost its state) before they leave the
  ring, so an etcd restart does not reshuffle partitions.
* Records that do not decode, or carry another major format version
  (``"v"``), are skipped with a warning and counted in :attr:`skipped`.
* :meth:`EtcdDiscovery.start` returns once the local member has seen its own
  record and the initial member set; otherwise it raises
  :class:`~peer_ring.errors.DiscoveryError` after ``start_timeout``.

The record codec (:func:`encode_record`, :func:`decode_record`) is shared
with the ZooKeeper backend. Design background: DeCandia et al., "Dynamo:
Amazon's Highly Available Key-value Store" (SOSP 2007), section 4.8 --
membership from an external, explicitly administered source; etcd's lease
and watch semantics from the etcd v3 API documentation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from peer_ring.clock import Clock, SystemClock
from peer_ring.errors import ConfigError, DiscoveryError
from peer_ring.membership._registry import (
    Backoff,
    RecordError,
    bounded,
    cancel_and_wait,
    decode_record,
    encode_record,
    unwrap_group,
)
from peer_ring.membership.base import Discovery, Member

__all__ = [
    "EtcdConfig",
    "EtcdDiscovery",
]

log = logging.getLogger(__name__)


def _parse_endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"etcd endpoint {url!r}: use http:// or https://")
    if not parts.hostname or parts.port is None:
        raise ConfigError(f"etcd endpoint {url!r} is not http(s)://HOST:PORT")
    return parts.hostname, parts.port


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    """Settings of the etcd backend (``--discovery etcd``).

    Durations are float seconds unless stated otherwise.
    """

    #: etcd client URLs, ``http://HOST:PORT`` (``--etcd``, comma separated). The
    #: backend talks to one at a time and moves to the next on failure.
    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    #: Key prefix of this cluster (``--etcd-prefix``); members live under
    #: ``PREFIX/members/``. Two clusters sharing an etcd need distinct prefixes.
    prefix: str = "/peer-ring/default"
    #: Lease time-to-live in whole seconds (etcd's unit). A crashed node leaves
    #: every view within about this long; keep-alives go every ``lease_ttl/3``.
    #: Lower means faster removal and more keep-alive traffic.
    lease_ttl: int = 10
    #: How long :meth:`EtcdDiscovery.start` may take before it fails with
    #: DiscoveryError (registry unreachable, or our record never seen).
    start_timeout: float = 30.0
    #: Deadline of each etcd request (get, put, lease grant, keep-alive).
    request_timeout: float = 5.0
    #: First retry delay after a failed session; doubles up to ``retry_max``.
    retry_initial: float = 0.2
    #: Upper bound of the retry delay.
    retry_max: float = 5.0
    #: TLS (``https://`` endpoints): the CA that signed etcd's certificate
    #: (``--etcd-ca``), and this node's client certificate and key when etcd
    #: runs with ``--client-cert-auth`` (``--etcd-cert``/``--etcd-key``).
    ca_file: str | None = None
    #: This node's client certificate for etcd (``--etcd-cert``, PEM), with ``key_file``.
    cert_file: str | None = None
    #: The private key of ``cert_file`` (``--etcd-key``).
    key_file: str | None = None
    #: etcd authentication (``--etcd-user``, password from ``--etcd-password-file``).
    username: str | None = None
    #: The etcd user's password (read from ``--etcd-password-file``; never a flag).
    password: str | None = None

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ConfigError("etcd: at least one endpoint is required")
        for url in self.endpoints:
            _parse_endpoint(url)
        if not self.prefix.startswith("/") or self.prefix.rstrip("/") == "":
            raise ConfigError(f"etcd prefix {self.prefix!r} must be a non-root absolute path")
        if self.lease_ttl < 2:
            raise ConfigError(f"etcd lease_ttl must be >= 2 seconds, got {self.lease_ttl}")
        for name in ("start_timeout", "request_timeout", "retry_initial", "retry_max"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"etcd {name} must be > 0")
        if self.retry_max < self.retry_initial:
            raise ConfigError("etcd retry_max must be >= retry_initial")
        https = {urlsplit(u if "://" in u else f"http://{u}").scheme == "https"
                 for u in self.endpoints}  # fmt: skip
        if len(https) != 1:
            raise ConfigError("etcd endpoints must be all http:// or all https://")
        if True in https and self.ca_file is None:
            raise ConfigError(
                "https:// etcd endpoints need --etcd-ca (the CA of etcd's certificate)"
            )
        if (self.username is None) != (self.password is None):
            raise ConfigError("etcd authentication needs both a user and a password")

    @classmethod
    def from_options(cls, etcd: str, prefix: str | None = None, **kwargs: Any) -> EtcdConfig:
        """Build from the CLI form ``http://HOST:PORT[,...]``."""
        endpoints = tuple(u.strip() for u in etcd.split(",") if u.strip())
        if prefix is not None:
            kwargs["prefix"] = prefix
        return cls(endpoints=endpoints, **kwargs)

    @property
    def members_prefix(self) -> bytes:
        return (self.prefix.rstrip("/") + "/members/").encode()


class _LeaseLost(Exception):
    """Internal: the lease expired; re-register."""


class EtcdDiscovery(Discovery):
    """Discovery through an etcd v3 cluster (lease + keep-alive + prefix watch)."""

    name = "etcd"

    def __init__(self, config: EtcdConfig | None = None, *, clock: Clock | None = None) -> None:
        super().__init__()
        self.config = config or EtcdConfig()
        self._clock: Clock = clock or SystemClock()
        self._local: Member | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._lease_id: int | None = None
        self._client: Any = None
        self._endpoint_index = 0
        self._records: dict[bytes, Member] = {}
        self._carried: dict[str, tuple[Member, float]] = {}
        self._register_lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._stopped = False
        self._sessions = 0
        #: Registry entries skipped because they were malformed or incompatible.
        self.skipped = 0
        #: Times the local record was written again after a lease loss or deletion.
        self.reregistrations = 0
        #: The last error that interrupted a session (None while healthy).
        self.last_error: BaseException | None = None

    # -- public ---------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once the local member has seen itself and the initial member set."""
        return self._ready.is_set()

    async def start(self, local: Member) -> None:
        try:
            import aetcd  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DiscoveryError(
                "etcd discovery needs aetcd: pip install 'peer-ring[etcd]'"
            ) from exc
        if self._task is not None:
            raise DiscoveryError("etcd discovery already started")
        self._local = local
        self._task = asyncio.create_task(self._run(), name=f"etcd-discovery-{local.id}")
        ready = asyncio.create_task(self._ready.wait())
        try:
            await asyncio.wait(
                {ready, self._task},
                timeout=self.config.start_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ready.cancel()
        if not self._ready.is_set():
            error = self.last_error
            await self.stop()
            why = repr(error) if error is not None else "local record never seen"
            raise DiscoveryError(
                f"etcd discovery did not become ready within {self.config.start_timeout}s "
                f"(endpoints {', '.join(self.config.endpoints)}): {why}"
            ) from error

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._task is not None:
            await cancel_and_wait(self._task)
        client, lease_id = self._client, self._lease_id
        if client is not None and lease_id is not None:
            # Graceful leave: revoking the lease deletes our key at once.
            try:
                await bounded(client.revoke_lease(lease_id), self.config.request_timeout)
            except Exception as exc:
                log.info("etcd: could not revoke lease on stop (%r); it will expire", exc)
        await self._close_client()
        self._publisher.close()

    async def abandon(self) -> None:
        """Stop without deregistering (as if the process died): for tests and fencing."""
        self._stopped = True
        if self._task is not None:
            await cancel_and_wait(self._task)
        await self._close_client()
        self._publisher.close()

    def update_local(self, local: Member) -> None:
        """Called when the local record changes; it is re-written on the event loop."""
        self._local = local
        self._dirty.set()

    # -- session loop ---------------------------------------------------------
    def _new_client(self) -> Any:
        import aetcd

        url = self.config.endpoints[self._endpoint_index % len(self.config.endpoints)]
        host, port = _parse_endpoint(url)
        cfg = self.config
        if url.startswith("https://"):
            from peer_ring.membership._etcd_tls import TlsEtcdClient

            return TlsEtcdClient(
                host, port, ca=cfg.ca_file, cert=cfg.cert_file, key=cfg.key_file,
                username=cfg.username, password=cfg.password,
            )  # fmt: skip
        return aetcd.Client(host=host, port=port, username=cfg.username, password=cfg.password)

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await bounded(client.close(), self.config.request_timeout)
            except Exception as exc:  # closing a dead channel may fail; nothing to do
                log.debug("etcd: close failed: %r", exc)

    async def _run(self) -> None:
        backoff = Backoff(self.config.retry_initial, self.config.retry_max)
        while True:
            self._client = self._new_client()
            try:
                await self._session(self._client, backoff)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = unwrap_group(exc)
                self.last_error = error
                delay = backoff.next()
                log.warning(
                    "etcd discovery: session with %s failed (%r); keeping last view of %d "
                    "members, retrying in %.2fs",
                    self.config.endpoints[self._endpoint_index % len(self.config.endpoints)],
                    error,
                    len(self._publisher.view),
                    delay,
                )
                self._endpoint_index += 1
                await self._close_client()
                await self._clock.sleep(delay)

    async def _call(self, coro: Any) -> Any:
        return await bounded(coro, self.config.request_timeout)

    async def _register(self, client: Any, *, reason: str | None = None) -> None:
        """Ensure a live lease; write the local record when needed.

        The record is written when the lease is new (first registration or
        lease loss), when ``reason`` is given, or when :meth:`update_local`
        marked it dirty. A plain keep-alive writes nothing, so idle clusters
        produce no watch events.
        """
        assert self._local is not None
        async with self._register_lock:
            write = reason is not None or self._dirty.is_set()
            if self._lease_id is not None:
                reply = await self._call(client.refresh_lease(self._lease_id))
                if reply is None or reply.TTL <= 0:
                    log.warning("etcd discovery: lease %x expired; re-registering", self._lease_id)
                    self._lease_id = None
                    reason = reason or "lease expired"
            if self._lease_id is None:
                lease = await self._call(client.lease(self.config.lease_ttl))
                self._lease_id = lease.id
                write = True
            if not write:
                return
            self._dirty.clear()
            await self._call(
                client.put(self._own_key(), encode_record(self._local), lease=self._lease_id)
            )
            if reason is not None and reason != "record updated":
                self.reregistrations += 1
                log.info("etcd discovery: re-registered %s (%s)", self._local.id, reason)

    def _own_key(self) -> bytes:
        assert self._local is not None
        return self.config.members_prefix + self._local.id.encode()

    async def _session(self, client: Any, backoff: Backoff) -> None:
        prefix = self.config.members_prefix
        first = self._sessions == 0
        self._sessions += 1
        # Always write the record at the start of a session: the registry may
        # have lost it while we were away even though the lease survived.
        await self._register(client, reason=None if first else "reconnected")
        listing = await self._call(client.get_prefix(prefix))
        revision = listing.header.revision
        records: dict[bytes, Member] = {}
        for kv in listing:
            member = self._decode(kv.key, kv.value)
            if member is not None:
                records[kv.key] = member
        if not first:
            self._carry_missing(records)
        self._records = records
        watch = await self._call(client.watch_prefix(prefix, start_revision=revision + 1))
        self._publish()
        backoff.reset()
        self.last_error = None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._keepalive(client))
            tg.create_task(self._follow(client, watch))

    async def _keepalive(self, client: Any) -> None:
        interval = self.config.lease_ttl / 3
        while True:
            dirty = asyncio.create_task(self._dirty.wait())
            sleep = asyncio.create_task(self._clock.sleep(interval))
            try:
                await asyncio.wait({dirty, sleep}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                dirty.cancel()
                sleep.cancel()
            await self._register(client, reason="record updated" if self._dirty.is_set() else None)
            if self._prune_carried():
                self._publish()

    async def _follow(self, client: Any, watch: Any) -> None:
        own_key = self._own_key()
        async for event in watch:
            key: bytes = event.kv.key
            if event.kind == "DELETE":
                self._records.pop(key, None)
                if key == own_key and not self._stopped:
                    await self._register(client, reason="own key deleted")
            else:
                member = self._decode(key, event.kv.value)
                if member is None:
                    self._records.pop(key, None)
                else:
                    self._records[key] = member
                    self._carried.pop(member.id, None)
            self._publish()
        raise ConnectionError("etcd watch stream ended")

    # -- view -----------------------------------------------------------------
    def _decode(self, key: bytes, value: bytes) -> Member | None:
        try:
            return decode_record(value)
        except RecordError as exc:
            self.skipped += 1
            log.warning("etcd discovery: skipping entry %r: %s", key, exc)
            return None

    def _carry_missing(self, records: Mapping[bytes, Member]) -> None:
        listed = {m.id for m in records.values()}
        until = self._clock.monotonic() + self.config.lease_ttl
        for member_id, member in self._publisher.view.items():
            if member_id not in listed and member_id not in self._carried:
                self._carried[member_id] = (member, until)

    def _prune_carried(self) -> bool:
        now = self._clock.monotonic()
        expired = [k for k, (_, until) in self._carried.items() if until <= now]
        for k in expired:
            del self._carried[k]
        return bool(expired)

    def _publish(self) -> None:
        assert self._local is not None
        view: dict[str, Member] = {m.id: m for m, _ in self._carried.values()}
        for member in self._records.values():
            old = view.get(member.id)
            if old is None or member.incarnation >= old.incarnation:
                view[member.id] = member
        self._publisher.publish(view.values())
        if self._local.id in view:
            self._ready.set()
