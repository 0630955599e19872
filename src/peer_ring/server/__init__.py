"""peer_ring.server"""
