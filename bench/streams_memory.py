"""Memory per stream entry and per pending entry of the streams core (docs/streams.md).

    .venv/bin/python bench/streams_memory.py [--entries 100000]

Measures with tracemalloc the bytes a stream replica holds per entry (two
fields, 17 bytes of payload) and per pending-entry cell of a consumer group.
Pure computation: no node, no network.
"""

from __future__ import annotations

import argparse
import tracemalloc

from peer_ring.apps.streams import _state as S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    n = parser.parse_args().entries
    fields = [[b"field", b"value-%06d" % (i % 1_000_000)] for i in range(n)]
    payload = sum(len(a) + len(b) for a, b in fields) / n
    s = S.Stream()
    tracemalloc.start()
    for i, f in enumerate(fields):
        S.xadd(s, f, b"*", 1_700_000_000_000 + i // 3)
    per_entry = tracemalloc.get_traced_memory()[0] / n
    tracemalloc.stop()
    S.group_create(s, b"g", S.MIN_ID, None)
    g = S.get_group(s, b"g")
    assert g is not None
    tracemalloc.start()
    S.read_new(s, b"g", g, b"consumer", None, False, 1)
    per_pending = tracemalloc.get_traced_memory()[0] / n
    tracemalloc.stop()
    print(f"entries: {n}, payload per entry: {payload:.0f} B")
    print(f"stream replica: {per_entry:.0f} B per entry ({per_entry - payload:.0f} B overhead)")
    print(f"consumer group: {per_pending:.0f} B per pending entry")


if __name__ == "__main__":
    main()
