"""ZooKeeper discovery: one ephemeral znode per node plus children/data watches.

Every node creates ``PATH/members/ID`` as an *ephemeral* znode holding its
registration record (the format shared with etcd, see
:func:`peer_ring.membership.etcd.encode_record`). ZooKeeper deletes the
znode when the node's session ends: at once on a graceful close, after the
session timeout when the node crashes or is cut off.

Protocol:

* After every (re)connection -- kazoo state ``CONNECTED`` -- the backend
  makes sure its znode exists and belongs to its *current* session, then
  rescans: ``get_children`` with a children watch and ``get`` of each child
  with a data watch. Any watch firing triggers another rescan. (kazoo drops
  watchers on connection loss, so the rescan after reconnecting re-arms them.)
* Session expiry (``LOST``): kazoo opens a new session; the ephemeral znode
  of the old one is gone, so the node re-creates it (re-registration).
* Connection loss (``SUSPENDED``): the session may still be alive; nothing is
  published, the last view stays, kazoo reconnects with backoff.
* A znode with our id owned by another session is an older life of this
  node (or a duplicate): it is replaced when its incarnation is not newer than
  ours; otherwise registration fails with
  :class:`~peer_ring.errors.DiscoveryError` (retried, and reported by
  :meth:`ZooKeeperDiscovery.start`).

Invariants:

* The published view is never emptied because ZooKeeper is unreachable.
* Malformed children and records of another major format version are
  skipped with a warning and counted in :attr:`ZooKeeperDiscovery.skipped`.
* kazoo calls back from its own thread; those callbacks only hand an event
  over to the event loop (``call_soon_threadsafe``) and never block.
* :meth:`ZooKeeperDiscovery.start` returns once the node's own znode is in
  the view, or raises DiscoveryError after ``start_timeout``.

Each rescan reads every child (O(n) reads per change): fine for clusters of
up to a few hundred nodes, which is what a Dynamo ring holds (DeCandia et al.,
"Dynamo", SOSP 2007). ZooKeeper semantics: Hunt et al., "ZooKeeper: Wait-free
coordination for Internet-scale systems" (USENIX ATC 2010).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peer_ring.clock import Clock, SystemClock
from peer_ring.errors import ConfigError, DiscoveryError
from peer_ring.membership._registry import (
    Backoff,
    RecordError,
    cancel_and_wait,
    decode_record,
    encode_record,
)
from peer_ring.membership.base import Discovery, Member, parse_address

__all__ = ["ZooKeeperConfig", "ZooKeeperDiscovery"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ZooKeeperConfig:
    """Settings of the ZooKeeper backend (``--discovery zookeeper``).

    Durations are float seconds.
    """

    #: ZooKeeper servers ``HOST:PORT`` (``--zookeeper``, comma separated).
    hosts: tuple[str, ...] = ("127.0.0.1:2181",)
    #: Base znode of this cluster (``--zk-path``); members live under
    #: ``PATH/members/``. Two clusters sharing an ensemble need distinct paths.
    path: str = "/peer-ring/default"
    #: Session timeout requested from ZooKeeper. A crashed or cut-off node
    #: leaves every view about this long after its last heartbeat. The server
    #: clamps it to [2, 20] x its tickTime.
    session_timeout: float = 10.0
    #: How long :meth:`ZooKeeperDiscovery.start` may take before it fails
    #: with DiscoveryError.
    start_timeout: float = 30.0
    #: Deadline of each ZooKeeper request (create, get, get_children).
    request_timeout: float = 5.0
    #: First delay between reconnection attempts / failed rescans; doubles up
    #: to ``retry_max``.
    retry_initial: float = 0.2
    #: Upper bound of the retry delay.
    retry_max: float = 5.0
    #: TLS to ZooKeeper's ``secureClientPort`` (``--zk-ca``, and
    #: ``--zk-cert``/``--zk-key`` when it requires client certificates).
    ca_file: str | None = None
    #: This node's client certificate for ZooKeeper (``--zk-cert``, PEM).
    cert_file: str | None = None
    #: The private key of ``cert_file`` (``--zk-key``).
    key_file: str | None = None
    #: ``user:password`` for digest authentication (``--zk-digest-file``); the
    #: znodes this node creates then carry an ACL granting only that identity.
    digest: str | None = None

    def __post_init__(self) -> None:
        if not self.hosts:
            raise ConfigError("zookeeper: at least one HOST:PORT is required")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("zookeeper TLS: a client certificate needs its key")
        if self.cert_file is not None and self.ca_file is None:
            raise ConfigError("zookeeper TLS needs --zk-ca")
        if self.digest is not None and ":" not in self.digest:
            raise ConfigError("zookeeper digest auth needs user:password")
        for host in self.hosts:
            parse_address(host)
        if not self.path.startswith("/") or self.path.rstrip("/") == "" or "//" in self.path:
            raise ConfigError(f"zookeeper path {self.path!r} must be a non-root absolute path")
        if self.session_timeout < 1.0:
            raise ConfigError("zookeeper session_timeout must be >= 1 second")
        for name in ("start_timeout", "request_timeout", "retry_initial", "retry_max"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"zookeeper {name} must be > 0")
        if self.retry_max < self.retry_initial:
            raise ConfigError("zookeeper retry_max must be >= retry_initial")

    @classmethod
    def from_options(
        cls, zookeeper: str, path: str | None = None, **kwargs: Any
    ) -> ZooKeeperConfig:
        """Build from the CLI form ``HOST:PORT[,...]``."""
        hosts = tuple(h.strip() for h in zookeeper.split(",") if h.strip())
        if path is not None:
            kwargs["path"] = path
        return cls(hosts=hosts, **kwargs)

    @property
    def members_path(self) -> str:
        return self.path.rstrip("/") + "/members"


class ZooKeeperDiscovery(Discovery):
    """Discovery through ZooKeeper ephemeral znodes (kazoo client)."""

    name = "zookeeper"

    def __init__(
        self, config: ZooKeeperConfig | None = None, *, clock: Clock | None = None
    ) -> None:
        super().__init__()
        self.config = config or ZooKeeperConfig()
        self._clock: Clock = clock or SystemClock()
        self._local: Member | None = None
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._connected = False
        self._disconnected_since = 0.0
        self._registered_session: int | None = None
        self._registered_once = False
        self._records: dict[str, Member] = {}
        self._stopped = False
        #: Children skipped because malformed or of an incompatible version.
        self.skipped = 0
        #: Times the znode was created again in a new session.
        self.reregistrations = 0
        #: The last error that interrupted registration or a rescan.
        self.last_error: BaseException | None = None

    @property
    def ready(self) -> bool:
        """True once the local member has seen itself and the initial member set."""
        return self._ready.is_set()

    @property
    def connected(self) -> bool:
        """True while the client holds a live connection to ZooKeeper."""
        return self._connected

    # -- lifecycle --------------------------------------------------------------
    async def start(self, local: Member) -> None:
        try:
            import kazoo.client  # noqa: F401 - fail early with a clear message
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DiscoveryError(
                "zookeeper discovery needs kazoo: pip install 'peer-ring[zookeeper]'"
            ) from exc
        if self._task is not None:
            raise DiscoveryError("zookeeper discovery already started")
        self._local = local
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        self._disconnected_since = self._clock.monotonic()
        self._client = self._new_client()
        self._task = asyncio.create_task(self._run(), name=f"zk-discovery-{local.id}")
        ready = asyncio.create_task(self._ready.wait())
        try:
            await asyncio.wait(
                {ready, self._task}, timeout=cfg.start_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
        if not self._ready.is_set():
            error = self.last_error
            await self._shutdown(graceful=False)
            why = repr(error) if error is not None else "not connected / own znode never seen"
            raise DiscoveryError(
                f"zookeeper discovery did not become ready within {cfg.start_timeout}s "
                f"(hosts {','.join(cfg.hosts)}): {why}"
            ) from error

    async def stop(self) -> None:
        """Close the session: ZooKeeper deletes the ephemeral znode at once."""
        await self._shutdown(graceful=True)

    async def _shutdown(self, *, graceful: bool) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._task is not None:
            await cancel_and_wait(self._task)
        client, self._client = self._client, None
        if client is not None:
            client.remove_listener(self._on_state)
            await asyncio.to_thread(self._close_client, client)
        self._publisher.close()

    def _new_client(self) -> Any:
        from kazoo.client import KazooClient

        cfg = self.config
        security: dict[str, Any] = {}
        if cfg.ca_file is not None:
            security.update(use_ssl=True, verify_certs=True, ca=cfg.ca_file,
                            certfile=cfg.cert_file, keyfile=cfg.key_file)  # fmt: skip
        if cfg.digest is not None:
            from kazoo.security import make_digest_acl

            user, _, password = cfg.digest.partition(":")
            security["auth_data"] = [("digest", cfg.digest)]
            security["default_acl"] = [make_digest_acl(user, password, all=True)]
        client = KazooClient(
            **security,
            hosts=",".join(cfg.hosts),
            timeout=cfg.session_timeout,
            connection_retry={
                "max_tries": -1,
                "delay": cfg.retry_initial,
                "max_delay": cfg.retry_max,
            },
            command_retry={"max_tries": 0},
        )
        client.add_listener(self._on_state)
        client.start_async()
        return client

    async def _rebuild_client(self) -> None:
        """Replace a client that could not reconnect for two session timeouts.

        Its session is certainly expired by then. A fresh client also recovers
        from a server that lost its data: such a server refuses every client
        that has seen a newer zxid than its own, and kazoo would retry that
        refused connection forever.
        """
        old = self._client
        log.warning(
            "zookeeper discovery: no connection for %.1fs; opening a new session",
            self._clock.monotonic() - self._disconnected_since,
        )
        self._registered_session = None
        self._disconnected_since = self._clock.monotonic()
        if old is not None:
            old.remove_listener(self._on_state)
            await asyncio.to_thread(self._close_client, old)
        if not self._stopped:
            self._client = self._new_client()

    @staticmethod
    def _close_client(client: Any) -> None:
        try:
            client.stop()
            client.close()
        except Exception as exc:  # stopping a client that never connected may fail
            log.debug("zookeeper: close failed: %r", exc)

    def update_local(self, local: Member) -> None:
        """Called when the local record changes; the znode is rewritten on the loop."""
        self._local = local
        self._registered_session = None
        self._kick()

    # -- kazoo thread -> event loop --------------------------------------------
    def _kick(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed after the check
            loop.call_soon_threadsafe(self._wake.set)

    def _on_state(self, state: str) -> None:
        """kazoo listener, called from kazoo's thread: must not block."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._set_state, state)

    def _set_state(self, state: str) -> None:
        was = self._connected
        self._connected = state == "CONNECTED"
        if was and not self._connected:
            self._disconnected_since = self._clock.monotonic()
        if state == "LOST":
            log.warning("zookeeper discovery: session expired; will re-register on reconnect")
        elif state == "SUSPENDED":
            log.warning(
                "zookeeper discovery: connection lost; keeping last view of %d members",
                len(self._publisher.view),
            )
        if self._connected and not was:
            self._wake.set()

    def _on_watch(self, _event: Any) -> None:
        """kazoo watch callback (kazoo's thread): only wakes the loop."""
        self._kick()

    async def _await(self, async_result: Any) -> Any:
        """Await a kazoo IAsyncResult from the event loop, with the request deadline."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any) -> None:
            if fut.done():
                return
            try:
                fut.set_result(result.get_nowait())
            except Exception as exc:
                fut.set_exception(exc)

        def on_done(result: Any) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result)

        async_result.rawlink(on_done)
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
        # cancellation that races with the result (cpython gh-86296).
        async with asyncio.timeout(self.config.request_timeout):
            return await fut

    # -- main loop --------------------------------------------------------------
    async def _run(self) -> None:
        backoff = Backoff(self.config.retry_initial, self.config.retry_max)
        give_up = 2 * self.config.session_timeout
        while True:
            wake = asyncio.create_task(self._wake.wait())
            tick = asyncio.create_task(self._clock.sleep(self.config.session_timeout / 2))
            try:
                await asyncio.wait({wake, tick}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake.cancel()
                tick.cancel()
            self._wake.clear()
            if not self._connected:
                if self._clock.monotonic() - self._disconnected_since > give_up:
                    await self._rebuild_client()
                continue
            try:
                await self._register()
                await self._rescan()
                backoff.reset()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = exc
                delay = backoff.next()
                log.warning(
                    "zookeeper discovery: %r; keeping last view of %d members, retrying in %.2fs",
                    exc,
                    len(self._publisher.view),
                    delay,
                )
                await self._clock.sleep(delay)
                self._wake.set()

    async def _register(self) -> None:
        from kazoo.exceptions import NodeExistsError, NoNodeError

        client, local = self._client, self._local
        assert client is not None
        assert local is not None
        session = client.client_id[0] if client.client_id else None
        if session is not None and session == self._registered_session:
            return
        node = f"{self.config.members_path}/{local.id}"
        data = encode_record(local)
        for _ in range(3):
            try:
                await self._await(client.create_async(node, data, ephemeral=True, makepath=True))
                break
            except NodeExistsError:
                pass
            try:
                raw, stat = await self._await(client.get_async(node))
            except NoNodeError:
                continue  # deleted meanwhile: create again
            if stat.ephemeralOwner == session:
                if raw != data:
                    await self._await(client.set_async(node, data, version=stat.version))
                break
            try:
                old_inc = decode_record(raw).incarnation
            except RecordError:
                old_inc = -1
            if old_inc > local.incarnation:
                raise DiscoveryError(
                    f"znode {node} belongs to a newer life of {local.id} "
                    f"(incarnation {old_inc} > {local.incarnation})"
                )
            log.info("zookeeper discovery: replacing %s left by an older session", node)
            with contextlib.suppress(NoNodeError):
                await self._await(client.delete_async(node, version=stat.version))
        else:
            raise DiscoveryError(f"could not register {node}: it keeps changing")
        if self._registered_once:
            self.reregistrations += 1
            log.info("zookeeper discovery: re-registered %s", local.id)
        self._registered_once = True
        self._registered_session = session

    async def _rescan(self) -> None:
        from kazoo.exceptions import NoNodeError

        client = self._client
        assert client is not None
        path = self.config.members_path
        watch: Callable[[Any], None] = self._on_watch
        children = await self._await(client.get_children_async(path, watch=watch))
        records: dict[str, Member] = {}
        for child in children:
            try:
                raw, _stat = await self._await(client.get_async(f"{path}/{child}", watch=watch))
            except NoNodeError:
                continue  # gone between the listing and the read; a watch fired
            try:
                member = decode_record(raw)
            except RecordError as exc:
                self.skipped += 1
                log.warning("zookeeper discovery: skipping %s/%s: %s", path, child, exc)
                continue
            old = records.get(member.id)
            if old is None or member.incarnation >= old.incarnation:
                records[member.id] = member
        self._records = records
        self._publisher.publish(records.values())
        assert self._local is not None
        if self._local.id in records:
            self._ready.set()
        elif self._ready.is_set():
            # Our znode vanished while our session lives (deleted by hand):
            # re-create it on the next pass.
            self._registered_session = None
            self._wake.set()
