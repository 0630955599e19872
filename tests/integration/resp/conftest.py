"""Fixtures of the RESP integration tests (helpers live in resp_env.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from resp_env import Running, start_server


@pytest.fixture
async def resp() -> AsyncIterator[Running]:
    running = await start_server()
    yield running
    await running.server.close()
