"""Fixtures of the tutorial tests: the examples/ directory and a PATH with our tools."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def examples() -> Path:
    return EXAMPLES


@pytest.fixture
def env() -> dict[str, str]:
    """The environment a reader has: ``peer-ring`` and this Python first on PATH."""
    bindir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
