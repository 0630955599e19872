"""peer_ring.transport"""
