"""Replication: the subsystems that keep a key's N replicas in step.

``coordinator`` (quorum rounds), ``hints`` (hinted handoff), ``transfer``
(partition transfer on ring changes), ``antientropy`` (Merkle-tree sync) and
``bootstrap`` (a restarted replica's sync before it serves). Each depends on
the narrow :class:`peer_ring.cluster.Cluster` interface, never on the node;
``peer_ring.node`` wires them together. The pure algorithms they use live
below them: :mod:`peer_ring.versions`, :mod:`peer_ring.hlc`,
:mod:`peer_ring.merkle`.
"""
