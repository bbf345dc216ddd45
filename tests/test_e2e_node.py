"""LiveKit's official Node SDKs as independent clients (``tests/node``, pinned by its lock file).

* ``livekit-server-sdk``'s ``TokenVerifier`` accepts tokens from our ``TokenIssuer`` and
  reads the same metadata, attributes, grant and room config.
* Tokens minted by ``livekit-server-sdk``'s ``AccessToken`` are ingested by our side:
  ``TokenIssuer.verify`` and the codec read them, and the real server lets them join.
* ``livekit-client``'s ``TokenSource.endpoint`` gets a working token from our token
  endpoint: ``create_app`` (what ``lk-metadata serve`` runs) and ``TokenASGI`` mounted
  in a FastAPI app under uvicorn.

Node and ``tests/node/node_modules`` are prerequisites: missing locally -> skip, CI -> fail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from livekit import api
from pydantic import SecretStr

from livekit.plugins.metadata.codec import SESSION_KEY, parse_metadata
from livekit.plugins.metadata.server.app import ServerConfig, create_app
from livekit.plugins.metadata.server.asgi import TokenASGI
from livekit.plugins.metadata.tokens.issuer import Dispatch, TokenIssuer
from tests.fixtures.e2e import connected_room, lk_api, node_available, run_node, unique_room
from tests.fixtures.livekit_server import LiveKitServer
from tests.fixtures.servers import free_port, unavailable

pytestmark = pytest.mark.e2e

METADATA = {
    "caller": {"tier": "gold", "id": 42},
    "department": "support",
    "language": "es",
    "note": 'señor ✓ "quoted" \\ back',
}
ATTRIBUTES = {"plan": "pro", "region": "eu-west"}
NODE_KEY = "node-backend-key-0123456789abcdef"


@pytest.fixture(scope="module", autouse=True)
def _node() -> None:
    reason = node_available()
    if reason:
        unavailable(reason)


def _credentials(server: LiveKitServer) -> dict[str, str]:
    return {"apiKey": server.api_key, "apiSecret": server.api_secret}


async def test_node_token_verifier_reads_our_tokens(livekit_server: LiveKitServer) -> None:
    issuer = TokenIssuer(livekit_server.api_key, livekit_server.api_secret)
    room = unique_room("node-verify")
    token = issuer.mint(
        "caller-1",
        room,
        name="Caller One",
        metadata=METADATA,
        attributes=ATTRIBUTES,
        dispatch=Dispatch(
            "support-agent", metadata={"language": "es"}, attributes={"queue": "vip"}
        ),
        can_update_own_metadata=True,
    )
    claims = await run_node("verify", {**_credentials(livekit_server), "token": token})
    assert claims["sub"] == "caller-1"
    assert claims["iss"] == livekit_server.api_key
    assert claims["name"] == "Caller One"
    assert isinstance(claims["metadata"], str)  # a string claim, never an object
    assert json.loads(claims["metadata"]) == METADATA
    assert claims["attributes"] == ATTRIBUTES
    assert claims["video"]["roomJoin"] is True
    assert claims["video"]["room"] == room
    assert claims["video"]["canUpdateOwnMetadata"] is True
    assert not claims["video"].get("roomAdmin")
    (agent,) = claims["roomConfig"]["agents"]
    assert agent["agentName"] == "support-agent"
    assert json.loads(agent["metadata"]) == {"language": "es"}
    assert agent["attributes"] == {"queue": "vip"}


async def test_node_verifier_rejects_our_token_with_another_secret(
    livekit_server: LiveKitServer,
) -> None:
    token = TokenIssuer(livekit_server.api_key, "x" * 40).mint("caller-1", unique_room("node"))
    with pytest.raises(RuntimeError, match="verify failed"):
        await run_node("verify", {**_credentials(livekit_server), "token": token})


async def test_node_minted_token_is_ingested_and_joins(livekit_server: LiveKitServer) -> None:
    room = unique_room("node-mint")
    minted = await run_node(
        "mint",
        {
            **_credentials(livekit_server),
            "identity": "node-caller",
            "room": room,
            "name": "Node Caller",
            "metadata": json.dumps(METADATA),
            "attributes": ATTRIBUTES,
            "agentName": "support-agent",
            "agentMetadata": json.dumps({"language": "es"}),
        },
    )
    token = minted["token"]
    verified = TokenIssuer(livekit_server.api_key, livekit_server.api_secret).verify(token)
    assert verified.identity == "node-caller"
    assert verified.room == room
    assert verified.metadata == METADATA
    assert verified.attributes == ATTRIBUTES
    assert [d.agent_name for d in verified.dispatches] == ["support-agent"]
    assert parse_metadata(verified.dispatches[0].metadata) == {"language": "es"}  # type: ignore[arg-type]
    assert parse_metadata(verified.claims.metadata) == METADATA

    # The real server accepts the Node token; what it holds is what our codec parses.
    async with connected_room(livekit_server, token) as joined:
        assert parse_metadata(joined.local_participant.metadata) == METADATA
        async with lk_api(livekit_server) as lk:
            info = await lk.room.get_participant(
                api.RoomParticipantIdentity(room=room, identity="node-caller")
            )
            assert parse_metadata(info.metadata) == METADATA
            assert dict(info.attributes) == ATTRIBUTES
            dispatches = await lk.agent_dispatch.list_dispatch(room)
            assert [d.agent_name for d in dispatches] == ["support-agent"]
            assert parse_metadata(dispatches[0].metadata) == {"language": "es"}
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))


@pytest.fixture(params=["aiohttp", "asgi"])
async def token_endpoint(
    livekit_server: LiveKitServer, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """Our token endpoint on a free loopback port; yields its URL.

    ``aiohttp``: ``create_app`` (what ``lk-metadata serve`` runs); ``asgi``:
    ``TokenASGI`` mounted in a FastAPI app with a route of its own, under uvicorn.
    """
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        server_url=livekit_server.url,
        api_key=livekit_server.api_key,
        api_secret=SecretStr(livekit_server.api_secret),
        rules="none",
        allowed_agents=["support-agent"],
        # A backend-held key that may name rooms (within its prefix) and identities (#32);
        # without it the endpoint chooses both.
        auth={  # type: ignore[arg-type]
            "keys": [
                {
                    "id": "node-backend",
                    "key": NODE_KEY,
                    "room_prefix": "node-",
                    "client_room": True,
                    "client_identity": True,
                }
            ],
            "allow_anonymous": True,
        },
    )
    if request.param == "asgi":
        async for url in _asgi_endpoint(config):
            yield url
        return
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/token"
    finally:
        await runner.cleanup()


async def _asgi_endpoint(config: ServerConfig) -> AsyncIterator[str]:
    import uvicorn
    from fastapi import FastAPI

    tokens = TokenASGI(config)
    host = FastAPI()

    @host.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    host.mount("/lk", tokens)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(host, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/lk/token"
    finally:
        server.should_exit = True
        await task
        await tokens.aclose()


async def test_livekit_client_endpoint_token_source(
    livekit_server: LiveKitServer, token_endpoint: str
) -> None:
    room = unique_room("node-endpoint")
    result = await run_node(
        "endpoint",
        {
            "url": token_endpoint,
            "options": {
                "headers": {"Authorization": f"Bearer {NODE_KEY}"},
                "roomName": room,
                "participantIdentity": "web-caller",
                "participantName": "Web Caller",
                "participantMetadata": json.dumps(METADATA),
                "participantAttributes": ATTRIBUTES,
                "agentName": "support-agent",
                "agentMetadata": json.dumps({"language": "es"}),
            },
        },
    )
    assert result["serverUrl"] == livekit_server.url
    payload = result["payload"]
    assert payload["sub"] == "web-caller"
    assert payload["video"]["room"] == room
    assert json.loads(payload["metadata"]) == METADATA
    session_id = payload["attributes"][SESSION_KEY]  # the token's own session
    assert payload["attributes"] == {**ATTRIBUTES, SESSION_KEY: session_id}
    (agent,) = payload["roomConfig"]["agents"]
    assert agent["agentName"] == "support-agent"
    assert json.loads(agent["metadata"])[SESSION_KEY] == session_id

    # The token works: it joins the real server, and the dispatch is there.
    async with connected_room(livekit_server, result["participantToken"]) as joined:
        assert joined.isconnected()
        assert parse_metadata(joined.local_participant.metadata) == METADATA
        async with lk_api(livekit_server) as lk:
            dispatches = await lk.agent_dispatch.list_dispatch(room)
            assert [d.agent_name for d in dispatches] == ["support-agent"]
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))


async def test_livekit_client_endpoint_room_is_the_servers_by_default(token_endpoint: str) -> None:
    """#32: without the opt-in key, the endpoint ignores roomName and participantIdentity."""
    result = await run_node(
        "endpoint",
        {"url": token_endpoint, "options": {"roomName": "node-victim", "participantIdentity": "v"}},
    )
    payload = result["payload"]
    assert payload["video"]["room"] != "node-victim"
    assert payload["video"]["room"].startswith("room-")
    assert payload["sub"] != "v"


async def test_livekit_client_endpoint_error_is_reported(token_endpoint: str) -> None:
    # An agent outside the allowlist is refused (4xx); livekit-client surfaces the failure.
    with pytest.raises(RuntimeError, match="endpoint failed"):
        await run_node(
            "endpoint",
            {"url": token_endpoint, "options": {"roomName": "r", "agentName": "not-allowed"}},
        )
