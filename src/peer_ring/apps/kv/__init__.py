"""The distributed key-value store application.

``KVStore`` is the replicated store (a Service plus the embedded API);
``LocalKV`` a single-process reference with the same semantics, for tests.
"""

from peer_ring.apps.kv.api import Entry, KVApi, Limits
from peer_ring.apps.kv.local import LocalKV
from peer_ring.apps.kv.store import KVConfig, KVStore, MergeFunction, Versions

__all__ = [
    "Entry",
    "KVApi",
    "KVConfig",
    "KVStore",
    "Limits",
    "LocalKV",
    "MergeFunction",
    "Versions",
]
