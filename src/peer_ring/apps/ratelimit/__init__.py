"""peer_ring.apps.ratelimit"""
