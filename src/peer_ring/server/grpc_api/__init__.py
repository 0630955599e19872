"""gRPC client APIs of a node: gubernator's V1 and Envoy's RateLimitService.

``protos/`` holds the .proto sources and the Python modules generated from
them (``make protos``); :mod:`~peer_ring.server.grpc_api.server` serves them.
"""
