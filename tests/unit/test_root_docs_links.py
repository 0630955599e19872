"""Relative links in the repository's root documents point at files that exist.

The site's strict build checks every link under docs/; the root files
(README.md, CONTRIBUTING.md, ...) are read on the repository host, where a
moved or renamed page would otherwise leave a dead link.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = ["README.md", "CONTRIBUTING.md", "SECURITY.md", "CODE_OF_CONDUCT.md", "CHANGELOG.md"]
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("name", FILES)
def test_relative_links_resolve(name: str) -> None:
    text = (ROOT / name).read_text()
    targets = [t for t in LINK.findall(text) if "://" not in t and not t.startswith("mailto:")]
    assert [t for t in targets if not (ROOT / t).exists()] == []


def test_the_checker_sees_links() -> None:
    assert LINK.findall("see [a](docs/kv.md#x) and [b](https://x.org)") == [
        "docs/kv.md",
        "https://x.org",
    ]
