"""The agent's view: token sessions by reference, owner checks, one view per caller,
what the entrypoint routes on, and on_change that never misses an update.

Token sessions are written here as the issuer's session mode writes them (the
checked metadata plus the owner record); the integration tier mints them with
``TokenIssuer`` itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from livekit import rtc

from livekit.plugins.metadata.agent.adapter import MetadataAdapter
from livekit.plugins.metadata.agent.views import RouteInput
from livekit.plugins.metadata.codec import SESSION_KEY, SESSION_OWNER_KEY
from livekit.plugins.metadata.errors import InvalidSessionReference
from livekit.plugins.metadata.sessions.manager import SessionManager
from tests.test_adapter import Participant, Room, fake_job_context, shutdown

pytestmark = pytest.mark.unit

SIP = rtc.ParticipantKind.PARTICIPANT_KIND_SIP
PRIVATE = "crm-PRIVATE-value"


async def token_session(
    sessions: SessionManager,
    identity: str,
    room: str,
    metadata: dict[str, Any],
    protected: Sequence[str] = (),
) -> str:
    """A token session as the issuer writes it: fresh id, metadata, owner record."""
    sid = sessions.create_session()
    owner: dict[str, Any] = {"identity": identity, "room": room}
    if protected:
        owner["protected"] = sorted(protected)
    await sessions.token_sessions.update(sid, {**metadata, SESSION_OWNER_KEY: owner})
    return sid


async def caller(
    sessions: SessionManager,
    identity: str,
    public: dict[str, Any],
    private: dict[str, Any],
    *,
    room: str = "room-1",
    kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    attributes: dict[str, str] | None = None,
) -> Participant:
    sid = await token_session(sessions, identity, room, {**public, **private}, list(private))
    attrs = {SESSION_KEY: sid, **(attributes or {})}
    return Participant(
        identity, metadata=orjson.dumps(public).decode(), attributes=attrs, kind=kind
    )


async def test_the_agent_reads_private_keys_through_the_participant_session() -> None:
    sessions, room = SessionManager(), Room()
    ada = await caller(sessions, "ada", {"department": "support"}, {"customer": PRIVATE})
    room.join(ada)
    with fake_job_context(room=room, job_metadata='{"agent": "triage"}') as ctx:
        handle = await MetadataAdapter(sessions).attach(ctx, ada)  # type: ignore[arg-type]
        assert handle.participant_metadata("ada") == {
            "department": "support",
            "customer": PRIVATE,
        }
        assert await handle.get() == {"agent": "triage"}  # the call session: no caller's keys
        assert handle.route_input() == RouteInput(
            {"agent": "triage", "department": "support", "customer": PRIVATE}, {}, "ada"
        )
        assert handle.invalid_updates == 0
        await shutdown(ctx)


async def test_precedence_the_server_decides_and_attributes_stay_attributes() -> None:
    """Job metadata < the caller's token session < its live metadata, never over the keys
    the server decided; attributes are a map of their own and shadow nothing."""
    sessions, room = SessionManager(), Room()
    ada = await caller(
        sessions,
        "ada",
        {"tier": "token", "lang": "en", "shared": "token"},
        {"customer": PRIVATE},
        attributes={"lang": "attr"},
    )
    ada.metadata = '{"tier": "token", "lang": "en", "shared": "live"}'
    room.join(ada)
    job_md = orjson.dumps({"tier": "job", "agent": "x"}).decode()
    with fake_job_context(room=room, job_metadata=job_md) as ctx:
        adapter = MetadataAdapter(sessions)
        handle = await adapter.attach(ctx, ada)  # type: ignore[arg-type]
        view = handle.participant_metadata("ada")
        assert view == {"tier": "token", "lang": "en", "shared": "live", "customer": PRIVATE}
        routed = handle.route_input()
        assert routed.metadata == {
            "agent": "x",  # job metadata
            "tier": "token",  # the participant's token session over the job's metadata
            "shared": "live",  # live metadata over the token session
            "lang": "en",  # an attribute of the same name changes nothing here
            "customer": PRIVATE,
        }
        assert routed.attributes == {"lang": "attr"}
        # The client rewrites its metadata and attributes, private key included: ignored.
        room.change_metadata(ada, orjson.dumps({"customer": "forged", "shared": "new"}).decode())
        room.change_attributes(ada, {"customer": "forged-too"})
        await handle.wait_idle()
        assert handle.participant_metadata("ada")["customer"] == PRIVATE
        assert handle.participant_metadata("ada")["shared"] == "new"
        assert "customer" not in handle.participant_attributes("ada")
        assert "customer" not in await handle.get()
        assert adapter.stats.refused == 2
        await shutdown(ctx)


@pytest.mark.parametrize("case", ["copied", "other-room", "missing", "not-a-string"])
async def test_untrusted_references_are_invalid_metadata_never_a_crash(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="livekit.plugins.metadata")
    sessions, room = SessionManager(), Room()
    victim_sid = await token_session(sessions, "victim", "room-1", {"customer": PRIVATE})
    reference: Any = {
        "copied": victim_sid,  # an attribute copied from another participant
        "other-room": await token_session(sessions, "mallory", "room-2", {"customer": PRIVATE}),
        "missing": "no-such-session-0123456789abcdef",
        "not-a-string": "",
    }[case]
    mallory = Participant("mallory", metadata='{"name": "M"}', attributes={SESSION_KEY: reference})
    room.join(mallory)
    with fake_job_context(room=room) as ctx:
        handle = await MetadataAdapter(sessions).attach(ctx, mallory)  # type: ignore[arg-type]
        assert handle.participant_metadata("mallory") == {"name": "M"}
        assert PRIVATE not in orjson.dumps(await handle.get()).decode()
        assert handle.invalid_updates == 1
        assert "session reference" in caplog.text
        assert victim_sid not in caplog.text
        assert PRIVATE not in caplog.text
        await shutdown(ctx)
    with fake_job_context(room=room) as ctx:
        strict = MetadataAdapter(sessions, on_invalid="raise")
        with pytest.raises(InvalidSessionReference):
            await strict.attach(ctx, mallory)  # type: ignore[arg-type]
        await shutdown(ctx)


async def test_an_expired_token_session_is_invalid() -> None:
    sessions, room = SessionManager(), Room()
    ada = await caller(sessions, "ada", {"a": 1}, {"customer": PRIVATE})
    await sessions.token_sessions.delete(ada.attributes[SESSION_KEY])  # as a TTL would
    room.join(ada)
    with fake_job_context(room=room) as ctx:
        handle = await MetadataAdapter(sessions).attach(ctx, ada)  # type: ignore[arg-type]
        assert handle.participant_metadata("ada") == {"a": 1}
        assert handle.invalid_updates == 1
        await shutdown(ctx)


async def test_a_job_reference_binds_nothing_by_itself() -> None:
    """The dispatch's reference applies only to the participant whose own token carries it."""
    sessions, room = SessionManager(), Room()
    sid = await token_session(sessions, "backend", "room-1", {"customer": PRIVATE}, ["customer"])
    job_md = orjson.dumps({"agent": "x", SESSION_KEY: sid}).decode()
    with fake_job_context(room=room, job_metadata=job_md) as ctx:
        handle = await MetadataAdapter(sessions).load_job(ctx)
        assert await handle.get() == {"agent": "x"}
        assert handle.route_input().metadata == {"agent": "x"}
        assert handle.invalid_updates == 0


async def test_several_callers_keep_their_own_view_and_route_on_the_first() -> None:
    sessions, room = SessionManager(), Room()
    ada = await caller(sessions, "ada", {"department": "support"}, {"customer": "c-ada"})
    bob = await caller(sessions, "bob", {"department": "sales"}, {"customer": "c-bob"})
    room.join(ada)
    with fake_job_context(room=room) as ctx:
        adapter = MetadataAdapter(sessions, track="all")
        handle = await adapter.attach(ctx)
        room.join(bob)  # a second caller joins later
        await handle.wait_idle()
        assert handle.participants == ("ada", "bob")
        assert handle.participant_metadata("ada") == {
            "department": "support",
            "customer": "c-ada",
        }
        assert handle.participant_metadata("bob") == {
            "department": "sales",
            "customer": "c-bob",
        }
        assert handle.route_input().identity == "ada"
        await shutdown(ctx)

    def last(participants: Sequence[rtc.Participant]) -> rtc.Participant | None:
        return participants[-1] if participants else None

    with fake_job_context(room=room) as ctx:
        handle = await MetadataAdapter(sessions, track="all", route_on=last).attach(ctx, ada)  # type: ignore[arg-type]
        routed = handle.route_input()
        assert routed.identity == "bob"
        assert routed.metadata["department"] == "sales"
        await shutdown(ctx)


async def test_sip_calls_route_on_the_sip_participant_and_a_hidden_number_is_missing() -> None:
    sessions, room = SessionManager(), Room()
    with fake_job_context(room=room) as ctx:
        task = asyncio.create_task(MetadataAdapter(sessions, route_on="sip").attach(ctx))
        room.join(Participant("observer", metadata='{"department": "web"}'))
        await asyncio.sleep(0.01)
        assert not task.done()  # a standard participant is not the SIP caller
        phone = Participant(
            "sip_caller",
            kind=SIP,
            attributes={
                "sip.trunkPhoneNumber": "+34910000000",
                "sip.phoneNumber": "",  # hidden number
                "sip.callID": "SCL_1",
            },
        )
        room.join(phone)
        handle = await asyncio.wait_for(task, 5)
        routed = handle.route_input()
        assert routed.identity == "sip_caller"
        assert routed.attributes == {"sip.trunkPhoneNumber": "+34910000000", "sip.callID": "SCL_1"}
        assert "sip.phoneNumber" not in routed.attributes
        await shutdown(ctx)


async def test_on_change_sees_an_update_sent_the_moment_attach_returns() -> None:
    """No lost re-route: the callback is installed before any event can be queued."""
    sessions, room = SessionManager(), Room()
    ada = Participant("ada", metadata='{"department": "support"}')
    room.join(ada)
    seen: list[tuple[str, str | None, str | None]] = []

    with fake_job_context(room=room) as ctx:
        handle_box: list[Any] = []

        async def on_change(identity: str) -> None:
            routed = handle_box[0].route_input()
            seen.append(
                (identity, routed.metadata.get("department"), routed.attributes.get("department"))
            )

        adapter = MetadataAdapter(sessions)
        handle = await adapter.attach(ctx, ada, on_change=on_change)  # type: ignore[arg-type]
        handle_box.append(handle)
        # Synchronously, before the entrypoint awaits anything else (e.g. publishing its route):
        room.change_metadata(ada, '{"department": "sales"}')
        room.change_attributes(ada, {"department": "vip"})
        await handle.wait_idle()
        # Both updates arrived before on_change could run: one call, for the settled state.
        assert seen == [("ada", "sales", "vip")]
        await shutdown(ctx)


async def test_a_failing_on_change_is_logged_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sessions, room = SessionManager(), Room()
    ada = Participant("ada", metadata='{"n": 0}')
    room.join(ada)
    calls: list[str] = []

    async def on_change(identity: str) -> None:
        calls.append(identity)
        raise RuntimeError("boom")

    with fake_job_context(room=room) as ctx:
        handle = await MetadataAdapter(sessions).attach(ctx, ada, on_change=on_change)  # type: ignore[arg-type]
        room.change_metadata(ada, '{"n": 1}')
        await handle.wait_idle()
        room.change_metadata(ada, '{"n": 2}')
        await handle.wait_idle()
        assert calls == ["ada", "ada"]
        assert handle.participant_metadata("ada")["n"] == 2
        assert "on_change failed" in caplog.text
        await shutdown(ctx)


def test_route_on_and_track_are_validated() -> None:
    with pytest.raises(ValueError, match="route_on"):
        MetadataAdapter(SessionManager(), route_on="last")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="track"):
        MetadataAdapter(SessionManager(), track="some")  # type: ignore[arg-type]
