"""ScriptBatch on a real redis-server: calls pipelined on one held connection, replies in order.

A script the server forgot (``SCRIPT FLUSH``, as after a restart) is loaded once
and its calls sent again; one call's error reaches only its caller; a server
that is gone or silent fails every waiting caller; after a Sentinel failover the
connection is replaced; a one-connection pool is never held.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions

from livekit.plugins.metadata.errors import StoreUnavailable
from livekit.plugins.metadata.server.limits import Bucket, RedisLimits
from livekit.plugins.metadata.sessions.redis import RedisStore
from livekit.plugins.metadata.sessions.redis_batch import ScriptBatch
from tests.fixtures.redis_sentinel import RedisSentinel

pytestmark = pytest.mark.integration

ECHO = "return {KEYS[1], ARGV[1]}"
FAIL_ON_BOOM = "if ARGV[1] == 'boom' then return redis.error_reply('BOOM') end return ARGV[1]"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    c = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield c
    finally:
        await c.aclose()


async def _commands(client: redis.asyncio.Redis, name: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


async def test_concurrent_calls_share_a_pipeline_and_get_their_own_replies(
    client: redis.asyncio.Redis,
) -> None:
    batch = ScriptBatch(client, 5.0)
    echo = client.register_script(ECHO)
    await client.script_load(ECHO)
    replies = await asyncio.gather(*(batch.run(echo, [f"k{i}"], [i]) for i in range(50)))
    assert replies == [[f"k{i}".encode(), str(i).encode()] for i in range(50)]


async def test_a_forgotten_script_is_loaded_once_and_every_call_answered(
    client: redis.asyncio.Redis,
) -> None:
    batch = ScriptBatch(client, 5.0)
    echo = client.register_script(ECHO)
    await client.script_flush()
    await client.config_resetstat()
    replies = await asyncio.gather(*(batch.run(echo, ["k"], [i]) for i in range(10)))
    assert [r[1] for r in replies] == [str(i).encode() for i in range(10)]
    assert await _commands(client, "script|load") == 1
    assert await _commands(client, "evalsha") == 20  # 10 refused with NOSCRIPT, 10 answered


async def test_one_calls_error_reaches_only_that_caller(client: redis.asyncio.Redis) -> None:
    batch = ScriptBatch(client, 5.0)
    script = client.register_script(FAIL_ON_BOOM)
    await client.script_load(FAIL_ON_BOOM)
    results = await asyncio.gather(
        batch.run(script, [], ["a"]),
        batch.run(script, [], ["boom"]),
        batch.run(script, [], ["c"]),
        return_exceptions=True,
    )
    assert results[0] == b"a"
    assert results[2] == b"c"
    assert isinstance(results[1], redis.exceptions.ResponseError)
    assert "BOOM" in str(results[1])


@contextlib.asynccontextmanager
async def _warm_limits(server: Any, timeout: float) -> AsyncIterator[RedisLimits]:
    """Limits on ``server``'s own store, their held connection already used once."""
    store = RedisStore.from_url(server.url, timeout=timeout)
    try:
        limits = RedisLimits.from_store(store)
        assert await limits.hit("k", 10.0, 10) == 0.0
        yield limits
    finally:
        await store.aclose()


async def _admit_each(limits: RedisLimits, n: int) -> list[Any]:
    calls = (limits.admit([Bucket(f"k{i}", 10.0, 10)]) for i in range(n))
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_limits_on_a_server_that_is_gone_are_unavailable_for_every_caller(
    redis_server_factory: Callable[..., Any],
) -> None:
    server = redis_server_factory()
    async with _warm_limits(server, 2.0) as limits:
        server.kill()
        results = await _admit_each(limits, 5)
        assert all(isinstance(r, StoreUnavailable) for r in results), results


async def test_after_a_server_restart_the_first_call_is_answered(
    redis_server_factory: Callable[..., Any],
) -> None:
    """The held connection, idle and closed by the restart, is replaced before it is used."""
    server = redis_server_factory()
    async with _warm_limits(server, 2.0) as limits:
        server.restart()
        await asyncio.sleep(0.05)  # the client's event loop sees the server's FIN
        assert await limits.hit("k", 10.0, 10) == 0.0  # a fresh, empty server answers


async def test_a_server_that_does_not_answer_fails_the_batch_within_the_timeout(
    redis_server_factory: Callable[..., Any],
) -> None:
    server = redis_server_factory()
    async with _warm_limits(server, 0.5) as limits:
        server.pause()
        try:
            results = await _admit_each(limits, 3)
        finally:
            server.resume()
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert all("TimeoutError" in str(r) for r in results), results
        assert await limits.hit("k", 10.0, 10) == 0.0  # and the next call is answered


async def test_calls_are_pipelined_on_one_connection_held_until_aclose(redis_url: str) -> None:
    """#29: no pool checkout per call: 200 concurrent calls use one connection."""
    c = redis.asyncio.Redis.from_url(redis_url, client_name="batched")
    observer = redis.asyncio.Redis.from_url(redis_url)
    try:
        batch = ScriptBatch(c, 5.0)
        echo = c.register_script(ECHO)
        await c.script_load(ECHO)
        for _ in range(3):
            replies = await asyncio.gather(*(batch.run(echo, ["k"], [i]) for i in range(200)))
            assert [r[1] for r in replies] == [str(i).encode() for i in range(200)]
        named = [x for x in await observer.client_list() if x["name"] == "batched"]
        assert len(named) == 1  # script_load's connection went back; the batch's is the one
        await batch.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await batch.run(echo, ["k"], [1])
    finally:
        await c.aclose()
        await observer.aclose()


async def test_arguments_are_packed_as_redis_py_would(client: redis.asyncio.Redis) -> None:
    batch = ScriptBatch(client, 5.0)
    echo = client.register_script("return ARGV")
    await client.script_load("return ARGV")
    args = [b"\xff\x00raw", "text é", 42, -7, 2.5, 1e-7, memoryview(b"view"), bytearray(b"ba")]
    reply = await batch.run(echo, [], args)
    assert reply == [
        b"\xff\x00raw",
        "text é".encode(),
        b"42",
        b"-7",
        b"2.5",
        b"1e-07",
        b"view",
        b"ba",
    ]
    assert reply == await echo(keys=[], args=args)  # the same bytes reach the script
    with pytest.raises(TypeError, match="bool"):
        batch.run(echo, [], [True])
    await batch.aclose()


async def test_after_a_sentinel_failover_the_held_connection_is_replaced(
    redis_sentinel_factory: Callable[[], RedisSentinel],
) -> None:
    """#29: the batch's one connection dies with the master; calls on it fail, and once
    Sentinel names the new master the next calls reach it (also with the old one back as
    a replica, which would answer READONLY)."""
    setup = redis_sentinel_factory()
    store = RedisStore.from_url(setup.url, timeout=2.0)
    try:
        limits = RedisLimits.from_store(store)
        assert (await limits.admit([Bucket("k", 0.01, 1000)])).admitted
        victim = setup.current_master()
        victim.kill()
        failed = 0
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            try:
                answer = await limits.admit([Bucket("k", 0.01, 1000)])
            except StoreUnavailable:
                failed += 1
                await asyncio.sleep(0.2)
                continue
            if setup.current_master() is not victim:
                break
        assert failed > 0  # the kill was felt
        assert answer.admitted
        setup.restart_as_replica(victim)
        for _ in range(5):
            assert (await limits.admit([Bucket("k", 0.01, 1000)])).admitted
        new_master = redis.asyncio.Redis(port=setup.current_master().port)
        try:
            assert await new_master.exists(limits.prefix + "{limits}rate:k") == 1
        finally:
            await new_master.aclose()
        await limits.aclose()
    finally:
        await store.aclose()


async def test_limits_on_a_one_connection_pool_do_not_hold_its_only_connection(
    redis_url: str,
) -> None:
    """The batch holds a connection only where the pool has another for the store itself."""
    store = RedisStore.from_url(redis_url, pool_size=1, timeout=2.0)
    try:
        limits = RedisLimits.from_store(store)
        assert (await limits.admit([Bucket("k", 10.0, 10)])).admitted
        assert await store.get("any") == {}  # not starved by the limits
        await store.client.script_flush()  # a forgotten script is loaded again
        assert (await limits.admit([Bucket("k", 10.0, 10)])).admitted
    finally:
        await store.aclose()
