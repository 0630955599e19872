"""peer_ring.replication"""
