"""Run redis-py's own pub/sub and stream tests against a 3-node peer-ring cluster.

    make redis-py-tests                      # in a private network namespace
    .venv/bin/python tools/redis_py_tests.py [--version 8.1.0] [-- extra pytest args]

Takes the tests from redis-py's source distribution on PyPI (``pip download
--no-binary :all: redis==VERSION``: it ships its tests; nothing is
vendored here), starts three nodes (``LocalCluster``, N=3, RESP on
127.0.49.x:6379), and runs ``tests/test_pubsub.py``,
``tests/test_asyncio/test_pubsub.py`` and the stream tests of
``tests/test_commands.py`` (``-k "test_x"``) against node 1. Every test
listed in ``tests/redis_py_skips.txt`` is deselected; that file says why,
one line each. Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
from pathlib import Path

from peer_ring.testing.cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "redis-py"
SKIPS = ROOT / "tests" / "redis_py_skips.txt"
SUITES = [
    ("tests/test_pubsub.py", None),
    ("tests/test_asyncio/test_pubsub.py", None),
    ("tests/test_commands.py", "test_x"),
]


def sdist(version: str) -> Path:
    """The extracted sdist of redis-py ``version`` (downloaded once)."""
    target = WORK / f"redis-{version}"
    if target.is_dir():
        return target
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
         f"redis=={version}", "-d", str(WORK)],
        check=True,
    )  # fmt: skip
    with tarfile.open(WORK / f"redis-{version}.tar.gz") as tar:
        tar.extractall(WORK, filter="data")
    return target


def skips() -> list[str]:
    """Test ids to deselect: the first field of each non-comment line."""
    out = []
    for line in SKIPS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line.split()[0])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="8.1.0")
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    src = sdist(args.version)
    with LocalCluster(3, subnet="127.0.49", resp_port=6379, artefacts=WORK / "cluster") as c:
        url = f"redis://{c['n1'].ip}:6379"
        code = 0
        for path, k in SUITES:
            cmd = [
                sys.executable, "-m", "pytest", path, f"--redis-url={url}",
                "-p", "no:cacheprovider", "-q", "-rfEs", "--timeout=60", "-o", "addopts=",
            ]  # fmt: skip
            if k:
                cmd += ["-k", k]
            for test in skips():
                if test.startswith(path):
                    cmd += ["--deselect", test]
            cmd += args.pytest_args
            print("$", " ".join(cmd), flush=True)
            code = max(code, subprocess.run(cmd, cwd=src).returncode)
        return code


if __name__ == "__main__":
    sys.exit(main())
