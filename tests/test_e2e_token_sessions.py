"""Two callers, one room, a real livekit-server and a real Redis: each keeps their own view.

Tokens are minted by ``TokenIssuer.amint`` (session mode) into the Redis the worker
process also uses. The agent sees each caller's own metadata, reads a private key
that no token carried, and routes the first caller as ``examples/rules.yaml`` says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from livekit import api

from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.sessions.manager import SessionManager
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

pytestmark = [pytest.mark.e2e, pytest.mark.store("redis")]

AGENT_NAME = "e2e-views"
RULES = REPO / "examples" / "rules.yaml"


def _claims_text(token: str) -> str:
    return json.dumps(jwt.decode(token, options={"verify_signature": False}))


async def test_two_callers_each_keep_their_own_metadata_and_private_keys(
    livekit_server: LiveKitServer, redis_url: str, sessions: SessionManager, tmp_path: Path
) -> None:
    issuer = TokenIssuer(livekit_server.api_key, livekit_server.api_secret, sessions=sessions)
    room = unique_room("views")
    ada_md = {"department": "support", "language": "es"}
    ada = await issuer.amint(
        "ada",
        room,
        metadata=ada_md,
        private_metadata={"customer_id": "crm-ada-private"},
        dispatch=Dispatch(AGENT_NAME),
    )
    bob = await issuer.amint(
        "bob",
        room,
        metadata={"department": "sales", "language": "en"},
        private_metadata={"customer_id": "crm-bob-private"},
    )
    assert "crm-" not in _claims_text(ada.token) + _claims_text(bob.token)

    argv = [
        str(REPO / "tests" / "e2e_agent.py"),
        *("--agent-name", AGENT_NAME, "--mode", "adapter", "--track", "all"),
        *("--rules", str(RULES), "--store", redis_url),
    ]
    with worker_process(livekit_server, argv, log_path=tmp_path / "worker.log") as worker:
        async with connected_room(livekit_server, ada.token) as ada_room:
            _, route = await wait_for_remote_attribute(ada_room, "route")
            assert route == MetadataRouter.from_file(RULES).route(ada_md).agent == "support-es"
            async with connected_room(livekit_server, bob.token):

                def has(customer: str) -> Any:
                    return lambda value: json.loads(value).get("customer_id") == customer

                _, bob_view = await wait_for_remote_attribute(
                    ada_room, "view.bob", predicate=has("crm-bob-private")
                )
                _, ada_view = await wait_for_remote_attribute(
                    ada_room, "view.ada", predicate=has("crm-ada-private")
                )
                assert json.loads(ada_view) == {**ada_md, "customer_id": "crm-ada-private"}
                assert json.loads(bob_view) == {
                    "department": "sales",
                    "language": "en",
                    "customer_id": "crm-bob-private",
                }
            async with lk_api(livekit_server) as lk:
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        assert worker.proc.poll() is None, worker.log_tail()
