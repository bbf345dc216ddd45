"""Integration: token sessions (``TokenIssuer.amint``) in a real redis-server."""

from __future__ import annotations

import jwt
import orjson
import pytest
import redis.asyncio as aioredis

from livekit.plugins.metadata.codec import SESSION_OWNER_KEY
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.sessions.redis import RedisStore
from livekit.plugins.metadata.tokens.issuer import TokenIssuer

pytestmark = pytest.mark.integration

KEY = "APItestkey"
SECRET = "test-secret-" + "s" * 40
SENTINEL = "hunter2-sentinel-value"


def decode(token: str) -> dict[str, object]:
    return jwt.decode(token, SECRET, algorithms=["HS256"], issuer=KEY)


async def test_amint_token_session_in_redis_is_read_by_another_worker(redis_url: str) -> None:
    """A token session in a real Redis: TTL = token TTL + grace; another manager reads it."""
    minting = SessionManager(RedisStore.from_url(redis_url), secret_key="k" * 32)
    reading = SessionManager(RedisStore.from_url(redis_url), secret_key="k" * 32)
    raw = aioredis.Redis.from_url(redis_url)
    try:
        issuer = TokenIssuer(KEY, SECRET, sessions=minting, session_grace=120)
        minted = await issuer.amint(
            "caller", "room", metadata={"lang": "es"}, private_metadata={"crm": SENTINEL}, ttl=300
        )
        assert await reading.token_sessions.get(minted.session_id) == {
            "lang": "es",
            "crm": SENTINEL,
            SESSION_OWNER_KEY: {"identity": "caller", "room": "room", "protected": ["crm"]},
        }
        assert await reading.get_session_metadata(minted.session_id) == {}  # another space
        (key,) = [k async for k in raw.scan_iter(match=f"*{minted.session_id}*")]
        ttl = await raw.ttl(key)
        assert 400 < ttl <= 420
        assert SENTINEL not in orjson.dumps(decode(minted.token)).decode()
    finally:
        await raw.aclose()
        await minting.aclose()
        await reading.aclose()
