"""Run one SWIM agent: ``python -m peer_ring.membership.swim --id n1 --bind 127.0.0.2:0``.

A small harness for integration tests and demos until ``peer-ring node``
wires SWIM in. It prints JSON lines on stdout:

* ``{"type": "ready", "id": ..., "gossip": "host:port"}`` once joined;
* ``{"type": "event", "kind": "join|update|suspect|alive|dead|leave", "id": ..., "state": ...,
  "incarnation": ...}`` for every membership event;
* ``{"type": "view", "members": [...ids]}`` whenever the published view changes;
* ``{"type": "stats", ...}`` on SIGUSR1 (packet counters, drops by reason);
* ``{"type": "stopped"}`` after a graceful leave on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from peer_ring.errors import PeerRingError
from peer_ring.membership.base import Member, parse_address
from peer_ring.membership.swim.config import SwimConfig
from peer_ring.membership.swim.discovery import SwimDiscovery
from peer_ring.membership.swim.keyring import Keyring


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m peer_ring.membership.swim")
    p.add_argument("--id", required=True, help="member id")
    p.add_argument("--bind", required=True, help="gossip HOST:PORT (port 0: any free port)")
    p.add_argument("--address", help="peer transport HOST:PORT carried in the member record")
    p.add_argument("--seed", action="append", default=[], help="gossip HOST:PORT of a seed")
    p.add_argument("--preset", default="local", choices=["local", "lan", "wan"])
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a SwimConfig field (float/int/bool)",
    )
    p.add_argument("--key", action="append", default=[], help="hex AES key; first is primary")
    p.add_argument("--label", default="", help="cluster label")
    p.add_argument("--life", type=int, default=0, help="Member.incarnation (restart counter)")
    return p


def _overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, _, text = item.partition("=")
        value: Any
        if text in ("true", "false"):
            value = text == "true"
        else:
            try:
                value = int(text)
            except ValueError:
                value = float(text)
        out[name] = value
    return out


async def _run(args: argparse.Namespace) -> int:
    config = SwimConfig.preset(args.preset, **_overrides(args.set))
    keyring = Keyring.from_hex(args.key) if args.key else None
    bind_host, bind_port = parse_address(args.bind)
    disc = SwimDiscovery(
        config,
        bind=(bind_host, bind_port),
        seeds=args.seed,
        keyring=keyring,
        label=args.label,
    )
    gossip = await disc.open()
    address = args.address or f"{bind_host}:{gossip[1] + 1 if gossip[1] < 65535 else 1}"
    local = Member(args.id, address, incarnation=args.life)
    events = disc.events()

    async def print_events() -> None:
        async for ev in events:
            _emit(
                {
                    "type": "event",
                    "kind": ev.kind.value,
                    "id": ev.id,
                    "state": ev.status.state.label,
                    "incarnation": ev.status.incarnation,
                    "life": ev.status.member.incarnation,
                }
            )

    async def print_views() -> None:
        async for view in disc.subscribe():
            _emit({"type": "view", "members": sorted(view)})

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: _emit({"type": "stats", **disc.stats}))
    ev_task = loop.create_task(print_events())
    await disc.start(local)
    _emit({"type": "ready", "id": args.id, "gossip": disc.gossip_address})
    view_task = loop.create_task(print_views())
    await stop.wait()
    await disc.stop()
    await ev_task
    view_task.cancel()
    _emit({"type": "stopped", "id": args.id})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except PeerRingError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
