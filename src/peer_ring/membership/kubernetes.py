"""Kubernetes discovery: list + watch the EndpointSlices of a headless Service.

Least privilege: the node needs only ``get``, ``list`` and ``watch`` on
``endpointslices`` (API group ``discovery.k8s.io``) in its own namespace
(see ``deploy/kubernetes/rbac.yaml``).

List/watch protocol (the Kubernetes "API concepts" contract):

1. **list** ``endpointslices?labelSelector=kubernetes.io/service-name=SVC``;
   the list's ``metadata.resourceVersion`` is the snapshot version ``RV``.
2. **watch** from ``RV`` with ``allowWatchBookmarks=true`` and a server-side
   ``timeoutSeconds``. Every ADDED/MODIFIED/DELETED event carries the
   object's new resourceVersion; a BOOKMARK carries only a newer
   resourceVersion. The backend remembers the newest one seen.
3. When the server ends the watch (timeout, connection drop), watch again
   from the remembered resourceVersion: no event is lost or repeated.
4. **410 Gone** (the remembered version was compacted away; sent as an ERROR
   event or an HTTP status) means the history is gone: go back to 1 (relist).

Membership rules per endpoint:

* An endpoint is a member when ``conditions.ready`` is not false and
  ``conditions.terminating`` is not true (``nil`` ready means ready, as the
  API specifies). A pod that is being deleted is ``terminating`` as soon as
  its deletion starts, so it leaves the ring *before* it dies.
* Identity: member id = pod name (``targetRef.name``); address = pod IP and
  the Service port named ``port_name``. The pod UID is kept in
  ``meta["uid"]``. Kubernetes does not carry a node's own incarnation, so
  this backend assigns one: 0 for the first pod UID seen under a name, +1 each
  time the same name comes back with another UID (a rescheduled StatefulSet
  pod) -- a reused name, or a reused IP under another name, is never taken for
  the old member. The local node's own entry is the :class:`Member` given to
  :meth:`KubernetesDiscovery.start`, once the API shows it.
* Readiness needs the pod in the slices before its readiness probe passes:
  the headless Service must set ``publishNotReadyAddresses: true`` (the
  manifests do). With it the API reports every non-terminating pod as ready.

Invariants: while the API server is unreachable, the last view stays
published and the backend retries with capped exponential backoff; malformed
slices or endpoints are skipped with a warning and counted in
:attr:`KubernetesDiscovery.skipped`; :meth:`KubernetesDiscovery.start` returns
once the local pod is in the view, or raises
:class:`~peer_ring.errors.DiscoveryError` after ``start_timeout``.

Background: DeCandia et al., "Dynamo" (SOSP 2007) section 4.8, explicit
membership; Kubernetes API concepts, "Efficient detection of changes".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peer_ring.clock import Clock, SystemClock
from peer_ring.errors import ConfigError, DiscoveryError
from peer_ring.membership._registry import Backoff, cancel_and_wait
from peer_ring.membership.base import Discovery, Member, format_address

__all__ = ["KubernetesConfig", "KubernetesDiscovery"]

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class KubernetesConfig:
    """Settings of the Kubernetes backend (``--discovery kubernetes``).

    Durations are float seconds.
    """

    #: Namespace of the Service (``--k8s-namespace``). None: the pod's own
    #: namespace (service-account file), else ``default``.
    namespace: str | None = None
    #: Name of the headless Service whose EndpointSlices list the nodes
    #: (``--k8s-service``).
    service: str = "peer-ring"
    #: Name of the Service port that is the peer transport port.
    port_name: str = "peer"
    #: Path of a kubeconfig file. None: in-cluster service-account config when
    #: running in a pod, else the default kubeconfig (``~/.kube/config``).
    kubeconfig: str | None = None
    #: kubeconfig context; None means the current context.
    context: str | None = None
    #: Server-side timeout of one watch request (``timeoutSeconds``); the
    #: watch is then re-opened from the last resourceVersion. Shorter means
    #: more requests, longer means dead connections are noticed later.
    watch_timeout: float = 300.0
    #: How long :meth:`KubernetesDiscovery.start` may take before it fails
    #: with DiscoveryError (API unreachable, RBAC missing, pod not listed).
    start_timeout: float = 60.0
    #: Deadline of a list request, and the slack added to a watch's timeout
    #: before the client gives up on a silent connection.
    request_timeout: float = 10.0
    #: First retry delay after a failed list/watch; doubles up to ``retry_max``.
    retry_initial: float = 0.5
    #: Upper bound of the retry delay.
    retry_max: float = 10.0

    def __post_init__(self) -> None:
        if not self.service:
            raise ConfigError("kubernetes: service name is required")
        if self.namespace is not None and not self.namespace:
            raise ConfigError("kubernetes: namespace must not be empty")
        if self.watch_timeout < 1:
            raise ConfigError("kubernetes watch_timeout must be >= 1 second")
        for name in ("start_timeout", "request_timeout", "retry_initial", "retry_max"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"kubernetes {name} must be > 0")
        if self.retry_max < self.retry_initial:
            raise ConfigError("kubernetes retry_max must be >= retry_initial")

    def resolved_namespace(self) -> str:
        if self.namespace is not None:
            return self.namespace
        try:
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        except OSError:
            return "default"


class _Gone(Exception):
    """Internal: the watch's resourceVersion is too old (HTTP 410); relist."""


class _SliceError(ValueError):
    """Internal: a slice or endpoint that does not follow the API schema."""


def describe(exc: BaseException | None) -> str:
    """A one-line description of a list/watch failure (ApiException has no repr)."""
    status = getattr(exc, "status", None)
    if status is not None:
        reason = getattr(exc, "reason", None) or ""
        return f"HTTP {status} {reason}".strip()
    return repr(exc)


def _as_map(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _SliceError(f"{what} must be an object")
    return value


def _candidate(endpoint: Any, port: int) -> tuple[str, str, bool, dict[str, str], str | None]:
    """(id, address, included, meta, zone) of one endpoint; raises _SliceError."""
    ep = _as_map(endpoint, "endpoint")
    addresses = ep.get("addresses")
    if not isinstance(addresses, list) or not addresses or not isinstance(addresses[0], str):
        raise _SliceError("endpoint has no addresses")
    ip = addresses[0]
    conditions = ep.get("conditions") or {}
    conditions = _as_map(conditions, "conditions")
    ready = conditions.get("ready")
    terminating = conditions.get("terminating")
    included = ready is not False and terminating is not True
    ref = ep.get("targetRef") or {}
    ref = _as_map(ref, "targetRef")
    name = ref.get("name") if ref.get("kind", "Pod") == "Pod" else None
    if not isinstance(name, str) or not name:
        name = ep.get("hostname") if isinstance(ep.get("hostname"), str) else None
    if not name:
        raise _SliceError(f"endpoint {ip} has no pod name (targetRef) or hostname")
    meta = {"ip": ip}
    uid = ref.get("uid")
    if isinstance(uid, str):
        meta["uid"] = uid
    node_name = ep.get("nodeName")
    if isinstance(node_name, str):
        meta["node"] = node_name
    zone = ep.get("zone")
    return name, format_address(ip, port), included, meta, zone if isinstance(zone, str) else None


class KubernetesDiscovery(Discovery):
    """Discovery from the EndpointSlices of a headless Service."""

    name = "kubernetes"

    def __init__(
        self,
        config: KubernetesConfig | None = None,
        *,
        clock: Clock | None = None,
        api_client: Any = None,
    ) -> None:
        """``api_client``: a ready ``kubernetes_asyncio.client.ApiClient`` (tests);
        by default one is built from the config (in-cluster or kubeconfig) and
        closed by :meth:`stop`."""
        super().__init__()
        self.config = config or KubernetesConfig()
        self._clock: Clock = clock or SystemClock()
        self._api_client = api_client
        self._own_client = api_client is None
        self._namespace = self.config.resolved_namespace()
        self._local: Member | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._slices: dict[str, list[tuple[str, str, bool, dict[str, str], str | None]]] = {}
        self._incarnations: dict[str, tuple[str, int]] = {}
        self._stopped = False
        #: The resourceVersion the next watch starts from.
        self.resource_version: str | None = None
        #: Slices or endpoints skipped because they did not parse.
        self.skipped = 0
        #: Number of list requests made (1 + one per 410 Gone or failure).
        self.lists = 0
        #: The last error that interrupted list/watch (None while healthy).
        self.last_error: BaseException | None = None

    @property
    def ready(self) -> bool:
        """True once the local pod has been seen in the initial member set."""
        return self._ready.is_set()

    @property
    def namespace(self) -> str:
        return self._namespace

    # -- lifecycle ---------------------------------------------------------------
    async def start(self, local: Member) -> None:
        if self._task is not None:
            raise DiscoveryError("kubernetes discovery already started")
        self._local = local
        try:
            if self._api_client is None:
                async with asyncio.timeout(self.config.request_timeout):
                    self._api_client = await self._make_api_client()
        except Exception as exc:
            raise DiscoveryError(f"kubernetes client configuration failed: {exc}") from exc
        self._task = asyncio.create_task(self._run(), name=f"k8s-discovery-{local.id}")
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
            why = (
                describe(error) if error is not None else f"pod {local.id} not listed in the slices"
            )
            raise DiscoveryError(
                f"kubernetes discovery of service {self._namespace}/{self.config.service} "
                f"did not become ready within {self.config.start_timeout}s: {why}"
            ) from error

    async def stop(self) -> None:
        """Stop watching; Kubernetes itself removes the pod when it terminates."""
        if self._stopped:
            return
        self._stopped = True
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._own_client and self._api_client is not None:
            await self._api_client.close()
        self._publisher.close()

    async def _make_api_client(self) -> Any:
        from kubernetes_asyncio import client, config

        if self.config.kubeconfig is None:
            conf = client.Configuration()
            try:
                config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                pass  # not in a pod: fall back to the default kubeconfig
            else:
                return client.ApiClient(conf)
        return await config.new_client_from_config(
            config_file=self.config.kubeconfig, context=self.config.context
        )

    # -- list / watch ------------------------------------------------------------
    async def _run(self) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        backoff = Backoff(self.config.retry_initial, self.config.retry_max)
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                    backoff.reset()
                await self._watch()  # returns when the server ends the watch
                self.last_error = None
                continue
            except asyncio.CancelledError:
                raise
            except _Gone as exc:
                log.info("kubernetes discovery: %s; relisting", exc)
                need_list = True
                continue
            except ApiException as exc:
                if exc.status == 410:
                    log.info("kubernetes discovery: 410 Gone; relisting")
                    need_list = True
                    continue
                self.last_error = exc
                if exc.status == 401:
                    log.error("kubernetes discovery: 401, the API server rejected the credentials")
                elif exc.status == 403:
                    log.error(
                        "kubernetes discovery: 403 on endpointslices in %s: check the Role "
                        "(get/list/watch on discovery.k8s.io endpointslices)",
                        self._namespace,
                    )
            except Exception as exc:
                self.last_error = exc
            delay = backoff.next()
            log.warning(
                "kubernetes discovery: list/watch failed (%r); keeping last view of %d members, "
                "retrying in %.2fs",
                describe(self.last_error),
                len(self._publisher.view),
                delay,
            )
            # After an error the watch position may be stale; a relist is
            # cheap for one Service and always correct.
            need_list = True
            await self._clock.sleep(delay)

    def _api(self) -> Any:
        from kubernetes_asyncio import client

        return client.DiscoveryV1Api(self._api_client)

    async def _list(self) -> None:
        self.lists += 1
        async with asyncio.timeout(self.config.request_timeout):
            resp = await self._api().list_namespaced_endpoint_slice(
                self._namespace,
                label_selector=f"{SERVICE_NAME_LABEL}={self.config.service}",
                _preload_content=False,
                _request_timeout=self.config.request_timeout,
            )
            try:
                body = await resp.json()
            finally:
                resp.release()
        if not isinstance(body, Mapping):
            raise _SliceError("list response is not an object")
        meta = _as_map(body.get("metadata") or {}, "list metadata")
        items = body.get("items") or []
        if not isinstance(items, list):
            raise _SliceError("list items is not an array")
        slices = {}
        for item in items:
            parsed = self._parse_slice(item)
            if parsed is not None:
                slices[parsed[0]] = parsed[1]
        self._slices = slices
        rv = meta.get("resourceVersion")
        self.resource_version = str(rv) if rv is not None else None
        self._publish()

    async def _watch(self) -> None:
        from kubernetes_asyncio import watch

        async with watch.Watch(return_type="object") as w:
            stream = w.stream(
                self._api().list_namespaced_endpoint_slice,
                self._namespace,
                label_selector=f"{SERVICE_NAME_LABEL}={self.config.service}",
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=int(self.config.watch_timeout),
                _request_timeout=self.config.watch_timeout + self.config.request_timeout,
            )
            async for event in stream:
                self._apply(event)

    def _apply(self, event: Any) -> None:
        if not isinstance(event, Mapping):
            self.skipped += 1
            log.warning("kubernetes discovery: skipping non-JSON watch line %.200r", event)
            return
        kind = event.get("type")
        obj = event.get("raw_object")
        if not isinstance(obj, Mapping):
            self.skipped += 1
            log.warning("kubernetes discovery: skipping watch event without object")
            return
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            if rv is not None:
                self.resource_version = str(rv)
            return
        if kind in ("ADDED", "MODIFIED"):
            parsed = self._parse_slice(obj)
            if parsed is not None:
                self._slices[parsed[0]] = parsed[1]
        elif kind == "DELETED":
            name = (obj.get("metadata") or {}).get("name")
            if isinstance(name, str):
                self._slices.pop(name, None)
        else:
            self.skipped += 1
            log.warning("kubernetes discovery: skipping watch event of type %r", kind)
        if rv is not None:
            self.resource_version = str(rv)
        self._publish()

    # -- parsing / view ------------------------------------------------------------
    def _parse_slice(
        self, obj: Any
    ) -> tuple[str, list[tuple[str, str, bool, dict[str, str], str | None]]] | None:
        try:
            slc = _as_map(obj, "EndpointSlice")
            meta = _as_map(slc.get("metadata"), "metadata")
            name = meta.get("name")
            if not isinstance(name, str) or not name:
                raise _SliceError("slice has no metadata.name")
            if slc.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
                return name, []  # FQDN slices name no pods
            port = self._peer_port(slc.get("ports"))
        except _SliceError as exc:
            self.skipped += 1
            log.warning("kubernetes discovery: skipping malformed EndpointSlice: %s", exc)
            return None
        candidates = []
        for endpoint in slc.get("endpoints") or []:
            try:
                candidates.append(_candidate(endpoint, port))
            except (_SliceError, ConfigError) as exc:
                self.skipped += 1
                log.warning("kubernetes discovery: skipping endpoint in %s: %s", name, exc)
        return name, candidates

    def _peer_port(self, ports: Any) -> int:
        if not isinstance(ports, list) or not ports:
            raise _SliceError("slice has no ports")
        named = [
            p for p in ports if isinstance(p, Mapping) and p.get("name") == self.config.port_name
        ]
        chosen = named[0] if named else (ports[0] if len(ports) == 1 else None)
        if not isinstance(chosen, Mapping):
            raise _SliceError(f"slice has no port named {self.config.port_name!r}")
        port = chosen.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise _SliceError(f"bad port {port!r}")
        return port

    def _incarnation(self, name: str, uid: str | None) -> int:
        key = uid or ""
        known = self._incarnations.get(name)
        if known is None:
            self._incarnations[name] = (key, 0)
            return 0
        if known[0] != key:
            self._incarnations[name] = (key, known[1] + 1)
            return known[1] + 1
        return known[1]

    def _members(
        self, candidates: Iterable[tuple[str, str, bool, dict[str, str], str | None]]
    ) -> dict[str, Member]:
        chosen: dict[str, tuple[str, str, bool, dict[str, str], str | None]] = {}
        for cand in candidates:
            old = chosen.get(cand[0])
            if old is None or (cand[2] and not old[2]):
                chosen[cand[0]] = cand
        view: dict[str, Member] = {}
        for name, address, included, meta, zone in chosen.values():
            if not included:
                continue
            try:
                member = Member(
                    id=name,
                    address=address,
                    zone=zone,
                    incarnation=self._incarnation(name, meta.get("uid")),
                    meta=meta,
                )
            except ConfigError as exc:
                self.skipped += 1
                log.warning("kubernetes discovery: skipping endpoint %s: %s", name, exc)
                continue
            view[name] = member
        return view

    def _publish(self) -> None:
        local = self._local
        assert local is not None
        view = self._members(c for cands in self._slices.values() for c in cands)
        if local.id in view:
            view[local.id] = local
            self._ready.set()
        elif self._ready.is_set():
            log.warning("kubernetes discovery: local pod %s is not listed (terminating?)", local.id)
        self._publisher.publish(view.values())
