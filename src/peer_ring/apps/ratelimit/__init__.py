"""The rate limiter application.

Pure foundations so far: the algorithms (``_algorithms``), the replicated
state of a key and its join (``_merge``), request/response types and their
validation (``_types``), and :class:`LocalLimiter`, the single-node
reference the distributed limiter calls at a key's owner. See
``docs/ratelimit.md``.
"""

from peer_ring.apps.ratelimit._algorithms import cl_throttle
from peer_ring.apps.ratelimit._types import (
    Algorithm,
    Behavior,
    RateLimitRequest,
    RateLimitResponse,
    Status,
    check_limit,
    check_request,
)
from peer_ring.apps.ratelimit.local import LocalLimiter

__all__ = [
    "Algorithm",
    "Behavior",
    "LocalLimiter",
    "RateLimitRequest",
    "RateLimitResponse",
    "Status",
    "check_limit",
    "check_request",
    "cl_throttle",
]
