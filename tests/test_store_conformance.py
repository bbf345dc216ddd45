"""The SessionStore conformance suite (tests/store_conformance.py) run on every backend.

* ``MemoryStore`` (unit tier, fake clock).
* ``RedisStore`` (integration tier, real servers started by fixtures) on a single
  server, on a 3-master Redis Cluster with replicas, and behind Sentinel (1 master,
  1 replica, 3 sentinels); on the cluster and behind Sentinel also with
  ``durability="wait"``. Redis expires keys in real time, so its expiry tests sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from livekit.plugins.metadata.sessions.memory import MemoryStore
from livekit.plugins.metadata.sessions.redis import RedisStore
from tests.clock import FakeClock
from tests.store_conformance import StoreConformance


@pytest.mark.unit
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


class _RealTime:
    """Redis expires in real time: advancing the clock is sleeping."""

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


_TOPOLOGIES = [
    pytest.param(("redis_url", "primary"), id="single"),
    pytest.param(("redis_cluster_url", "primary"), id="cluster"),
    pytest.param(("redis_cluster_url", "wait"), id="cluster-wait"),
    pytest.param(("redis_sentinel_url", "primary"), id="sentinel"),
    pytest.param(("redis_sentinel_url", "wait"), id="sentinel-wait"),
]


@pytest.mark.integration
class TestRedisStoreConformance(StoreConformance):
    TTL = 0.5  # expiry tests sleep multiples of this; far above a loopback round trip
    CLEANUP_COUNTS = False  # native expiry: cleanup() returns 0
    AGE_CLEANUP = False  # Redis keeps no last-write time

    @pytest.fixture
    def clock(self) -> _RealTime:
        return _RealTime()

    @pytest.fixture(params=_TOPOLOGIES)
    async def store(self, request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
        url_fixture, durability = request.param
        s = RedisStore.from_url(request.getfixturevalue(url_fixture), durability=durability)
        yield s
        await s.aclose()
