"""Issue 21 and 31 on a real Redis: the same attacks as tests/test_trust_boundaries.py, and
the key spaces as Redis keys (no id of one space is a key of another)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.sessions.redis import RedisStore
from tests.trust_scenarios import SCENARIOS

pytestmark = [pytest.mark.integration, pytest.mark.store("redis")]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
async def test_attack_fails_on_redis(
    scenario: Callable[[SessionManager], Awaitable[None]], sessions: SessionManager
) -> None:
    await scenario(sessions)


async def test_key_spaces_are_distinct_redis_keys(sessions: SessionManager) -> None:
    store = sessions.store
    assert isinstance(store, RedisStore)
    sid = sessions.create_session()
    await sessions.token_sessions.update(sid, {"who": "token"})
    await sessions.call_sessions.update(sid, {"who": "call"})
    await sessions.set_session_metadata(sid, {"who": "named"})
    found = {key.decode() async for key in store.client.scan_iter(match=f"*{sid}*")}
    assert found == {f"lkmeta:t:{sid}", f"lkmeta:c:{sid}", f"lkmeta:u:{sid}"}
    assert await sessions.token_sessions.get(sid) == {"who": "token"}
    assert await sessions.call_sessions.delete(sid) is True
    assert await sessions.token_sessions.get(sid) == {"who": "token"}  # untouched
