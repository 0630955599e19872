"""An HTTP API whose every node embeds a peer-ring node with the rate limiter.

Run three of these (each is a cluster member and a web server)::

    python examples/ratelimit/api.py --id n1 --listen 127.0.0.2:7400 --web 127.0.0.2:8000 \\
        --seeds 127.0.0.2:7400
    python examples/ratelimit/api.py --id n2 --listen 127.0.0.3:7400 --web 127.0.0.3:8000 \\
        --seeds 127.0.0.2:7400
    python examples/ratelimit/api.py --id n3 --listen 127.0.0.4:7400 --web 127.0.0.4:8000 \\
        --seeds 127.0.0.2:7400

then ``curl -i -H 'X-Api-Key: alice' http://127.0.0.3:8000/search`` on any of
them: each API key may make 5 searches per 10 seconds across the whole
cluster (a sliding window decided at the key's owner), and 2 exports at a
time (a concurrency limit). The 6th search within 10 s gets ``429`` with
``Retry-After`` and the ``RateLimit``/``RateLimit-Policy`` fields, whichever
node it reaches. ``tests/examples/test_ratelimit_example.py`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from peer_ring import Node, NodeConfig
from peer_ring.apps.ratelimit import RateLimited, RateLimiter
from peer_ring.apps.ratelimit.middleware import aiohttp_middleware


# --8<-- [start:api_key]
def api_key(request: web.Request) -> str | None:
    """Count per API key; the health check is never limited."""
    if request.path == "/healthz":
        return None
    return request.headers.get("X-Api-Key") or f"ip:{request.remote}"


# --8<-- [end:api_key]


def build_app(limiter: RateLimiter) -> web.Application:
    """The web app: every request rate-limited, exports also concurrency-limited."""

    async def search(request: web.Request) -> web.Response:
        return web.json_response({"results": [], "q": request.query.get("q", "")})

    async def export(request: web.Request) -> web.Response:
        key = api_key(request) or "anonymous"
        try:
            async with limiter.concurrency(f"export:{key}", limit=2, timeout=60):
                await asyncio.sleep(float(request.query.get("seconds", "0.1")))
                return web.json_response({"export": "done"})
        except RateLimited as exc:
            retry = max(1, round(exc.decision.retry_after))
            return web.json_response(
                {"error": "2 exports at a time"}, status=429, headers={"Retry-After": str(retry)}
            )

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(
        middlewares=[aiohttp_middleware(limiter, limit=5, period=10, key=api_key)]
    )
    app.add_routes(
        [web.get("/search", search), web.get("/export", export), web.get("/healthz", healthz)]
    )
    return app


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--id", required=True)
    ap.add_argument("--listen", required=True, help="peer address HOST:PORT")
    ap.add_argument("--seeds", required=True, help="comma-separated peer addresses")
    ap.add_argument("--web", required=True, help="HTTP address HOST:PORT of the API")
    args = ap.parse_args()
    node = Node(NodeConfig.local(args.id, listen=args.listen, seeds=tuple(args.seeds.split(","))))
    limiter = node.register(RateLimiter())
    await node.start()
    runner = web.AppRunner(build_app(limiter))
    await runner.setup()
    host, port = args.web.rsplit(":", 1)
    await web.TCPSite(runner, host, int(port)).start()
    print(f"{args.id}: API on http://{args.web}, peer-ring on {args.listen}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await node.stop()


if __name__ == "__main__":
    asyncio.run(main())
