"""The endpoint's limits: MemoryLimits (in-process) and RedisLimits (shared through Redis).

MemoryLimits runs on an injected clock. RedisLimits runs against a real
``redis-server``; two clients on the same Redis play two endpoint replicas and
must together admit no more than one bucket's worth.
"""

from __future__ import annotations

import asyncio

import pytest

from livekit.plugins.metadata.errors import StoreUnavailable
from livekit.plugins.metadata.server.limits import (
    Bucket,
    Limits,
    MemoryLimits,
    RedisLimits,
    Reservation,
)
from livekit.plugins.metadata.sessions.redis import RedisStore
from tests.clock import FakeClock


async def _burst(
    limits: Limits, key: str, n: int, rate: float = 1.0, burst: int = 3
) -> list[float]:
    return [await limits.hit(key, rate, burst) for _ in range(n)]


class LimitsContract:
    """Behaviour both implementations share; ``limits`` and ``clock`` come from the subclass."""

    async def test_admit_takes_one_token_from_every_bucket_and_reserves(
        self, limits: Limits
    ) -> None:
        """Admitted: each bucket loses one token and the session is live."""
        buckets = [Bucket("principal:a", 1.0, 2), Bucket("peer:1", 1.0, 1)]
        first = await limits.admit(buckets, Reservation("s1", 60.0, 5))
        assert first.admitted
        assert await limits.hit("principal:a", 1.0, 2) == 0.0  # one of two tokens left
        assert await limits.hit("peer:1", 1.0, 1) > 0.0  # its only token was taken
        assert not await limits.reserve_session("s2", 60.0, 1)  # s1 is live

    async def test_admit_is_all_or_nothing(self, limits: Limits) -> None:
        """An empty bucket or a full cap refuses, and then takes and reserves nothing."""
        await limits.hit("peer:1", 1.0, 1)  # empty the peer bucket
        refused = await limits.admit(
            [Bucket("principal:a", 1.0, 1), Bucket("peer:1", 1.0, 1)], Reservation("s1", 60.0, 5)
        )
        assert not refused.admitted
        assert 0.0 < refused.wait <= 1.0
        assert await limits.hit("principal:a", 1.0, 1) == 0.0  # its token was not taken
        assert await limits.reserve_session("x", 60.0, 1)  # and s1 was not reserved
        full = await limits.admit([Bucket("principal:b", 1.0, 1)], Reservation("s2", 60.0, 1))
        assert full.full
        assert not full.admitted
        assert await limits.hit("principal:b", 1.0, 1) == 0.0  # untouched by the refusal

    async def test_admit_answers_the_longest_wait(self, limits: Limits) -> None:
        await limits.hit("a", 1.0, 1)
        await limits.hit("b", 0.25, 1)
        answer = await limits.admit([Bucket("a", 1.0, 1), Bucket("b", 0.25, 1)])
        assert 3.0 < answer.wait <= 4.0
        assert (await limits.admit([])).admitted

    async def test_a_fresh_bucket_admits_exactly_burst_then_says_how_long_to_wait(
        self, limits: Limits
    ) -> None:
        """Burst 3 at 2/s: three admitted, the fourth waits half a second."""
        waits = [await limits.hit("p", 2.0, 3) for _ in range(4)]
        assert waits[:3] == [0.0, 0.0, 0.0]
        assert waits[3] == pytest.approx(0.5, abs=1e-3)

    async def test_the_bucket_refills_at_rate(self, limits: Limits, clock: FakeClock) -> None:
        """After the wait it announced, the next request is admitted, and only one."""
        waits = await _burst(limits, "p", 4, rate=4.0, burst=2)
        assert waits[2] > 0.0
        clock.tick(waits[2])
        assert await limits.hit("p", 4.0, 2) == 0.0
        assert await limits.hit("p", 4.0, 2) > 0.0

    async def test_keys_have_separate_buckets(self, limits: Limits) -> None:
        """Exhausting one key leaves another untouched."""
        await _burst(limits, "a", 5)
        assert await limits.hit("b", 1.0, 3) == 0.0

    async def test_a_refused_request_takes_no_token(self, limits: Limits, clock: FakeClock) -> None:
        """Hammering a drained bucket does not push the next admission further out."""
        await _burst(limits, "p", 1, rate=1.0, burst=1)
        first = await limits.hit("p", 1.0, 1)
        for _ in range(10):
            await limits.hit("p", 1.0, 1)
        again = await limits.hit("p", 1.0, 1)
        assert first == pytest.approx(again, abs=1e-3)
        clock.tick(first)
        assert await limits.hit("p", 1.0, 1) == 0.0

    async def test_reserve_counts_live_sessions_up_to_the_cap(self, limits: Limits) -> None:
        """Two of two admitted, the third refused."""
        assert await limits.reserve_session("s1", 60.0, 2)
        assert await limits.reserve_session("s2", 60.0, 2)
        assert not await limits.reserve_session("s3", 60.0, 2)

    async def test_a_full_cap_evicts_nothing(self, limits: Limits) -> None:
        """The refusal leaves the live sessions live: re-reserving them still succeeds."""
        assert await limits.reserve_session("s1", 60.0, 1)
        assert not await limits.reserve_session("s2", 60.0, 1)
        assert await limits.reserve_session("s1", 60.0, 1)
        assert not await limits.reserve_session("s2", 60.0, 1)

    async def test_an_expired_reservation_frees_its_place(
        self, limits: Limits, clock: FakeClock
    ) -> None:
        """After ``ttl`` a session no longer counts."""
        assert await limits.reserve_session("s1", 10.0, 1)
        clock.tick(9.0)
        assert not await limits.reserve_session("s2", 10.0, 1)
        clock.tick(1.5)
        assert await limits.reserve_session("s2", 10.0, 1)

    async def test_re_reserving_refreshes_the_expiry(
        self, limits: Limits, clock: FakeClock
    ) -> None:
        """A refreshed session is still live after its first ttl."""
        assert await limits.reserve_session("s1", 10.0, 1)
        clock.tick(8.0)
        assert await limits.reserve_session("s1", 10.0, 1)
        clock.tick(8.0)
        assert not await limits.reserve_session("s2", 10.0, 1)

    async def test_release_frees_a_place_and_tolerates_unknown_ids(self, limits: Limits) -> None:
        """Released sessions stop counting; releasing an unknown id is a no-op."""
        assert await limits.reserve_session("s1", 60.0, 1)
        await limits.release_session("s1")
        await limits.release_session("never-reserved")
        assert await limits.reserve_session("s2", 60.0, 1)

    @pytest.mark.parametrize(
        ("rate", "burst"),
        [
            pytest.param(0.0, 1, id="zero-rate"),
            pytest.param(float("inf"), 1, id="inf-rate"),
            pytest.param(1.0, 0, id="zero-burst"),
            pytest.param(1.0, True, id="bool-burst"),
        ],
    )
    async def test_bad_bucket_arguments_raise_value_error(
        self, limits: Limits, rate: float, burst: int
    ) -> None:
        """Bad configuration is refused before anything is stored."""
        with pytest.raises(ValueError, match=r"rate|burst"):
            await limits.hit("p", rate, burst)

    @pytest.mark.parametrize(
        ("session_id", "ttl", "cap"),
        [
            pytest.param("", 1.0, 1, id="empty-id"),
            pytest.param("s", 0.0, 1, id="zero-ttl"),
            pytest.param("s", float("nan"), 1, id="nan-ttl"),
            pytest.param("s", 1.0, 0, id="zero-cap"),
        ],
    )
    async def test_bad_reservation_arguments_raise_value_error(
        self, limits: Limits, session_id: str, ttl: float, cap: int
    ) -> None:
        """Bad arguments are refused before anything is stored."""
        with pytest.raises(ValueError, match=r"session_id|ttl|max_sessions"):
            await limits.reserve_session(session_id, ttl, cap)

    async def test_an_owner_share_caps_its_sessions_all_or_nothing(self, limits: Limits) -> None:
        """#22.1: an owner at its share is refused (owner_full), nothing taken; another
        owner still fits; a release frees a place in the share."""
        bucket = [Bucket("principal:a", 1.0, 10)]
        for sid in ("s1", "s2"):
            assert (await limits.admit(bucket, Reservation(sid, 60.0, 10, "a", 2))).admitted
        refused = await limits.admit(bucket, Reservation("s3", 60.0, 10, "a", 2))
        assert refused.owner_full
        assert not refused.full
        assert not refused.admitted
        assert await limits.hit("principal:a", 1.0, 10) == 0.0  # 7 left: s3 took no token
        assert (await limits.admit([], Reservation("s4", 60.0, 10, "b", 2))).admitted
        await limits.release_session("s1", "a")
        assert (await limits.admit([], Reservation("s5", 60.0, 10, "a", 2))).admitted
        full = await limits.admit([], Reservation("s6", 60.0, 3, "c", 2))
        assert full.full  # the cap still holds: s2, s4, s5 are live


@pytest.mark.unit
@pytest.mark.clock(1_000.0)
class TestMemoryLimits(LimitsContract):
    @pytest.fixture
    def limits(self, clock: FakeClock) -> MemoryLimits:
        return MemoryLimits(clock=clock)

    async def test_the_bucket_table_is_bounded(self, clock: FakeClock) -> None:
        """Beyond ``max_buckets`` the oldest bucket is dropped (it starts full again)."""
        limits = MemoryLimits(clock=clock, max_buckets=2)
        await _burst(limits, "a", 4)
        await limits.hit("b", 1.0, 3)
        await limits.hit("c", 1.0, 3)
        assert repr(limits) == "MemoryLimits(buckets=2, sessions=0)"
        assert await limits.hit("a", 1.0, 3) == 0.0

    async def test_refreshed_ids_do_not_grow_the_expiry_heap_without_bound(
        self, limits: MemoryLimits
    ) -> None:
        """A thousand refreshes of one id leave one live session and a small heap."""
        for _ in range(1000):
            assert await limits.reserve_session("s", 60.0, 1)
        assert await limits.live_sessions() == 1
        assert len(limits._expiries) <= 2 + 64


@pytest.mark.integration
@pytest.mark.clock(1_700_000_000.0)
@pytest.mark.store("redis")
class TestRedisLimits(LimitsContract):
    @pytest.fixture
    def limits(self, store: RedisStore, clock: FakeClock) -> RedisLimits:
        return RedisLimits.from_store(store, clock=clock)

    async def test_keys_are_namespaced_apart_from_sessions(
        self, store: RedisStore, limits: RedisLimits
    ) -> None:
        """``lkmeta:`` sessions, ``lkmeta-limits:`` limits: no session id can reach a limit key."""
        assert limits.prefix == "lkmeta-limits:"
        await limits.hit("p", 1.0, 1)
        await limits.reserve_session("s", 60.0, 1)
        keys = sorted(k.decode() for k in await store.client.keys("*"))
        assert keys == ["lkmeta-limits:{limits}rate:p", "lkmeta-limits:{limits}sessions"]

    async def test_keys_expire_by_themselves(self, store: RedisStore, limits: RedisLimits) -> None:
        """A bucket key lives until it would be full again; the session set until its last expiry."""
        await limits.hit("p", 2.0, 4)
        await limits.reserve_session("s", 30.0, 1)
        rate_ttl = await store.client.pttl("lkmeta-limits:{limits}rate:p")
        sessions_ttl = await store.client.pttl("lkmeta-limits:{limits}sessions")
        assert 0 < rate_ttl <= 502
        assert 29_000 < sessions_ttl <= 30_001

    async def test_two_replicas_share_one_bucket_and_one_cap(
        self, redis_url: str, clock: FakeClock
    ) -> None:
        """Two clients (two endpoint replicas) together admit burst, not twice burst."""
        a, b = RedisStore.from_url(redis_url), RedisStore.from_url(redis_url)
        try:
            la, lb = RedisLimits.from_store(a, clock=clock), RedisLimits.from_store(b, clock=clock)
            waits = await asyncio.gather(*(lim.hit("principal", 1.0, 5) for lim in (la, lb) * 10))
            assert sum(1 for w in waits if w == 0.0) == 5
            assert await la.reserve_session("s1", 60.0, 1)
            assert not await lb.reserve_session("s2", 60.0, 1)
            assert await lb.live_sessions() == 1
        finally:
            await a.aclose()
            await b.aclose()

    async def test_two_replicas_on_redis_time_admit_at_most_rate_plus_burst(
        self, redis_url: str
    ) -> None:
        """On the server's own clock, two replicas hammering for a bounded time admit
        at most ``burst + rate x elapsed`` (+1 for the refill in flight)."""
        a, b = RedisStore.from_url(redis_url), RedisStore.from_url(redis_url)
        rate, burst = 20.0, 5
        try:
            la, lb = RedisLimits.from_store(a), RedisLimits.from_store(b)
            loop = asyncio.get_running_loop()
            start = loop.time()
            admitted = 0

            async def hammer(lim: RedisLimits) -> None:
                nonlocal admitted
                for _ in range(300):
                    if await lim.hit("shared", rate, burst) == 0.0:
                        admitted += 1

            await asyncio.gather(hammer(la), hammer(lb))
            elapsed = loop.time() - start
            assert burst <= admitted <= burst + rate * elapsed + 1
        finally:
            await a.aclose()
            await b.aclose()

    @pytest.mark.parametrize("corrupt", ["1e30", "inf", "nan", "abc", "-1", "9e999"])
    async def test_a_corrupt_bucket_reads_as_empty_and_is_repaired(
        self, store: RedisStore, limits: RedisLimits, corrupt: str
    ) -> None:
        """#22.3: never a free pass: refused with a bounded wait, rewritten finite, counted."""
        key = "lkmeta-limits:{limits}rate:p"
        await store.client.set(key, corrupt)
        assert 0.0 < await limits.hit("p", 1.0, 3) <= 1.0
        assert float(await store.client.get(key)) < 1e20
        await store.client.set(key, corrupt)
        answer = await limits.admit([Bucket("p", 1.0, 3)], Reservation("s", 60.0, 5))
        assert not answer.admitted
        assert 0.0 < answer.wait <= 1.0
        assert await limits.live_sessions() == 0
        assert limits.corrupt_values == 2

    async def test_a_tiny_rate_never_overflows_into_a_free_pass(self, limits: RedisLimits) -> None:
        """A wait beyond what Redis's integers hold is capped, never read as no wait."""
        assert await limits.hit("slow", 1e-30, 1) == 0.0
        assert await limits.hit("slow", 1e-30, 1) > 0.0
        assert not (await limits.admit([Bucket("slow", 1e-30, 1)])).admitted

    async def test_an_unreachable_redis_raises_store_unavailable_without_the_password(
        self, redis_server_factory: object
    ) -> None:
        """A dead server gives StoreUnavailable naming the redacted URL."""
        server = redis_server_factory(extra_args=["--requirepass", "s3cret-pw"])  # type: ignore[operator]
        store = RedisStore.from_url(server.url, timeout=1.0)
        try:
            limits = RedisLimits.from_store(store)
            assert await limits.hit("p", 1.0, 1) == 0.0
            server.kill()
            with pytest.raises(StoreUnavailable) as info:
                await limits.hit("p", 1.0, 1)
            assert "s3cret-pw" not in str(info.value)
            assert "127.0.0.1" in str(info.value)
            assert info.value.__cause__ is None
        finally:
            await store.aclose()
