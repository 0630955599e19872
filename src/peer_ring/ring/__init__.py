"""peer_ring.ring"""
