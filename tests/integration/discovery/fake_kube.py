"""An in-test Kubernetes API server for EndpointSlices (list + watch only).

It speaks the real protocol the kubernetes_asyncio client expects:

* ``GET /apis/discovery.k8s.io/v1/namespaces/NS/endpointslices`` with
  ``labelSelector`` returns an ``EndpointSliceList`` whose
  ``metadata.resourceVersion`` is the current version;
* the same with ``watch=true&resourceVersion=RV`` streams newline-delimited
  JSON watch events (chunked) for every change after ``RV``, BOOKMARK events
  when asked (``allowWatchBookmarks``), and ends after ``timeoutSeconds``;
* a watch from a version older than the compaction point gets an ERROR event
  with a 410 ``Status`` (what the real server sends for "too old resource
  version");
* requests without the expected bearer token get 401.

Every request's query is recorded in :attr:`FakeKube.requests` for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from typing import Any

from aiohttp import web

SERVICE_LABEL = "kubernetes.io/service-name"


def endpoint(
    pod: str,
    ip: str,
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
    uid: str | None = None,
    zone: str | None = None,
) -> dict[str, Any]:
    conditions: dict[str, Any] = {}
    if ready is not None:
        conditions["ready"] = ready
    conditions["serving"] = ready if serving is None else serving
    if terminating is not None:
        conditions["terminating"] = terminating
    ep: dict[str, Any] = {
        "addresses": [ip],
        "conditions": conditions,
        "targetRef": {"kind": "Pod", "name": pod, "namespace": "ns", "uid": uid or f"uid-{pod}"},
        "nodeName": "node-1",
    }
    if zone is not None:
        ep["zone"] = zone
    return ep


class FakeKube:
    def __init__(self, namespace: str = "ns", token: str = "test-token") -> None:
        self.namespace = namespace
        self.token = token
        self.rv = 1000
        self.slices: dict[str, dict[str, Any]] = {}
        self.history: list[tuple[int, dict[str, Any]]] = []
        self.compacted = 0
        self.silent = False  # record changes without delivering them to watchers
        self.requests: list[dict[str, str]] = []
        self._watchers: set[asyncio.Queue[dict[str, Any] | bytes | None]] = set()
        self._bookmark_watchers: set[asyncio.Queue[dict[str, Any] | bytes | None]] = set()
        self._runner: web.AppRunner | None = None
        self.host = "127.0.0.1"
        self.port = 0

    # -- state changes -------------------------------------------------------
    def put_slice(
        self,
        name: str,
        endpoints: list[dict[str, Any]],
        *,
        service: str = "ring",
        ports: list[dict[str, Any]] | None = None,
        raw: dict[str, Any] | None = None,
    ) -> int:
        self.rv += 1
        kind = "MODIFIED" if name in self.slices else "ADDED"
        obj = raw or {
            "kind": "EndpointSlice",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": name, "namespace": self.namespace, "labels": {}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports if ports is not None else [{"name": "peer", "port": 7100}],
        }
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        obj["metadata"].setdefault("labels", {})[SERVICE_LABEL] = service
        obj["metadata"].setdefault("name", name)
        self.slices[name] = obj
        self._emit({"type": kind, "object": obj})
        return self.rv

    def delete_slice(self, name: str) -> None:
        self.rv += 1
        obj = self.slices.pop(name)
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._emit({"type": "DELETED", "object": obj})

    def bookmark(self) -> int:
        """Advance the version without a change and tell bookmark watchers."""
        self.rv += 1
        event = {
            "type": "BOOKMARK",
            "object": {
                "kind": "EndpointSlice",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": str(self.rv)},
            },
        }
        for q in self._bookmark_watchers:
            q.put_nowait(event)
        return self.rv

    def send_raw(self, line: bytes) -> None:
        for q in self._watchers:
            q.put_nowait(line)

    def compact(self) -> None:
        """Forget history up to now: older resourceVersions get 410 Gone."""
        self.compacted = self.rv
        self.history.clear()

    def end_watches(self) -> None:
        """End every open watch stream (as a server-side watch timeout does)."""
        for q in self._watchers:
            q.put_nowait(None)

    @property
    def watch_requests(self) -> list[dict[str, str]]:
        return [r for r in self.requests if r.get("watch") in ("true", "True", "1")]

    @property
    def list_requests(self) -> list[dict[str, str]]:
        return [r for r in self.requests if r.get("watch") not in ("true", "True", "1")]

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    def _emit(self, event: dict[str, Any]) -> None:
        self.history.append((self.rv, event))
        if self.silent:
            return
        for q in self._watchers:
            q.put_nowait(event)

    # -- HTTP ----------------------------------------------------------------
    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port or self.port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None)
        assert sockets
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.end_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def kubeconfig(self) -> str:
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "users": [{"name": "u", "user": {"token": self.token}}],
                "contexts": [
                    {
                        "name": "fake",
                        "context": {"cluster": "fake", "user": "u", "namespace": self.namespace},
                    }
                ],
                "current-context": "fake",
            }
        )

    def _selected(self, query: dict[str, str]) -> list[dict[str, Any]]:
        selector = query.get("labelSelector", "")
        want = dict(part.split("=", 1) for part in selector.split(",") if "=" in part)
        return [
            s
            for s in self.slices.values()
            if all(s["metadata"]["labels"].get(k) == v for k, v in want.items())
        ]

    def _matches(self, event: dict[str, Any], query: dict[str, str]) -> bool:
        if event.get("type") == "BOOKMARK":
            return True
        selector = query.get("labelSelector", "")
        want = dict(part.split("=", 1) for part in selector.split(",") if "=" in part)
        labels = event["object"].get("metadata", {}).get("labels", {})
        return all(labels.get(k) == v for k, v in want.items())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.requests.append(query)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(
                {"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401},
                status=401,
            )
        if request.match_info["ns"] != self.namespace:
            return web.json_response({"kind": "EndpointSliceList", "items": [], "metadata": {}})
        if query.get("watch") not in ("true", "True", "1"):
            return web.json_response(
                {
                    "kind": "EndpointSliceList",
                    "apiVersion": "discovery.k8s.io/v1",
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": self._selected(query),
                }
            )
        return await self._watch(request, query)

    async def _watch(self, request: web.Request, query: dict[str, str]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        since = int(query.get("resourceVersion") or 0)
        if since < self.compacted:
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {since} ({self.compacted})",
                "reason": "Expired",
                "code": 410,
            }
            await resp.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
            await resp.write_eof()
            return resp
        timeout = float(query.get("timeoutSeconds") or 300)
        queue: asyncio.Queue[dict[str, Any] | bytes | None] = asyncio.Queue()
        for rv, event in self.history:
            if rv > since and self._matches(event, query):
                queue.put_nowait(event)
        self._watchers.add(queue)
        if query.get("allowWatchBookmarks") in ("true", "True", "1"):
            self._bookmark_watchers.add(queue)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
                if item is None:
                    break
                if isinstance(item, bytes):
                    await resp.write(item)
                elif self._matches(item, query):
                    await resp.write(json.dumps(item).encode() + b"\n")
        except ConnectionResetError:
            return resp
        finally:
            self._watchers.discard(queue)
            self._bookmark_watchers.discard(queue)
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp
