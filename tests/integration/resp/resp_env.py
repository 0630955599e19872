"""Helpers: a RespServer over LocalKV on a loopback alias, in the test's loop."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass

import pytest

from peer_ring.apps.kv.api import Limits
from peer_ring.apps.kv.local import LocalKV
from peer_ring.server.resp import RespConfig, RespServer

HOST = "127.0.0.61"
LIMITS = Limits(max_key_size=1024, max_value_size=64 * 1024)


@dataclass
class Running:
    server: RespServer
    kv: LocalKV
    host: str

    @property
    def port(self) -> int:
        return self.server.port


async def start_server(config: RespConfig | None = None) -> Running:
    kv = LocalKV(limits=LIMITS)
    server = RespServer(kv, host=HOST, port=0, config=config or RespConfig())
    await server.start()
    return Running(server, kv, HOST)


async def run_tool(
    *argv: str, stdin: bytes | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Run a command-line tool without blocking the loop the server runs in."""
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
