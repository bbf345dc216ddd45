"""ScriptBatch on a real redis-server: one pipeline per loop pass, replies in order.

A script the server forgot (``SCRIPT FLUSH``, as after a restart) is loaded once
and its calls sent again; one call's error reaches only its caller; a server
that is gone fails every waiting caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions

from livekit.plugins.metadata.errors import StoreUnavailable
from livekit.plugins.metadata.server.limits import Bucket, RedisLimits
from livekit.plugins.metadata.sessions.redis import RedisStore
from livekit.plugins.metadata.sessions.redis_batch import ScriptBatch

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


async def test_limits_on_a_server_that_is_gone_are_unavailable_for_every_caller(
    redis_server_factory: Callable[..., Any],
) -> None:
    server = redis_server_factory()
    store = RedisStore.from_url(server.url, timeout=2.0)
    try:
        limits = RedisLimits.from_store(store)
        assert await limits.hit("k", 10.0, 10) == 0.0
        server.kill()
        results = await asyncio.gather(
            *(limits.admit([Bucket(f"k{i}", 10.0, 10)]) for i in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(r, StoreUnavailable) for r in results), results
    finally:
        await store.aclose()


async def test_a_server_that_does_not_answer_fails_the_batch_within_the_timeout(
    redis_server_factory: Callable[..., Any],
) -> None:
    server = redis_server_factory()
    store = RedisStore.from_url(server.url, timeout=0.5)
    try:
        limits = RedisLimits.from_store(store)
        assert await limits.hit("k", 10.0, 10) == 0.0
        server.pause()
        try:
            results = await asyncio.gather(
                *(limits.admit([Bucket(f"k{i}", 10.0, 10)]) for i in range(3)),
                return_exceptions=True,
            )
        finally:
            server.resume()
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert all("TimeoutError" in str(r) for r in results), results
        assert await limits.hit("k", 10.0, 10) == 0.0  # and the next call is answered
    finally:
        await store.aclose()
