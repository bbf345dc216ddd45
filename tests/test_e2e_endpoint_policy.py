"""#32 on a real livekit-server: a second caller cannot join, cut off or listen to the first.

The token endpoint (``create_app``, what ``lk-metadata serve`` runs) with its default
policy, on a free loopback port, in front of the test's livekit-server. The victim
gets a token, joins and publishes a microphone track; the attacker asks the same
endpoint for the victim's room and identity (anonymously, and with the one bearer
key a web frontend shares) and joins with what it got. LiveKit itself is asked
who is in the victim's room afterwards. A caller who reconnects with their previous
token (``rejoin_token``) lands in their own room, as themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from livekit import api, rtc
from pydantic import SecretStr

from livekit.plugins.metadata.server.app import ServerConfig, create_app
from tests.fixtures.e2e import STEP_TIMEOUT, connected_room, lk_api, wait_until
from tests.fixtures.livekit_server import LiveKitServer
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.e2e

FRONTEND_KEY = "web-frontend-key-0123456789abcdef"

Fetch = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@pytest.fixture(params=["anonymous", "shared-key"])
async def fetch(
    livekit_server: LiveKitServer, request: pytest.FixtureRequest
) -> AsyncIterator[Fetch]:
    """POST to the default-policy endpoint (anonymous, or with one shared frontend key)."""
    shared = request.param == "shared-key"
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        server_url=livekit_server.url,
        api_key=livekit_server.api_key,
        api_secret=SecretStr(livekit_server.api_secret),
        rules="none",
        rate_limit=None,
        auth={"keys": [{"id": "web", "key": FRONTEND_KEY}]} if shared else {},  # type: ignore[arg-type]
    )
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    headers = {"Authorization": f"Bearer {FRONTEND_KEY}"} if shared else {}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:

            async def post(body: dict[str, Any]) -> dict[str, Any]:
                async with http.post(f"http://127.0.0.1:{port}/token", json=body) as resp:
                    answer: dict[str, Any] = await resp.json()
                    assert resp.status == 201, answer
                    return answer

            yield post
    finally:
        await runner.cleanup()


async def _publish_microphone(room: rtc.Room) -> rtc.LocalTrackPublication:
    source = rtc.AudioSource(48_000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    return await asyncio.wait_for(
        room.local_participant.publish_track(track, options), STEP_TIMEOUT
    )


async def _participants(lk: api.LiveKitAPI, room: str) -> dict[str, str]:
    """Identity -> participant sid, as LiveKit itself sees the room."""
    listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    return {p.identity: p.sid for p in listed.participants}


async def test_a_second_caller_cannot_join_cut_off_or_listen_to_the_first(
    livekit_server: LiveKitServer, fetch: Fetch
) -> None:
    first = await fetch({})
    async with (
        lk_api(livekit_server) as lk,
        connected_room(livekit_server, first["participant_token"]) as victim,
    ):
        assert victim.name == first["room_name"]
        assert victim.local_participant.identity == first["participant_identity"]
        mic = await _publish_microphone(victim)
        victim_sid = victim.local_participant.sid

        attack = {
            "room_name": first["room_name"],
            "participant_identity": first["participant_identity"],
        }
        second = await fetch(attack)
        async with connected_room(livekit_server, second["participant_token"]) as mallory:
            # The attacker is somewhere else, alone, with a name of its own.
            assert mallory.name == second["room_name"] != first["room_name"]
            assert mallory.local_participant.identity != first["participant_identity"]
            # LiveKit's own view, after the attacker's join completed: the victim's room
            # holds the victim only, the same participant (sid) as before: not replaced.
            in_victims_room = await _participants(lk, first["room_name"])
            assert in_victims_room == {first["participant_identity"]: victim_sid}
            in_mallorys_room = await _participants(lk, second["room_name"])
            assert list(in_mallorys_room) == [second["participant_identity"]]
            # Nobody to listen to: no remote participant, no remote track.
            assert mallory.remote_participants == {}
            assert victim.remote_participants == {}
            assert victim.isconnected()
            assert mic.sid in {
                t.sid
                for p in (
                    await lk.room.list_participants(
                        api.ListParticipantsRequest(room=first["room_name"])
                    )
                ).participants
                for t in p.tracks
            }
        await lk.room.delete_room(api.DeleteRoomRequest(room=second["room_name"]))
        await lk.room.delete_room(api.DeleteRoomRequest(room=first["room_name"]))


async def test_a_caller_who_reconnects_lands_in_their_own_room(
    livekit_server: LiveKitServer, fetch: Fetch
) -> None:
    first = await fetch({})
    async with connected_room(livekit_server, first["participant_token"]) as before:
        sid_before = before.local_participant.sid
    again = await fetch({"rejoin_token": first["participant_token"]})
    assert again["participant_token"] != first["participant_token"]
    async with (
        lk_api(livekit_server) as lk,
        connected_room(livekit_server, again["participant_token"]) as after,
    ):
        assert after.name == first["room_name"]
        assert after.local_participant.identity == first["participant_identity"]
        assert after.local_participant.sid != sid_before
        listed = await wait_until(
            lambda: _participants(lk, first["room_name"]), timeout=STEP_TIMEOUT
        )
        assert listed == {first["participant_identity"]: after.local_participant.sid}
        await lk.room.delete_room(api.DeleteRoomRequest(room=first["room_name"]))
