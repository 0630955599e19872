"""Replicated streams with consumer groups (Redis Streams semantics) on the public app API.

``Streams`` is the service (register it on a node); its embedded API is
``await streams.add(key, fields)``, ``streams.group(key, name)`` with
``create``, ``read``, ``consume`` (an async iterator of :class:`Entry`,
acknowledged with ``await entry.ack()``), ``ack``, ``claim``. The design,
guarantees and merge rules are in ``docs/streams.md``.
"""

from peer_ring.apps.streams._service import Entry, GroupHandle, StreamCommandError, Streams

__all__ = ["Entry", "GroupHandle", "StreamCommandError", "Streams"]
