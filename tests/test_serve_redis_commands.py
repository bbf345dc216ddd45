"""What one token costs Redis through ``lk-metadata serve`` (#29), counted by the server.

A real ``serve`` process on a real ``redis-server``, configured as the bench serves it
(bearer key, a rate limit, a per-principal share, a private key). After one warm-up
token (which loads the scripts), ``INFO commandstats`` is reset and read again after
a few tokens: every token is one script call (``EVALSHA``), and the commands that
script runs are the ones listed here, no more. A change that adds a round trip or a
command per token fails here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio

from tests.fixtures.lk_serve import ServeProcess, launch_serve

pytestmark = pytest.mark.integration

BEARER = "commands-bearer-0123456789abcdef"
ENV = {"LIVEKIT_API_KEY": "APIcommands", "LIVEKIT_API_SECRET": "commands-secret-" + "c" * 40}
TOKENS = 6

PER_TOKEN = {
    "evalsha": 1,  # the one round trip: admission and the session write in one script
    "time": 1,  # the script's clock
    "get": 1,  # the principal's rate bucket ...
    "set": 1,  # ... and its credit taken
    "zremrangebyscore": 2,  # expired reservations dropped: the cap's set, the owner's set
    "zrangebyscore": 2,  # reservations beyond their expiry (corrupt) looked for: both sets
    "zscore": 1,  # the session id not reserved yet
    "zcard": 2,  # the cap and the owner's share
    "zadd": 2,  # the reservation, in both sets
    "pexpire": 3,  # both sets and the session's hash
    "hmget": 1,  # the session's size field and the fields written
    "hgetall": 1,  # a hash without a size field (a new session) measured
    "hset": 1,  # the session written
}


@pytest.fixture
def server(tmp_path: Path, redis_url: str) -> Iterator[ServeProcess]:
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "store": redis_url,
        "auth": {"keys": [{"id": "counted", "key": BEARER}]},
        "rate_limit": {"rate": 1000.0, "burst": 1000},
        "max_sessions_per_principal": 1000,
        "private_keys": ["customer_id"],
    }
    proc = launch_serve(tmp_path, config, edge_defaults=False, env=ENV)
    try:
        proc.wait_ready(30.0)
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    c = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield c
    finally:
        await c.aclose()


async def _token(http: aiohttp.ClientSession, server: ServeProcess, n: int) -> int:
    body = {
        "participant_identity": f"caller-{n}",
        "participant_metadata": orjson.dumps({"tier": "gold", "customer_id": f"c{n}"}).decode(),
    }
    headers = {"Authorization": f"Bearer {BEARER}"}
    async with http.post(f"{server.base}/token", json=body, headers=headers) as resp:
        await resp.read()
        return resp.status


async def _commands(client: redis.asyncio.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    calls.pop("info", None)
    return calls


async def test_a_token_is_one_script_call_and_a_known_set_of_commands(
    server: ServeProcess, client: redis.asyncio.Redis
) -> None:
    async with aiohttp.ClientSession() as http:
        assert await _token(http, server, 0) == 201  # loads the scripts
        await client.config_resetstat()
        statuses = await asyncio.gather(*(_token(http, server, n) for n in range(1, TOKENS + 1)))
    assert statuses == [201] * TOKENS
    calls = await _commands(client)
    calls.pop("config|resetstat", None)
    assert calls == {name: TOKENS * n for name, n in PER_TOKEN.items()}
    assert sum(PER_TOKEN.values()) == 19
