"""Trust boundaries on a real livekit-server (issues 21 and 31).

A web caller and a simulated SIP caller (a token of kind ``sip``, as LiveKit's SIP
service joins) share one room with ``tests/e2e_agent.py`` routing on
``examples/telephony/rules.yaml``: the web caller's forged ``sip.*`` attributes, at
mint and live, count for nothing; the SIP caller's count.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from livekit import api

from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.tokens.issuer import Dispatch, TokenIssuer
from tests.fixtures.e2e import (
    REPO,
    WorkerProcess,
    connected_room,
    lk_api,
    unique_room,
    wait_for_remote_attribute,
    worker_process,
)
from tests.fixtures.livekit_server import LiveKitServer

pytestmark = pytest.mark.e2e

PHONE_RULES = REPO / "examples" / "telephony" / "rules.yaml"
AGENT = "e2e-trust-phone"
FORGED = {"sip.trunkPhoneNumber": "+34910000001", "sip.phoneNumber": "+34600000000"}


@pytest.fixture(scope="module")
def phone_worker(
    livekit_server: LiveKitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("trust-worker") / "agent.log"
    argv = [
        str(REPO / "tests" / "e2e_agent.py"),
        *("--agent-name", AGENT, "--rules", str(PHONE_RULES), "--track", "all"),
    ]
    with worker_process(livekit_server, argv, log_path=log) as worker:
        yield worker


async def test_a_web_caller_cannot_claim_a_phone_number(
    livekit_server: LiveKitServer, phone_worker: WorkerProcess, tmp_path: Path
) -> None:
    router = MetadataRouter.from_file(PHONE_RULES)
    assert router.route({}, attributes=FORGED).agent == "sales"  # what the forgery aims at
    issuer = TokenIssuer(livekit_server.api_key, livekit_server.api_secret)
    room = unique_room("trust-sip")
    web = issuer.mint(
        "web", room, attributes=FORGED, dispatch=Dispatch(AGENT), can_update_own_metadata=True
    )
    phone = issuer.mint("sip-caller", room, attributes=FORGED, kind="sip")
    async with connected_room(livekit_server, web) as web_room:
        _, route = await wait_for_remote_attribute(web_room, "route")
        assert route == "reception"  # routed as a caller without a number
        await web_room.local_participant.set_attributes({"sip.phoneNumber": "+34600000001"})
        async with connected_room(livekit_server, phone):
            _, sip_attrs = await wait_for_remote_attribute(
                web_room, "attrs.sip-caller", predicate=lambda v: "sip." in v
            )
            assert json.loads(sip_attrs) == FORGED  # a SIP participant's numbers count
            assert router.route({}, attributes=json.loads(sip_attrs)).agent == "sales"
            _, web_attrs = await wait_for_remote_attribute(web_room, "attrs.web")
            assert json.loads(web_attrs) == {}  # at mint and live: ignored
        async with lk_api(livekit_server) as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    assert phone_worker.proc.poll() is None
    log = phone_worker.log_path.read_text(errors="replace")
    assert "participant 'web': ignored" in log
    assert "+34600000000" not in log  # key names, never values


async def test_a_room_named_after_a_session_id_reaches_nothing(
    livekit_server: LiveKitServer, redis_url: str, tmp_path: Path
) -> None:
    """Issue 21, attack 1, through the real ``lk-metadata serve``, the example worker and one
    Redis: Mallory names her room after Alice's token session id (the worst-case config:
    one frontend key that lets clients pick rooms, no prefix)."""
    import aiohttp
    import jwt
    import redis.asyncio as redis_asyncio

    from livekit.plugins.metadata.codec import SESSION_KEY
    from tests.fixtures.lk_serve import Secrets, start_serve, stop_serve

    key = "frontend-key-0123456789abcdef"
    serve = start_serve(
        tmp_path,
        {
            "api_key": livekit_server.api_key,
            "server_url": livekit_server.url,
            "store": redis_url,
            "rules": str(REPO / "examples" / "rules.yaml"),
            "private_keys": ["customer_id", "pin"],
            "auth": {"keys": [{"id": "web", "key": key, "client_room": True}]},
        },
        planted=Secrets(api_secret=livekit_server.api_secret, bearer=key),
    )
    worker_log = tmp_path / "example-worker.log"
    argv = [str(REPO / "tests" / "e2e_agent.py"), "--example", str(REPO / "examples" / "agent.py")]
    client = redis_asyncio.Redis.from_url(redis_url)
    try:
        with worker_process(
            livekit_server, argv, log_path=worker_log, env={"REDIS_URL": redis_url}
        ) as worker:
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:

                async def token(room: str, metadata: dict[str, str]) -> str:
                    body = {"room_name": room, "participant_metadata": json.dumps(metadata)}
                    url = f"http://127.0.0.1:{serve.port}/token"
                    async with http.post(url, json=body) as resp:
                        assert resp.status == 201, await resp.text()
                        answer = await resp.json()
                    text: str = answer["participant_token"]
                    return text

                alice_room = unique_room("support")
                alice = await token(
                    alice_room, {"department": "support", "customer_id": "C-ALICE", "pin": "7431"}
                )
                alice_sid = jwt.decode(alice, options={"verify_signature": False})["attributes"][
                    SESSION_KEY
                ]
                stored_key = f"lkmeta:t:{alice_sid}"
                async with connected_room(livekit_server, alice) as alice_in:
                    _, route = await wait_for_remote_attribute(alice_in, "route")
                    assert route == "support"
                    before = await client.hgetall(stored_key)
                    assert before  # Alice's token session, private keys included
                    mallory = await token(
                        alice_sid, {"department": "sales", "customer_id": "C-MALLORY"}
                    )
                    async with connected_room(livekit_server, mallory) as mallory_in:
                        assert mallory_in.name == alice_sid
                        _, route = await wait_for_remote_attribute(mallory_in, "route")
                        assert route == "sales"  # routed on her own data
                        async with lk_api(livekit_server) as lk:
                            await lk.room.delete_room(api.DeleteRoomRequest(room=alice_sid))
                    assert await client.hgetall(stored_key) == before  # byte for byte
                    async with lk_api(livekit_server) as lk:
                        await lk.room.delete_room(api.DeleteRoomRequest(room=alice_room))
            assert worker.proc.poll() is None
            assert b"7431" not in worker_log.read_bytes()
            assert b"C-ALICE" not in serve.log_bytes()
    finally:
        await client.aclose()
        stop_serve(serve)


async def test_attributes_shared_rooms_and_shared_identities_reach_nothing(
    livekit_server: LiveKitServer, redis_url: str, tmp_path: Path
) -> None:
    """Issue 21, attacks 2-4, through the real ``lk-metadata serve`` and a worker on one
    Redis that publishes each caller's view (``tests/e2e_agent.py``): the worst-case config
    (clients pick rooms and identities, and may update their own metadata)."""
    import aiohttp
    import jwt

    from livekit.plugins.metadata.codec import SESSION_KEY
    from tests.fixtures.lk_serve import Secrets, start_serve, stop_serve

    key = "frontend-key-0123456789abcdef"
    serve = start_serve(
        tmp_path,
        {
            "api_key": livekit_server.api_key,
            "server_url": livekit_server.url,
            "store": redis_url,
            "rules": str(REPO / "examples" / "rules.yaml"),
            "private_keys": ["pin"],
            "allow_update_own_metadata": True,
            "auth": {
                "keys": [
                    {
                        "id": "web",
                        "key": key,
                        "client_room": True,
                        "client_identity": True,
                        "trusted_metadata": {"tier": "basic", "crm_id": "C-42"},
                    }
                ]
            },
        },
        planted=Secrets(api_secret=livekit_server.api_secret, bearer=key),
    )
    argv = [
        str(REPO / "tests" / "e2e_agent.py"),
        *("--agent-name", "router-demo", "--rules", str(REPO / "examples" / "rules.yaml")),
        *("--store", redis_url, "--track", "all"),
    ]

    def view_is(expected: dict[str, Any]) -> Any:
        return lambda value: json.loads(value) == expected

    try:
        with worker_process(livekit_server, argv, log_path=tmp_path / "worker.log") as worker:
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:

                async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                    url = f"http://127.0.0.1:{serve.port}/token"
                    async with http.post(url, json=body) as resp:
                        return resp.status, await resp.json()

                room = unique_room("trust")
                # Attack 2 at mint: an attribute named like a trusted key is refused.
                status, answer = await post(
                    {"room_name": room, "participant_attributes": {"tier": "vip"}}
                )
                assert status == 422, answer
                assert answer["error"]["code"] == "protected_attribute_key"
                md = {"department": "support", "pin": "7431"}
                status, alice = await post(
                    {
                        "room_name": room,
                        "participant_identity": "alice",
                        "participant_metadata": json.dumps(md),
                    }
                )
                assert status == 201, alice
                alice_view = {"department": "support", "pin": "7431", "tier": "basic"}
                alice_view["crm_id"] = "C-42"
                async with connected_room(livekit_server, alice["participant_token"]) as a:
                    await wait_for_remote_attribute(a, "view.alice", predicate=view_is(alice_view))
                    # Attack 2 live: attributes and metadata named like trusted keys.
                    await a.local_participant.set_attributes({"tier": "vip", "crm_id": "C-999"})
                    await a.local_participant.set_metadata('{"tier": "vip", "crm_id": "C-999"}')
                    await a.local_participant.set_attributes({"barrier": "1"})
                    _, attrs = await wait_for_remote_attribute(
                        a, "attrs.alice", predicate=lambda v: "barrier" in json.loads(v)
                    )
                    assert not {"tier", "crm_id"} & set(json.loads(attrs))
                    _, view = await wait_for_remote_attribute(a, "view.alice")
                    assert json.loads(view) == alice_view
                    # Attack 3: a second caller in the same room keeps its own view.
                    status, bob = await post(
                        {
                            "room_name": room,
                            "participant_identity": "bob",
                            "participant_metadata": '{"department": "sales", "pin": "0000"}',
                        }
                    )
                    assert status == 201, bob
                    async with connected_room(livekit_server, bob["participant_token"]):
                        bob_view = {"department": "sales", "pin": "0000"}
                        bob_view |= {"tier": "basic", "crm_id": "C-42"}
                        await wait_for_remote_attribute(a, "view.bob", predicate=view_is(bob_view))
                        _, view = await wait_for_remote_attribute(a, "view.alice")
                        assert json.loads(view) == alice_view
                        _, call = await wait_for_remote_attribute(a, "session")
                        assert "pin" not in json.loads(call)
                alice_sid = jwt.decode(
                    alice["participant_token"], options={"verify_signature": False}
                )["attributes"][SESSION_KEY]
                # Attack 4: a second token for identity "alice" in Alice's room.
                async with connected_room(livekit_server, alice["participant_token"]) as a:
                    await wait_for_remote_attribute(a, "view.alice", predicate=view_is(alice_view))
                    status, impostor = await post(
                        {
                            "room_name": room,
                            "participant_identity": "alice",
                            "participant_metadata": '{"department": "sales"}',
                        }
                    )
                    assert status == 201, impostor
                    async with connected_room(livekit_server, impostor["participant_token"]) as m:
                        impostor_view = {"department": "sales", "tier": "basic", "crm_id": "C-42"}
                        _, view = await wait_for_remote_attribute(
                            m, "view.alice", predicate=view_is(impostor_view)
                        )
                        assert "7431" not in view
                    assert alice_sid not in impostor["participant_token"]
                async with lk_api(livekit_server) as lk:
                    await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            assert worker.proc.poll() is None
        log = (tmp_path / "worker.log").read_bytes() + serve.log_bytes()
        assert b"7431" not in log
        assert b"C-999" not in log
    finally:
        stop_serve(serve)
