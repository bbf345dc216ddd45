"""The endpoint on Redis: admission and the token-session write in one script, all or nothing.

On one server (and Sentinel) ``RedisLimits.admit_write`` takes the rate tokens,
reserves the session slot and writes the token session in one ``EVALSHA``; on a
Cluster the two live in different slots and the endpoint keeps two steps. Real
redis-server processes from the fixtures; the endpoint is served by aiohttp on
loopback and read back through ``SessionManager``'s own API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
import redis.asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from livekit.plugins.metadata.codec import SESSION_KEY
from livekit.plugins.metadata.server.app import create_app
from livekit.plugins.metadata.server.limits import RedisLimits
from livekit.plugins.metadata.server.state import STATE
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.sessions.redis import RedisStore
from tests.test_server import Client, error_code, make_config

pytestmark = pytest.mark.integration

BIG = "x" * 3000
"""A private value that fits the request but not a 1,000-byte session."""

Serve = Callable[..., Awaitable[tuple[Client, RedisLimits, RedisStore]]]


@pytest.fixture
async def serve_on() -> AsyncIterator[Serve]:
    """``await serve_on(url, max_session_bytes=..., **config)``: an app on a RedisStore."""
    started: list[tuple[TestClient[web.Request, web.Application], RedisStore]] = []

    async def start(
        url: str, *, max_session_bytes: int = 65_536, **overrides: Any
    ) -> tuple[Client, RedisLimits, RedisStore]:
        store = RedisStore.from_url(url, timeout=5.0)
        sessions = SessionManager(store, secret_key=b"k" * 32, max_session_bytes=max_session_bytes)
        overrides.setdefault("rate_limit", {"rate": 1000, "burst": 1000})
        cfg = make_config(sessions=sessions, private_keys=["blob"], **overrides)
        app = create_app(cfg)
        http = TestClient(TestServer(app, host="127.0.0.1"))
        await http.start_server()
        started.append((http, store))
        limits = app[STATE].limits
        assert isinstance(limits, RedisLimits)
        return Client(http, cfg), limits, store

    yield start
    for http, store in started:
        await http.close()
        await store.aclose()


async def _token_keys(client: Any) -> list[bytes]:
    if isinstance(client, redis.asyncio.RedisCluster):
        nodes = client.get_primaries()
        keys: list[bytes] = []
        for node in nodes:
            keys += await client.keys("lkmeta:t:*", target_nodes=node)
        return keys
    return list(await client.keys("lkmeta:t:*"))


async def _evalsha_calls(client: redis.asyncio.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_one_script_call_per_token_and_the_session_reads_as_update_writes_it(
    serve_on: Serve, redis_url: str
) -> None:
    c, limits, store = await serve_on(redis_url)
    assert limits.writes_sessions_of(store)
    await c.token({"participant_metadata": "{}"})  # scripts loaded
    raw: Any = store.client
    before = await _evalsha_calls(raw)
    md = {"department": "support", "blob": 'private "quoted" \u00e9\n', "n": [1, {"a": None}]}
    claims = await c.token({"participant_metadata": orjson.dumps(md).decode()})
    assert await _evalsha_calls(raw) - before == 1
    session_id = claims.attributes[SESSION_KEY]
    stored = await c.sessions.token_sessions.get(session_id)
    assert {k: v for k, v in stored.items() if k in md} == md
    # The same record written by the normal API is the same hash, byte for byte, same TTL.
    await c.sessions.token_sessions.update("copy", stored, ttl=c.config.token_session_ttl())
    combined = await raw.hgetall(store.key("t:" + session_id))
    normal = await raw.hgetall(store.key("t:copy"))
    assert combined == normal
    ttl_combined = await raw.pttl(store.key("t:" + session_id))
    ttl_normal = await raw.pttl(store.key("t:copy"))
    assert 0 < ttl_combined <= ttl_normal
    assert ttl_normal - ttl_combined < 5_000
    assert await limits.live_sessions() == 2


async def test_a_request_refused_by_its_rate_writes_nothing(
    serve_on: Serve, redis_url: str
) -> None:
    c, limits, store = await serve_on(redis_url, rate_limit={"rate": 0.001, "burst": 1})
    await c.token({"participant_metadata": '{"n": 1}'})
    status, body, _ = await c.post({"participant_metadata": '{"n": 2}'})
    assert status == 429, body
    assert len(await _token_keys(store.client)) == 1
    assert await limits.live_sessions() == 1


async def test_a_request_refused_by_the_cap_writes_nothing_and_takes_no_token(
    serve_on: Serve, redis_url: str
) -> None:
    c, limits, store = await serve_on(
        redis_url,
        max_sessions=1,
        max_sessions_per_principal=1,
        rate_limit={"rate": 0.001, "burst": 3},
    )
    await c.token({"participant_metadata": '{"n": 1}'})
    for _ in range(3):  # no rate token is taken by a refusal of the cap
        status, body, _ = await c.post({"participant_metadata": '{"n": 2}'})
        assert status == 503, body
        assert error_code(body) == "store_full"
    assert len(await _token_keys(store.client)) == 1
    assert await limits.live_sessions() == 1


async def test_a_session_over_its_limit_reserves_nothing_but_counts_against_the_rate(
    serve_on: Serve, redis_url: str
) -> None:
    c, limits, store = await serve_on(
        redis_url, max_session_bytes=1000, rate_limit={"rate": 0.001, "burst": 1}
    )
    status, body, _ = await c.post({"participant_metadata": orjson.dumps({"blob": BIG}).decode()})
    assert status == 413, body
    assert error_code(body) == "metadata_too_large"
    assert await _token_keys(store.client) == []
    assert await limits.live_sessions() == 0
    status, body, _ = await c.post({"participant_metadata": "{}"})
    assert status == 429, body  # the refused request took the only token


async def test_a_write_redis_refuses_leaves_no_session_and_no_reservation(
    serve_on: Serve, redis_server_factory: Callable[..., Any]
) -> None:
    server = redis_server_factory()
    c, limits, store = await serve_on(server.url)
    await c.token({"participant_metadata": '{"n": 1}'})
    raw: Any = store.client
    await raw.config_set("min-replicas-to-write", 1)  # no replica: every write is refused
    try:
        status, body, _ = await c.post({"participant_metadata": '{"n": 2}'})
    finally:
        await raw.config_set("min-replicas-to-write", 0)
    assert status == 503, body
    assert error_code(body) == "store_unavailable"
    assert len(await _token_keys(raw)) == 1
    assert await limits.live_sessions() == 1
    await c.token({"participant_metadata": '{"n": 3}'})  # and the endpoint goes on


async def test_on_sentinel_admission_and_write_are_one_script(
    serve_on: Serve, redis_sentinel_url: str
) -> None:
    c, limits, store = await serve_on(redis_sentinel_url)
    assert limits.writes_sessions_of(store)
    claims = await c.token({"participant_metadata": orjson.dumps({"blob": "p"}).decode()})
    assert (await c.session_of(claims))["blob"] == "p"


async def test_on_a_cluster_two_steps_and_a_failed_write_releases_its_reservation(
    serve_on: Serve, redis_cluster_url: str
) -> None:
    c, limits, store = await serve_on(redis_cluster_url, max_session_bytes=1000)
    assert not limits.writes_sessions_of(store)  # the session and {limits} are in two slots
    await limits.release_session("warm-up")  # the topology is known before counting
    before = await limits.live_sessions()
    claims = await c.token({"participant_metadata": orjson.dumps({"blob": "p"}).decode()})
    assert (await c.session_of(claims))["blob"] == "p"
    await c.token({})
    status, body, _ = await c.post({"participant_metadata": orjson.dumps({"blob": BIG}).decode()})
    assert status == 413, body
    assert await limits.live_sessions() == before + 2  # the refused write's slot was released
    assert len(await _token_keys(store.client)) == 2


async def test_a_request_whose_minting_fails_counts_against_its_rate(
    serve_on: Serve, redis_url: str
) -> None:
    c, limits, store = await serve_on(
        redis_url,
        rate_limit={"rate": 0.001, "burst": 1},
        metadata={"max_bytes": 600},
        auth={
            "keys": [
                {
                    "id": "crm",
                    "key": "k" * 32,
                    "trusted_metadata": {"note": "n" * 400},
                    "public_keys": ["note"],
                }
            ]
        },
    )
    body = {"participant_metadata": orjson.dumps({"mine": "m" * 400}).decode()}
    status, answer, _ = await c.post(body, bearer="k" * 32)
    assert status == 413, answer  # the token's metadata (client's + trusted) is over the limit
    assert await _token_keys(store.client) == []
    assert await limits.live_sessions() == 0
    status, answer, _ = await c.post({}, bearer="k" * 32)
    assert status == 429, answer
