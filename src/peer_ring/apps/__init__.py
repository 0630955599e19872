"""peer_ring.apps"""
