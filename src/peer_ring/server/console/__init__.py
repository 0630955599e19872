"""The web console: every node serves a live picture of the cluster on ``--http`` at ``/``.

Routes (added to the node's :class:`~peer_ring.server.http.HttpServer`):

* ``GET /`` and ``GET /console/<file>`` -- the page: static HTML, CSS and
  JavaScript shipped in this package (``static/``), no build step. They
  hold no data, so they are always served.
* ``GET /console/api/snapshot`` -- the cluster as JSON
  (:func:`peer_ring.server.console.snapshot.build`).
* ``GET /console/api/events`` -- the same snapshot every ``interval``
  seconds as server-sent events (``event: snapshot``), until the client
  goes or the server stops. The page reads it with ``fetch`` (an
  ``EventSource`` cannot send an ``Authorization`` header).
* ``POST /console/api/decommission`` ``{"node": ID}`` -- decommission a
  member: it hands its partitions over, leaves the ring and exits (what
  ``peer-ring leave`` does). Answers 202 at once; the snapshot's
  ``actions_log`` tells how it ends.

Access: the data routes are guarded like ``/status`` (open without an admin
token; with one, they need ``Authorization: Bearer <admin token>``). Actions
are refused with 403 when the node runs without an admin token (the console
is read-only) and with 401 without that token. The node asks the other
members for their status (``["st"]``) and sends their ``leave`` over the
peer transport with its own credentials: with peer authentication on, that
takes the admin token on the node (or an admin certificate).

One snapshot is built per interval however many browsers watch (they share
it), and only while someone watches: an idle console costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from peer_ring import wire
from peer_ring.errors import PeerRingError
from peer_ring.membership.base import MemberState
from peer_ring.server._http_limits import DEADLINE, bearer_ok
from peer_ring.server.console.snapshot import Rates, build

if TYPE_CHECKING:
    from peer_ring.node import Node

__all__ = ["SECURITY_HEADERS", "STATIC_FILES", "Console"]

log = logging.getLogger(__name__)

#: The page's files: name -> content type. Nothing else under /console/ is served.
STATIC_FILES = {
    "index.html": "text/html",
    "console.css": "text/css",
    "console.js": "text/javascript",
}

#: Sent with every console response: no inline script or style, no framing
#: (an action button cannot be clickjacked), no content sniffing, no referrer.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

#: Most seconds the console waits for another member's status (at most one
#: interval) before showing it as unreachable for this round.
STATUS_TIMEOUT = 1.5

#: Seconds a decommission may take (the transfers of everything the node holds).
LEAVE_TIMEOUT = 600.0

#: Actions the snapshot keeps in its log.
ACTIONS_KEPT = 20


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class Console:
    """The console routes of one node's HTTP server. See the module docstring.

    ``admin_token``: the node's admin token (None: read-only console).
    ``guard``: wraps a data handler with the ``/status`` access rule.
    ``decommission``: what decommissioning *this* node runs (the process
    runner's: hand over, then stop the process); without it, this node's
    own decommission only hands over and leaves (``Node.leave``).
    """

    def __init__(
        self,
        node: Node,
        *,
        admin_token: str | None,
        guard: Callable[
            [Callable[[web.Request], Awaitable[web.StreamResponse]]],
            Callable[[web.Request], Awaitable[web.StreamResponse]],
        ],
        decommission: Callable[[], Awaitable[Any]] | None = None,
        interval: float = 1.0,
    ) -> None:
        self.node = node
        self.admin_token = admin_token
        self.interval = interval
        self.decommission_self = decommission
        self.rates = Rates(min_gap=interval / 4)
        self.closing = asyncio.Event()
        self.actions: deque[dict[str, Any]] = deque(maxlen=ACTIONS_KEPT)
        self._files = {name: _static(name) for name in STATIC_FILES}
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._building: asyncio.Task[dict[str, Any]] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: server-sent event streams open now
        self.watchers = 0
        self.routes = [
            web.get("/", self._index),
            web.get("/console/{name}", self._file),
            web.get("/console/api/snapshot", guard(self._snapshot)),
            web.get("/console/api/events", guard(self._events)),
            web.post("/console/api/decommission", self._decommission),
        ]

    async def close(self) -> None:
        """End the event streams and the actions still running."""
        self.closing.set()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the page ------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.Response:
        return self._serve("index.html")

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return self._serve(name)

    def _serve(self, name: str) -> web.Response:
        return web.Response(
            body=self._files[name],
            content_type=STATIC_FILES[name],
            charset="utf-8",
            headers=SECURITY_HEADERS,
        )

    # -- data ------------------------------------------------------------------
    async def snapshot(self) -> dict[str, Any]:
        """The current snapshot; one build per interval, shared by every caller."""
        now = self.node.clock.monotonic()
        cached = self._cached
        if cached is not None and now - cached[0] < self.interval * 0.8:
            return cached[1]
        if self._building is None or self._building.done():
            self._building = asyncio.get_running_loop().create_task(self._build())
        return await asyncio.shield(self._building)

    async def _build(self) -> dict[str, Any]:
        node = self.node
        local = node.status()
        others = [m for m in local["members"] if m["id"] != node.id]
        answers = await asyncio.gather(*(self._remote_status(m) for m in others))
        remote = {m["id"]: a for m, a in zip(others, answers, strict=True)}
        ring = node.ring
        holders = {
            p for p in range(ring.partitions) if node.transfers.holders_of(p)
        }  # partitions still handed off by a former owner, in this node's view
        now = self.node.clock.monotonic()
        snap = build(
            local,
            remote,
            preference_lists=ring.preference_lists,
            holders_moving=holders,
            rates=self.rates,
            now=now,
            interval=self.interval,
            actions=self.action_state(),
            actions_log=[
                {k: v for k, v in a.items() if k != "at"} | {"ago": now - a["at"]}
                for a in self.actions
            ],
        )
        self._cached = (now, snap)
        return snap

    async def _remote_status(self, member: dict[str, Any]) -> dict[str, Any] | str:
        if member["state"] not in (MemberState.UP.value, MemberState.SUSPECT.value):
            return str(member["state"])
        try:
            answer = await self.node.transport.request(
                member["address"], wire.status_frame(), min(STATUS_TIMEOUT, self.interval)
            )
        except PeerRingError as exc:
            return f"{type(exc).__name__}: {exc}"
        if not isinstance(answer, dict):
            return "malformed status answer"
        return answer

    def action_state(self) -> dict[str, Any]:
        if self.admin_token is None:
            return {
                "enabled": False,
                "why": "read-only: this node runs without an admin token "
                "(--admin-token-file), so the console changes nothing",
            }
        return {"enabled": True, "why": "actions need this node's admin token"}

    async def _snapshot(self, request: web.Request) -> web.Response:
        return web.json_response(await self.snapshot(), headers=SECURITY_HEADERS)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                **SECURITY_HEADERS,
                "Content-Type": "text/event-stream",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        deadline = request.get(DEADLINE)
        if deadline is not None:
            deadline.reschedule(None)  # authorised and under way: a stream has no deadline
        self.watchers += 1
        try:
            await response.write(f"retry: {int(self.interval * 2000)}\n\n".encode())
            while not self.closing.is_set():
                snap = await self.snapshot()
                data = json.dumps(snap, separators=(",", ":"))
                await response.write(f"event: snapshot\ndata: {data}\n\n".encode())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), self.interval)
        except ConnectionResetError:
            pass  # the browser went away
        finally:
            self.watchers -= 1
        return response

    # -- actions ---------------------------------------------------------------
    def _refuse(self, request: web.Request) -> web.Response | None:
        """The answer refusing an action, or None when it is allowed."""
        if self.admin_token is None:
            return web.json_response(
                {"error": "refused: " + self.action_state()["why"]},
                status=403,
                headers=SECURITY_HEADERS,
            )
        if not bearer_ok(request, [self.admin_token]):
            return web.json_response(
                {"error": "refused: this action needs Authorization: Bearer <admin token>"},
                status=401,
                headers={**SECURITY_HEADERS, "WWW-Authenticate": 'Bearer realm="peer-ring"'},
            )
        return None

    async def _decommission(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        target = body.get("node") if isinstance(body, dict) else None
        if not isinstance(target, str):
            return _error(400, 'expected {"node": "<member id>"}')
        node = self.node
        member = node.members.get(target)
        if member is None:
            return _error(404, f"{target!r} is not a member of this node's ring")
        if not node.is_up(target):
            return _error(
                409,
                f"{target} is down: a down node cannot hand its data over; bring it back, "
                "or let dead_after remove it (its data is re-replicated then)",
            )
        if any(a["state"] == "running" for a in self.actions):
            return _error(409, "a decommission is already running; wait for it to finish")
        entry: dict[str, Any] = {
            "action": "decommission", "node": target, "state": "running",
            "detail": "handing its partitions over", "at": self.node.clock.monotonic(),
        }  # fmt: skip
        self.actions.append(entry)
        self._cached = None  # show it at once
        task = asyncio.get_running_loop().create_task(self._leave(target, member.address, entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.warning("console: decommission of %s requested from %s", target, request.remote)
        return web.json_response(
            {"accepted": True, "node": target, "action": "decommission"},
            status=202,
            headers=SECURITY_HEADERS,
        )

    async def _leave(self, target: str, address: str, entry: dict[str, Any]) -> None:
        try:
            if target == self.node.id:
                if self.decommission_self is not None:
                    result = await self.decommission_self()
                else:
                    await self.node.leave()
                    result = None
            else:
                result = await self.node.transport.request(
                    address, wire.leave_frame(), LEAVE_TIMEOUT
                )
        except PeerRingError as exc:
            entry.update(state="failed", detail=f"{type(exc).__name__}: {exc}")
        else:
            detail = "left the cluster"
            if isinstance(result, dict) and "transfers" in result:
                detail += f" after {result['transfers']} partition transfers"
            entry.update(state="done", detail=detail)
        self._cached = None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=SECURITY_HEADERS)
