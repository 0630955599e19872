"""``python -m peer_ring`` is the ``peer-ring`` command."""

from peer_ring.cli import main

main()
