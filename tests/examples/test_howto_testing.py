"""The how-to "Test against real processes and faults" includes
examples/memory_cluster_test.py; this runs that example's test as it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_memory_cluster_example_passes(examples: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(examples / "memory_cluster_test.py")],
        capture_output=True, text=True, timeout=120, check=False, cwd=examples.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
