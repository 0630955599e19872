"""How many examples a fuzz target runs: a bounded number in ``make test``,
many more with ``make fuzz`` (``PEER_RING_FUZZ_EXAMPLES``)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("PEER_RING_FUZZ_EXAMPLES", "300"))

#: Every fuzz target uses this: no deadline (the machine is shared; a hang is
#: caught by pytest-timeout instead), the example budget above.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=EXAMPLES <= 300,  # the bounded run is reproducible
)
