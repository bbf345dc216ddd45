"""The SessionStore conformance suite (tests/store_conformance.py) run against MemoryStore."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from livekit.plugins.metadata.sessions.memory import MemoryStore
from tests.store_conformance import StoreConformance

pytestmark = pytest.mark.unit


class FakeClock:
    """A settable clock; ``advance`` is awaitable to satisfy ``ExpiryControl``."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def advance(self, seconds: float) -> None:
        self.now += seconds


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
