"""The RESP server driven by redis-cli and redis-benchmark subprocesses."""

from __future__ import annotations

import pytest
from resp_env import Running, run_tool

pytestmark = pytest.mark.integration


def cli(resp: Running, *args: str) -> tuple[str, ...]:
    return ("redis-cli", "-h", resp.host, "-p", str(resp.port), *args)


async def test_redis_cli_ping_set_get(resp: Running) -> None:
    assert (await run_tool(*cli(resp, "ping")))[1] == "PONG\n"
    assert (await run_tool(*cli(resp, "set", "foo", "bar baz")))[1] == "OK\n"
    assert (await run_tool(*cli(resp, "get", "foo")))[1] == "bar baz\n"
    rc, out, _ = await run_tool(*cli(resp, "--no-raw", "get", "foo"))
    assert rc == 0
    assert out == '"bar baz"\n'
    rc, out, _ = await run_tool(*cli(resp, "--no-raw", "get", "nothing"))
    assert out == "(nil)\n"
    rc, out, _ = await run_tool(*cli(resp, "-3", "--no-raw", "hello", "3"))
    assert "proto" in out
    assert "(integer) 3" in out


async def test_redis_cli_reports_errors(resp: Running) -> None:
    _, out, _ = await run_tool(*cli(resp, "nosuchcmd", "x"))
    assert "ERR unknown command 'nosuchcmd', with args beginning with: 'x'" in out


async def test_redis_cli_pipe_mode(resp: Running) -> None:
    body = b"".join(
        b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$1\r\nv\r\n" % (len(k), k)
        for k in (f"pipe:{i}".encode() for i in range(500))
    )
    rc, out, err = await run_tool(*cli(resp, "--pipe"), stdin=body)
    assert rc == 0, err
    assert "errors: 0, replies: 500" in out
    assert await resp.kv.count() == 500


@pytest.mark.parametrize("pipeline", ["1", "16"])
async def test_redis_benchmark_set_get_without_errors(resp: Running, pipeline: str) -> None:
    rc, out, err = await run_tool(
        "redis-benchmark",
        "-h", resp.host, "-p", str(resp.port),
        "-t", "set,get", "-n", "20000", "-c", "10", "-P", pipeline, "-q",
    )  # fmt: skip
    assert rc == 0, err
    final = [line for line in out.replace("\r", "\n").splitlines() if "requests per second" in line]
    assert any(line.startswith("SET:") for line in final), out
    assert any(line.startswith("GET:") for line in final), out
    assert "rror" not in out + err
    assert resp.server.stats.error_replies == 0
    assert resp.server.stats.per_command()["get"] >= 20000
