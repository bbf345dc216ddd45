"""The agent side through a store outage on a real livekit-server (issue 35.3).

``examples/agent.py`` shares a private ``redis-server`` (``REDIS_URL``) with the token
issuer. Killed mid-call, with the caller's last update sent during the outage: the route
follows the update (the caller's view does not wait for the store). Paused while a caller
joins: the agent routes on the public metadata at once and re-routes on the private keys
of the token session once Redis answers again, without any further update.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
from livekit import api

from livekit.plugins.metadata.errors import StoreUnavailable
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.sessions.redis import RedisStore
from livekit.plugins.metadata.tokens.issuer import Dispatch, TokenIssuer
from tests.fixtures.e2e import (
    REPO,
    connected_room,
    lk_api,
    unique_room,
    wait_for_remote_attribute,
    worker_process,
)
from tests.fixtures.livekit_server import LiveKitServer
from tests.fixtures.redis_server import RedisServer

pytestmark = pytest.mark.e2e

ARGV = [str(REPO / "tests" / "e2e_agent.py"), "--example", str(REPO / "examples" / "agent.py")]


async def test_the_route_converges_through_a_redis_outage(
    livekit_server: LiveKitServer,
    redis_server_factory: Callable[..., RedisServer],
    tmp_path: Path,
) -> None:
    redis = redis_server_factory()
    store = RedisStore.from_url(redis.url, timeout=2.0)
    sessions = SessionManager(store, secret_key="o" * 40)
    issuer = TokenIssuer(livekit_server.api_key, livekit_server.api_secret, sessions=sessions)
    log = tmp_path / "worker.log"
    try:
        with worker_process(livekit_server, ARGV, log_path=log, env={"REDIS_URL": redis.url}):
            # A: killed mid-call; the last update is sent while Redis is down.
            room = unique_room("outage-a")
            minted = await issuer.amint(
                "caller",
                room,
                metadata={"department": "support"},
                dispatch=Dispatch("router-demo"),
                can_update_own_metadata=True,
            )
            async with connected_room(livekit_server, minted.token) as joined:
                await wait_for_remote_attribute(joined, "route", predicate="support".__eq__)
                redis.kill()
                await joined.local_participant.set_metadata('{"department": "sales"}')
                await wait_for_remote_attribute(joined, "route", predicate="sales".__eq__)
                redis.restart()
            # B: paused while a caller joins; its private tier arrives when Redis answers.
            room_b = unique_room("outage-b")
            for attempt in range(3):  # this process's pooled connection died with the server
                try:
                    minted = await issuer.amint(
                        "vip-caller",
                        room_b,
                        metadata={"department": "support"},
                        private_metadata={"caller": {"tier": "vip"}},
                        dispatch=Dispatch("router-demo"),
                    )
                    break
                except StoreUnavailable:
                    if attempt == 2:
                        raise
            redis.pause()
            try:
                async with connected_room(livekit_server, minted.token) as joined:
                    await wait_for_remote_attribute(joined, "route", predicate="support".__eq__)
                    redis.resume()
                    await wait_for_remote_attribute(joined, "route", predicate="vip".__eq__)
            finally:
                redis.resume()  # harmless when it already runs
            async with lk_api(livekit_server) as lk:
                for name in (room, room_b):  # already gone once empty: not an error
                    with contextlib.suppress(api.ServerError):
                        await lk.room.delete_room(api.DeleteRoomRequest(room=name))
        text = log.read_text(errors="replace")
        assert "after a store outage" in text
    finally:
        await store.aclose()
