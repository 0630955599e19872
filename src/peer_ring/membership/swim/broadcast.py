"""Transmit-limited broadcast queue (SWIM's infection-style dissemination).

Each membership update is piggybacked on outgoing packets until it has been
sent ``limit = retransmit_mult * ceil(log10(N + 1))`` times; updates sent
fewest times go first, newest first among equals. A newer update about a
member replaces the queued older one (keyed by member id), so the queue holds
at most one update per member.
"""

from __future__ import annotations

import itertools


class BroadcastQueue:
    def __init__(self) -> None:
        # key -> [transmits, -order, payload]
        self._items: dict[str, list[object]] = {}
        self._order = itertools.count()

    def queue(self, key: str, payload: bytes) -> None:
        self._items[key] = [0, -next(self._order), payload]

    def take(self, budget: int, limit: int, overhead: int = 0) -> list[bytes]:
        """Up to ``budget`` bytes of updates (each costing ``len + overhead``)."""
        if not self._items:
            return []
        out: list[bytes] = []
        used = 0
        ranked = sorted(self._items.items(), key=lambda kv: (kv[1][0], kv[1][1]))
        for key, item in ranked:
            payload = item[2]
            assert isinstance(payload, bytes)
            cost = len(payload) + overhead
            if used + cost > budget:
                continue
            used += cost
            out.append(payload)
            sent = int(item[0]) + 1  # type: ignore[call-overload]
            if sent >= limit:
                del self._items[key]
            else:
                item[0] = sent
        return out

    def __len__(self) -> int:
        return len(self._items)
