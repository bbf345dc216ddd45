"""The trust-boundary attacks of issue 21 and 31, as scenarios over any SessionManager.

Each scenario mints real tokens with ``TokenIssuer.amint`` (a session per token, the
owner record, the keys the server decided), joins the participants LiveKit would
create from those tokens into a stand-in room, runs the adapter with a fake job
context, and asserts what an attacker must never get. ``tests/test_trust_boundaries.py``
runs them on the memory store (unit tier), ``tests/test_trust_boundaries_redis.py`` on
a real Redis (integration tier).
"""

from __future__ import annotations

from typing import Any

import jwt
import orjson
from livekit import rtc

from livekit.plugins.metadata.agent.adapter import MetadataAdapter
from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.tokens.issuer import Dispatch, TokenIssuer
from tests.test_adapter import Participant, Room, fake_job_context, shutdown

KEY, SECRET = "devkey", "trust-boundaries-secret-0123456789abcdef"
PIN, ALICE_CRM, MALLORY_CRM = "PIN-7431-alice", "C-ALICE-42", "C-MALLORY-999"
SIP = rtc.ParticipantKind.PARTICIPANT_KIND_SIP

RULES = MetadataRouter.from_dict(
    {
        "rules": [
            {"name": "vip-md", "when": {"tier": "vip"}, "agent": "vip"},
            {"name": "vip-attr", "when_attributes": {"tier": "vip"}, "agent": "vip"},
            {"name": "support", "when": {"department": "support"}, "agent": "support"},
            {"name": "sales", "when": {"department": "sales"}, "agent": "sales"},
        ],
        "default": "general",
    }
)
PHONE_RULES = MetadataRouter.from_file("examples/telephony/rules.yaml")


def issuer(sessions: SessionManager) -> TokenIssuer:
    return TokenIssuer(KEY, SECRET, sessions=sessions)


def joined(token: str, *, kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD) -> Participant:
    """The participant LiveKit creates from ``token``: identity, metadata, attributes."""
    claims: dict[str, Any] = jwt.decode(token, SECRET, algorithms=["HS256"])
    return Participant(
        claims["sub"],
        metadata=claims.get("metadata", ""),
        attributes=dict(claims.get("attributes", {})),
        kind=kind,
    )


def job_metadata(token: str) -> str:
    """The job metadata LiveKit dispatches from ``token``'s room config."""
    claims: dict[str, Any] = jwt.decode(token, SECRET, algorithms=["HS256"])
    (agent,) = claims["roomConfig"]["agents"]
    text: str = agent["metadata"]
    return text


async def raw(sessions: SessionManager, space: str, sid: str) -> bytes:
    """A session as stored, canonical bytes (sorted keys) for a byte-for-byte comparison."""
    stored = await getattr(sessions, f"{space}_sessions").get(sid)
    return orjson.dumps(stored, option=orjson.OPT_SORT_KEYS)


async def room_named_after_a_session_id(sessions: SessionManager) -> None:
    """Attack 1: Mallory names her room after Alice's token session id."""
    minter = issuer(sessions)
    alice = await minter.amint(
        "alice",
        "support-r1",
        metadata={"department": "support"},
        private_metadata={"customer_id": ALICE_CRM, "pin": PIN},
        dispatch=Dispatch("router"),
    )
    before = await raw(sessions, "token", alice.session_id)
    mallory = await minter.amint(
        "mallory",
        alice.session_id,  # the room name is Alice's session id, read off her attribute
        metadata={"department": "sales", "customer_id": MALLORY_CRM},
        dispatch=Dispatch("router"),
    )
    room = Room(alice.session_id)
    participant = joined(mallory.token)
    room.join(participant)
    with fake_job_context(room=room, job_metadata=job_metadata(mallory.token)) as ctx:
        adapter = MetadataAdapter(sessions, delete_on_shutdown=True)
        handle = await adapter.attach(ctx, participant)  # type: ignore[arg-type]
        routed = handle.route_input()
        assert routed.metadata["customer_id"] == MALLORY_CRM
        assert PIN not in orjson.dumps(routed._asdict()).decode()
        assert PIN not in orjson.dumps(await handle.get()).decode()
        assert handle.id == ctx.job.room.sid != alice.session_id
        await handle.set("agent_note", "written by the agent")
        assert RULES.route(routed.metadata, attributes=routed.attributes).agent == "sales"
        await shutdown(ctx)  # delete_on_shutdown: deletes the call session only
    assert await raw(sessions, "token", alice.session_id) == before
    assert (await sessions.token_sessions.get(alice.session_id))["pin"] == PIN
    assert await sessions.call_sessions.get(ctx.job.room.sid) == {}


async def attributes_cannot_override_trusted_metadata(sessions: SessionManager) -> None:
    """Attack 2: the client sends attributes named like the keys the server decided."""
    minter = issuer(sessions)
    minted = await minter.amint(
        "caller",
        "room-2",
        metadata={"department": "support", "channel": "web"},
        private_metadata={"tier": "basic", "crm_id": ALICE_CRM},
        protected_keys=["channel"],  # trusted, and shown to the client
        attributes={"tier": "vip", "crm_id": MALLORY_CRM, "channel": "phone"},
    )
    before = await raw(sessions, "token", minted.session_id)
    room = Room("room-2")
    participant = joined(minted.token)
    room.join(participant)
    with fake_job_context(room=room) as ctx:
        adapter = MetadataAdapter(sessions)
        handle = await adapter.attach(ctx, participant)  # type: ignore[arg-type]
        # and live, with canUpdateOwnMetadata
        room.change_attributes(participant, {"tier": "vip", "crm_id": MALLORY_CRM})
        room.change_metadata(
            participant, '{"tier": "vip", "crm_id": "' + MALLORY_CRM + '", "channel": "x"}'
        )
        await handle.wait_idle()
        for view in (
            handle.route_input().metadata,
            handle.participant_metadata("caller"),
        ):
            assert (view["tier"], view["crm_id"], view["channel"]) == ("basic", ALICE_CRM, "web")
        routed = handle.route_input()
        assert not {"tier", "crm_id", "channel"} & set(routed.attributes)
        assert not {"tier", "crm_id", "channel"} & set(handle.participant_attributes("caller"))
        assert MALLORY_CRM not in orjson.dumps(await handle.get()).decode()
        assert RULES.route(routed.metadata, attributes=routed.attributes).agent == "support"
        assert adapter.stats.refused >= 3
        await shutdown(ctx)
    assert await raw(sessions, "token", minted.session_id) == before


async def callers_never_share_the_call_session(sessions: SessionManager) -> None:
    """Attack 3: with track="all", a second caller's private key must not land on the first's."""
    minter = issuer(sessions)
    ada = await minter.amint("ada", "room-3", private_metadata={"customer_id": ALICE_CRM})
    bob = await minter.amint("bob", "room-3", private_metadata={"customer_id": MALLORY_CRM})
    room = Room("room-3")
    room.join(joined(ada.token))
    with fake_job_context(room=room) as ctx:
        handle = await MetadataAdapter(sessions, track="all").attach(ctx)
        room.join(joined(bob.token))
        await handle.wait_idle()
        assert handle.participant_metadata("ada")["customer_id"] == ALICE_CRM
        assert handle.participant_metadata("bob")["customer_id"] == MALLORY_CRM
        assert "customer_id" not in await handle.get()
        assert handle.route_input().metadata["customer_id"] == ALICE_CRM
        await shutdown(ctx)


async def a_second_token_with_the_same_identity(sessions: SessionManager) -> None:
    """Attack 4: Mallory mints a token for identity "alice" in the room Alice's token made."""
    minter = issuer(sessions)
    alice = await minter.amint(
        "alice",
        "room-4",
        metadata={"department": "support"},
        private_metadata={"pin": PIN},
        dispatch=Dispatch("router"),
    )
    before = await raw(sessions, "token", alice.session_id)
    impostor = await minter.amint("alice", "room-4", metadata={"department": "sales"})
    room = Room("room-4")
    participant = joined(impostor.token)
    room.join(participant)
    with fake_job_context(room=room, job_metadata=job_metadata(alice.token)) as ctx:
        handle = await MetadataAdapter(sessions).attach(ctx, participant)  # type: ignore[arg-type]
        routed = handle.route_input()
        assert PIN not in orjson.dumps(routed._asdict()).decode()
        assert routed.metadata["department"] == "sales"  # the impostor's own data
        await shutdown(ctx)
    # A participant without any reference of its own gets its public metadata only.
    stranger = Participant("alice", metadata='{"department": "sales"}')
    room.join(stranger)
    with fake_job_context(room=room, job_metadata=job_metadata(alice.token)) as ctx:
        handle = await MetadataAdapter(sessions).attach(ctx, stranger)  # type: ignore[arg-type]
        assert handle.participant_metadata("alice") == {"department": "sales"}
        await shutdown(ctx)
    assert await raw(sessions, "token", alice.session_id) == before


async def phone_numbers_only_from_sip_participants(sessions: SessionManager) -> None:
    """Issue 31: a web caller's ``sip.*`` attributes (at mint and live) count for nothing."""
    forged = {"sip.trunkPhoneNumber": "+34910000001", "sip.phoneNumber": "+34600000000"}
    minter = issuer(sessions)
    web = await minter.amint("web", "room-5", attributes=forged)  # the Python API allows it
    room = Room("room-5")
    web_caller = joined(web.token)
    room.join(web_caller)
    with fake_job_context(room=room) as ctx:
        adapter = MetadataAdapter(sessions)
        handle = await adapter.attach(ctx, web_caller)  # type: ignore[arg-type]
        room.change_attributes(web_caller, {"sip.phoneNumber": "+34600000001", "lk.x": "1"})
        await handle.wait_idle()
        routed = handle.route_input()
        assert not any(k.startswith(("sip.", "lk.")) for k in routed.attributes)
        assert handle.participant_attributes("web") == {}
        assert PHONE_RULES.route(routed.metadata, attributes=routed.attributes).agent == "reception"
        await shutdown(ctx)
    phone = Participant("sip_+34600000000", attributes=dict(forged), kind=SIP)
    room.join(phone)
    with fake_job_context(room=room) as ctx:
        handle = await MetadataAdapter(sessions, route_on="sip").attach(ctx, phone)  # type: ignore[arg-type]
        routed = handle.route_input()
        assert routed.attributes == forged
        assert PHONE_RULES.route(routed.metadata, attributes=routed.attributes).agent == "sales"
        await shutdown(ctx)


SCENARIOS = [
    room_named_after_a_session_id,
    attributes_cannot_override_trusted_metadata,
    callers_never_share_the_call_session,
    a_second_token_with_the_same_identity,
    phone_numbers_only_from_sip_participants,
]
