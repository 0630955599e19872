"""Run a standalone RESP server over a :class:`LocalKV` (manual tests, benchmarks).

    python -m peer_ring.server.resp --host 127.0.0.1 --port 7379 [--requirepass PW]

Uses uvloop when installed. Stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from peer_ring.apps.kv.local import LocalKV
from peer_ring.server.resp import RespConfig, RespServer


async def _serve(args: argparse.Namespace) -> None:
    config = RespConfig(requirepass=args.requirepass)
    server = RespServer(LocalKV(), host=args.host, port=args.port, config=config)
    await server.start()
    print(f"peer-ring RESP server on {args.host}:{server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7379)
    parser.add_argument("--requirepass", default=None)
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    args = parser.parse_args()
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(_serve(args))
            return
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
