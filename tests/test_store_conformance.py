"""The SessionStore conformance suite (tests/store_conformance.py) run against MemoryStore."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from livekit.plugins.metadata.sessions.memory import MemoryStore
from tests.clock import FakeClock
from tests.store_conformance import StoreConformance

pytestmark = pytest.mark.unit


class TestMemoryStoreConformance(StoreConformance):
    TTL = 60.0

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    async def store(self, clock: FakeClock) -> AsyncIterator[MemoryStore]:
        s = MemoryStore(clock=clock)
        yield s
        await s.aclose()
