"""The SessionStore conformance suite (tests/store_conformance.py) run on every backend.

* ``MemoryStore`` (unit tier, fake clock).
* ``RedisStore`` (integration tier, real servers started by fixtures) on a single
  server, on a 3-master Redis Cluster with replicas, and behind Sentinel (1 master,
  1 replica, 3 sentinels); on the cluster and behind Sentinel also with
  ``durability="wait"``. Redis expires keys in real time, so its expiry tests sleep.
"""

from __future__ import annotations

import asyncio

import pytest

from livekit.plugins.metadata.sessions.redis import RedisStore
from livekit.plugins.metadata.sessions.store import SessionStore
from tests.fixtures.fakes import REDIS_KINDS
from tests.store_conformance import StoreConformance


@pytest.mark.unit
class TestMemoryStoreConformance(StoreConformance):
    """``store`` and ``clock``: the suite's fixtures (a MemoryStore on the fake clock)."""

    TTL = 60.0


class _RealTime:
    """Redis expires in real time: advancing the clock is sleeping."""

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@pytest.mark.integration
@pytest.mark.parametrize("store", sorted(REDIS_KINDS), indirect=True)
class TestRedisStoreConformance(StoreConformance):
    TTL = 0.5  # expiry tests sleep multiples of this; far above a loopback round trip
    CLEANUP_COUNTS = False  # native expiry: cleanup() returns 0
    AGE_CLEANUP = False  # Redis keeps no last-write time

    @pytest.fixture
    def clock(self) -> _RealTime:
        return _RealTime()

    async def reopen(self, store: SessionStore) -> SessionStore | None:
        assert isinstance(store, RedisStore)
        return RedisStore.from_url(store.url)  # the test servers have no password
