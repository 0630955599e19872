"""An aiohttp service with a peer-ring node inside: the embedding tutorial.

Each copy of this service is one node of the ring and serves a small HTTP API
over the replicated key-value store::

    PUT    /kv/{key}   body = value   -> 204 once W replicas stored it
    GET    /kv/{key}                  -> 200 value, or 404
    DELETE /kv/{key}                  -> 204
    GET    /healthz                   -> 200 once the node serves

Run three (docs/tutorials/embed-aiohttp.md)::

    python examples/aiohttp_service.py --id n1 --ip 127.0.0.2 --seeds 127.0.0.2,127.0.0.3
    python examples/aiohttp_service.py --id n2 --ip 127.0.0.3 --seeds 127.0.0.2,127.0.0.3
    python examples/aiohttp_service.py --id n3 --ip 127.0.0.4 --seeds 127.0.0.2,127.0.0.3

The node's peer port is 7400 and the HTTP port 8000 on each address.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from peer_ring import InvalidRequest, Node, NodeConfig, PeerRingError
from peer_ring.apps.kv import KVStore, Limits

# --8<-- [start:keys]
NODE = web.AppKey("node", Node)
KV = web.AppKey("kv", KVStore)
# --8<-- [end:keys]


# --8<-- [start:lifecycle]
def node_context(config: NodeConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context: the node starts with the app and stops with it."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        node, kv = Node(config), KVStore()
        node.register(kv)  # services are registered before the node starts
        app[NODE], app[KV] = node, kv
        await node.start()
        await node.wait_ready()  # joined, and synced what it owns
        yield
        await node.stop()

    return context


# --8<-- [end:lifecycle]


# --8<-- [start:handlers]
async def get_value(request: web.Request) -> web.Response:
    value = await request.app[KV].get(request.match_info["key"].encode())
    if value is None:
        raise web.HTTPNotFound(text="no such key\n")
    return web.Response(body=value)


async def put_value(request: web.Request) -> web.Response:
    await request.app[KV].put(request.match_info["key"].encode(), await request.read())
    return web.Response(status=204)


async def delete_value(request: web.Request) -> web.Response:
    await request.app[KV].delete(request.match_info["key"].encode())
    return web.Response(status=204)


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """peer-ring's errors as HTTP answers: the client's fault, or try again."""
    try:
        return await handler(request)
    except InvalidRequest as exc:  # key or value too large, ...
        raise web.HTTPBadRequest(text=f"{exc}\n") from exc
    except PeerRingError as exc:  # QuorumNotReached, RequestTimeout, ...
        raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers={"Retry-After": "1"}) from exc


# --8<-- [end:handlers]


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text=f"{request.app[NODE].id} ok\n")


# --8<-- [start:app]
def make_app(config: NodeConfig) -> web.Application:
    # aiohttp refuses bodies over 1 MiB by default; let the store judge values
    # (up to 16 MiB; a larger one is the store's InvalidRequest, so a 400)
    app = web.Application(middlewares=[errors], client_max_size=Limits().max_value_size + 1024)
    app.cleanup_ctx.append(node_context(config))
    app.add_routes(
        [
            web.get("/kv/{key}", get_value),
            web.put("/kv/{key}", put_value),
            web.delete("/kv/{key}", delete_value),
            web.get("/healthz", healthz),
        ]
    )
    return app


# --8<-- [end:app]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--id", required=True, help="node id, unique in the cluster")
    parser.add_argument("--ip", required=True, help="this service's address (peer and HTTP)")
    parser.add_argument("--seeds", required=True, help="comma-separated seed IPs")
    parser.add_argument("--peer-port", type=int, default=7400)
    parser.add_argument("--http-port", type=int, default=8000)
    args = parser.parse_args()
    # --8<-- [start:config]
    config = NodeConfig.local(  # processes on one machine; .lan() in a data centre
        args.id,
        listen=f"{args.ip}:{args.peer_port}",
        seeds=tuple(f"{ip}:{args.peer_port}" for ip in args.seeds.split(",")),
    )
    web.run_app(make_app(config), host=args.ip, port=args.http_port, print=None)
    # --8<-- [end:config]


if __name__ == "__main__":
    main()
