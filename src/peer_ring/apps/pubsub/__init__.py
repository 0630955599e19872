"""peer_ring.apps.pubsub"""
