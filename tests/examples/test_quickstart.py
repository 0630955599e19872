"""The quick start tutorial (docs/tutorials/quickstart.md) runs as written.

The page includes its commands from examples/quickstart.sh, and this test runs
that script: three nodes, redis-cli, `peer-ring status`, kill -9 and restart.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli not installed")
def test_quickstart_script_runs_as_the_tutorial_shows(
    examples: Path, env: dict[str, str], tmp_path: Path
) -> None:
    env.update(PREFIX="127.0.190", WORKDIR=str(tmp_path), COLUMNS="200")
    done = subprocess.run(
        ["bash", str(examples / "quickstart.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(tmp_path.glob("*.log")))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logs}"
    lines = done.stdout.splitlines()
    assert "hello, ring" in lines  # written on n1, read on n3
    assert lines[-1] == "hello again"  # the write n3 missed, read on n3 after its restart
    tables = [line for line in lines if line.startswith("│ n3 ")]
    assert [row.split("│")[4].strip() for row in tables] == ["up", "down", "up"]
    assert sorted(p.name for p in tmp_path.glob("*.log")) == ["n1.log", "n2.log", "n3.log"]
