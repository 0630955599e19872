"""The layer contracts of ``make lint`` can fail: import-linter on a copy of the
package with one rogue import added must name the contract it breaks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(tmp_path: Path, rogue: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Copy src/peer_ring to ``tmp_path``, write ``rogue`` files into it, run lint-imports."""
    shutil.copytree(ROOT / "src" / "peer_ring", tmp_path / "peer_ring",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for rel, text in rogue.items():
        path = tmp_path / "peer_ring" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is installed by `make venv`")
def test_the_real_tree_keeps_every_contract(tmp_path: Path) -> None:
    done = _lint(tmp_path, {})
    assert done.returncode == 0, done.stdout[-2000:]
    assert "BROKEN" not in done.stdout


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is installed by `make venv`")
@pytest.mark.parametrize(
    ("rogue", "contract"),
    [
        (
            {"apps/rogue/__init__.py": "from peer_ring.node import Node\n"},
            "Apps use the public API only",
        ),
        (
            {"apps/rogue/__init__.py": "from peer_ring.transport._core import ChannelTransport\n"},
            "Apps use the public API only",
        ),
        (
            {
                "replication/rogue.py": (
                    "from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n    from peer_ring.node import Node\n"
                )
            },
            "Replication depends on the Cluster interface, never on the node",
        ),
        ({"ring/rogue.py": "import asyncio\n"}, "Pure modules"),
        ({"wire_rogue_helper.py": ""}, None),  # an unrelated new module breaks nothing
    ],
)
def test_a_rogue_import_fails_lint_naming_its_contract(
    tmp_path: Path, rogue: dict[str, str], contract: str | None
) -> None:
    done = _lint(tmp_path, rogue)
    if contract is None:
        assert done.returncode == 0, done.stdout[-2000:]
        return
    assert done.returncode == 1, done.stdout[-2000:]
    broken = done.stdout[done.stdout.index("Broken contracts") :]
    assert contract in broken
