"""The peer protocol's version history is documented where operators read it.

``docs/operations/upgrades.md`` tells operators which versions refuse each
other; its table fell four versions behind once. Every version up to
``wire.PROTOCOL_VERSION`` has a row there, in order, and the changelog's
top note names the current one.
"""

from __future__ import annotations

import re
from pathlib import Path

from peer_ring.wire import PROTOCOL_VERSION

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (\d+) \|", re.MULTILINE)


def test_the_upgrades_table_has_a_row_per_protocol_version() -> None:
    text = (ROOT / "docs" / "operations" / "upgrades.md").read_text()
    assert [int(v) for v in ROW.findall(text)] == list(range(1, PROTOCOL_VERSION + 1))


def test_the_changelog_names_the_current_protocol_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    unreleased = text[text.index("## [Unreleased]") :]
    unreleased = unreleased[: unreleased.index("\n## [", 1)]
    assert f"**Peer protocol version {PROTOCOL_VERSION}**" in unreleased


def test_the_row_pattern_reads_table_rows_only() -> None:
    assert ROW.findall("| 3 | x |\n| version | y |\ntext | 4 |\n| 12 | z |") == ["3", "12"]
