"""The distributed key-value store application."""

from peer_ring.apps.kv.api import Entry, KVApi, Limits

__all__ = ["Entry", "KVApi", "Limits"]
