"""The rate limiter application.

:class:`RateLimiter` is the service (register it on a node); it decides each
key at the key's owner with the pure algorithms (``_algorithms``) over the
replicated state of a key and its join (``_merge``), through
:class:`LocalLimiter`, the single-node reference. Request/response types and
their validation are in ``_types``, named limits (Envoy-style descriptors)
in :mod:`~peer_ring.apps.ratelimit.descriptors`. See ``docs/ratelimit.md``.
"""

from peer_ring.apps.ratelimit._algorithms import cl_throttle
from peer_ring.apps.ratelimit._config import RateLimiterConfig
from peer_ring.apps.ratelimit._types import (
    Algorithm,
    Behavior,
    RateLimitRequest,
    RateLimitResponse,
    Status,
    check_limit,
    check_request,
)
from peer_ring.apps.ratelimit.descriptors import DescriptorLimit, Limits
from peer_ring.apps.ratelimit.limiter import Decision, DescriptorStatus, RateLimited, RateLimiter
from peer_ring.apps.ratelimit.local import LocalLimiter

__all__ = [
    "Algorithm",
    "Behavior",
    "Decision",
    "DescriptorLimit",
    "DescriptorStatus",
    "Limits",
    "LocalLimiter",
    "RateLimitRequest",
    "RateLimitResponse",
    "RateLimited",
    "RateLimiter",
    "RateLimiterConfig",
    "Status",
    "check_limit",
    "check_request",
    "cl_throttle",
]
