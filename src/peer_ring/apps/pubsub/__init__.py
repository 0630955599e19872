"""Cluster-wide publish/subscribe on the public app API (``docs/pubsub.md``).

``PubSub`` is the service (register it on a node): ``await
pubsub.publish(channel, data)`` returns the cluster-wide receiver count;
``async for msg in pubsub.subscribe("orders.*")`` receives :class:`Message`
objects (with a per-channel sequence number to see gaps).
"""

from peer_ring.apps.pubsub._glob import glob_match
from peer_ring.apps.pubsub._service import (
    Message,
    PubSub,
    PubSubConfig,
    SlowSubscriber,
    Subscriber,
    Subscription,
)

__all__ = [
    "Message",
    "PubSub",
    "PubSubConfig",
    "SlowSubscriber",
    "Subscriber",
    "Subscription",
    "glob_match",
]
