"""Token sessions and the call session in one real Redis, read by two worker processes.

The issuer mints each caller's token in session mode (its own session, private
keys only in the store, an owner record); the adapter in this process resolves
the references from the participants' attributes and the job metadata, and a
second process (another worker) reads the same sessions from the same Redis.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import jwt
import orjson
import pytest

from livekit.plugins.metadata.agent.adapter import MetadataAdapter
from livekit.plugins.metadata.codec import SESSION_KEY
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.tokens.issuer import Dispatch, TokenIssuer
from tests.fixtures.fakes import SESSIONS_SECRET
from tests.test_adapter import Participant, Room, fake_job_context, shutdown

pytestmark = [pytest.mark.integration, pytest.mark.store("redis")]

KEY, SECRET = "devkey", "integration-secret-0123456789abcdefghij"
TOOL_SECRET = SESSIONS_SECRET  # the sessions fixture's, shared with the second worker


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token, SECRET, algorithms=["HS256"], options={"verify_aud": False}
    )
    return claims


def _joined(token: str) -> Participant:
    """The participant LiveKit would create from this token (identity, metadata, attributes)."""
    claims = _claims(token)
    return Participant(
        claims["sub"], metadata=claims.get("metadata", ""), attributes=claims.get("attributes", {})
    )


async def test_two_callers_one_room_one_redis_two_workers(
    sessions: SessionManager, redis_url: str
) -> None:
    issuer = TokenIssuer(KEY, SECRET, sessions=sessions)
    ada = await issuer.amint(
        "ada",
        "support-1",
        metadata={"department": "support", "language": "es"},
        private_metadata={"customer_id": "crm-ada-PRIVATE"},
        dispatch=Dispatch("router-demo"),
    )
    bob = await issuer.amint(
        "bob",
        "support-1",
        metadata={"department": "sales"},
        private_metadata={"customer_id": "crm-bob-PRIVATE"},
    )
    for minted in (ada, bob):
        assert "PRIVATE" not in orjson.dumps(_claims(minted.token)).decode()  # no claim carries it
    job_metadata = _claims(ada.token)["roomConfig"]["agents"][0]["metadata"]

    room = Room("support-1")
    room.join(_joined(ada.token))
    with fake_job_context(room=room, job_metadata=job_metadata) as ctx:
        handle = await MetadataAdapter(sessions, track="all").attach(ctx)
        room.join(_joined(bob.token))
        await handle.wait_idle()
        assert handle.participant_metadata("ada") == {
            "department": "support",
            "language": "es",
            "customer_id": "crm-ada-PRIVATE",
        }
        assert handle.participant_metadata("bob")["customer_id"] == "crm-bob-PRIVATE"
        routed = handle.route_input()
        assert routed.identity == "ada"
        assert routed.metadata["customer_id"] == "crm-ada-PRIVATE"
        assert handle.invalid_updates == 0
        await handle.set("route", "support-es")  # what the agent writes goes to the call session
        call = await sessions.call_sessions.get(handle.id)  # keyed by the room sid
        assert call == {"route": "support-es"}  # no caller's keys
        room_sid = ctx.job.room.sid
        await shutdown(ctx)

    # Another worker process reads the same token sessions and call session from Redis.
    second = textwrap.dedent(
        f"""
        import asyncio, json
        from livekit.plugins.metadata.agent.views import resolve_token_session
        from livekit.plugins.metadata.sessions.manager import SessionManager
        from livekit.plugins.metadata.sessions.redis import RedisStore

        async def main():
            store = RedisStore.from_url({redis_url!r})
            sm = SessionManager(store, secret_key={TOOL_SECRET!r})
            ada = await resolve_token_session(sm, {ada.session_id!r}, identity="ada", room="support-1")
            call = await sm.call_sessions.get({room_sid!r})
            try:
                await resolve_token_session(sm, {ada.session_id!r}, identity="bob", room="support-1")
                foreign = "accepted"
            except Exception as exc:
                foreign = type(exc).__name__
            await store.aclose()
            print(json.dumps({{"ada": ada.metadata, "call": call, "foreign": foreign}}))

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", second], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    seen = orjson.loads(result.stdout)
    assert seen["ada"]["customer_id"] == "crm-ada-PRIVATE"
    assert seen["call"] == {"route": "support-es"}
    assert seen["foreign"] == "InvalidSessionReference"
    assert _claims(ada.token)["attributes"][SESSION_KEY] == ada.session_id
