"""Unit tests of MetadataAdapter with fake_job_context and plain room/participant stand-ins.

The stand-in room is a real ``livekit.rtc.EventEmitter`` (the class ``rtc.Room``
derives from), so registrations, ``off`` and ``emit`` behave as in a room; tests
emit the events LiveKit would emit, with LiveKit's argument orders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from livekit import api, rtc
from livekit.agents import JobContext
from livekit.agents.testing import fake_job_context as _fake_job_context
from livekit.protocol import agent as agent_proto, models
from pydantic import BaseModel

from livekit.plugins.metadata.agent.adapter import MetadataAdapter
from livekit.plugins.metadata.agent.handle import SessionHandle
from livekit.plugins.metadata.agent.publish import PublishResult
from livekit.plugins.metadata.errors import (
    InvalidAttributes,
    InvalidMetadataJSON,
    MetadataNotAnObject,
    MetadataTooLarge,
    SchemaViolation,
)
from livekit.plugins.metadata.sessions.manager import SessionManager
from tests.strategies import examples, is_reserved_metadata_key

pytestmark = [pytest.mark.unit, pytest.mark.sessions(max_session_bytes=4_000)]

SECRET = "s3cr3t-VALUE-do-not-log"
STANDARD = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
AGENT = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


class Participant:
    """A remote participant stand-in: what the adapter reads from ``rtc.Participant``."""

    def __init__(
        self,
        identity: str,
        metadata: str = "",
        attributes: dict[str, str] | None = None,
        kind: int = STANDARD,
    ) -> None:
        self.identity = identity
        self.sid = f"PA_{identity}"
        self.metadata = metadata
        self.attributes = dict(attributes or {})
        self.kind = kind
        self.state = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE


class LocalParticipant(Participant):
    """The agent's own participant; ``accept=False`` drops writes like a denied server."""

    def __init__(self, room: Room, identity: str = "agent-1") -> None:
        super().__init__(identity, kind=AGENT)
        self.room = room
        self.accept = True
        self.calls: list[tuple[str, Any]] = []

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        self.calls.append(("attributes", dict(attributes)))
        await asyncio.sleep(0)
        if self.accept:
            self.room.change_attributes(self, attributes)

    async def set_metadata(self, metadata: str) -> None:
        self.calls.append(("metadata", metadata))
        await asyncio.sleep(0)
        if self.accept:
            self.room.change_metadata(self, metadata)


class Room(rtc.EventEmitter[str]):
    """A room stand-in that emits LiveKit's events with LiveKit's argument orders."""

    def __init__(self, name: str = "room-1", metadata: str = "") -> None:
        super().__init__()
        self.name = name
        self.metadata = metadata
        self.remote_participants: dict[str, Participant] = {}
        self.local_participant = LocalParticipant(self)

    def isconnected(self) -> bool:
        return True

    def listener_count(self) -> int:
        return sum(len(cbs) for cbs in self._events.values())

    def join(self, p: Participant) -> None:
        self.remote_participants[p.identity] = p
        self.emit("participant_connected", p)
        self.emit("participant_active", p)

    def change_metadata(self, p: Participant, new: str) -> None:
        old, p.metadata = p.metadata, new
        self.emit("participant_metadata_changed", p, old, new)

    def change_attributes(self, p: Participant, changed: dict[str, str]) -> None:
        for key, value in changed.items():
            if value == "":
                p.attributes.pop(key, None)
            else:
                p.attributes[key] = value
        self.emit("participant_attributes_changed", dict(changed), p)

    def change_room_metadata(self, new: str) -> None:
        old, self.metadata = self.metadata, new
        self.emit("room_metadata_changed", old, new)


@contextlib.contextmanager
def fake_job_context(*, room: Room | None = None, job_metadata: str = "") -> Iterator[JobContext]:
    """``fake_job_context`` that also removes the JobContext's temporary directory.

    livekit-agents 1.8.9 creates ``JobContext._tempdir`` and cleans it up only on a
    real job shutdown; left to GC it raises a ResourceWarning (an error here).
    """
    lk_room: Any = room
    with _fake_job_context(room=lk_room, job_metadata=job_metadata) as ctx:
        try:
            yield ctx
        finally:
            ctx._tempdir.cleanup()


@pytest.fixture
def room() -> Room:
    return Room()


@pytest.fixture
def ctx(room: Room) -> Iterator[JobContext]:
    with fake_job_context(room=room, job_metadata='{"agent": "triage", "lang": "en"}') as c:
        yield c


async def shutdown(ctx: JobContext) -> None:
    """Run the job's shutdown callbacks as the framework does at job end."""
    for callback in list(ctx._shutdown_callbacks):
        await callback("test shutdown")


# -- load_job ---------------------------------------------------------------------------------


async def test_load_job_merges_job_metadata_and_attributes(
    ctx: JobContext, room: Room, sessions: SessionManager
) -> None:
    ctx.job.attributes["tier"] = "gold"
    ctx.job.attributes["lang"] = "es"  # an attribute: never a metadata key
    before = room.listener_count()
    adapter = MetadataAdapter(sessions)
    handle = await adapter.load_job(ctx)
    assert handle.id == ctx.job.room.sid  # what LiveKit assigned, not the room name
    assert handle.id.startswith("RM_")
    assert handle.space is sessions.call_sessions
    assert await handle.get() == {"agent": "triage", "lang": "en"}
    assert await sessions.call_sessions.get(ctx.job.room.sid) == {"agent": "triage", "lang": "en"}
    assert await sessions.get_session_metadata("room-1") == {}  # the room name keys nothing
    routed = handle.route_input()
    assert routed == ({"agent": "triage", "lang": "en"}, {"tier": "gold", "lang": "es"}, None)
    assert room.listener_count() == before  # never touched the room
    assert await adapter.load_job(ctx) is handle  # same handle, not re-applied
    assert adapter.stats.applied == 1


async def test_load_job_with_plain_fake_job_context(sessions: SessionManager) -> None:
    with fake_job_context(job_metadata='{"a": 1}') as c:
        handle = await MetadataAdapter(sessions).load_job(c)
        assert handle.id == c.job.room.sid != "fake-room"
        assert await handle.get() == {"a": 1}


async def test_custom_session_id(ctx: JobContext, sessions: SessionManager) -> None:
    adapter = MetadataAdapter(sessions, session_id=lambda c: f"job:{c.job.id}")
    handle = await adapter.load_job(ctx)
    assert handle.id == "job:fake-job"
    assert handle.space is sessions.named_sessions  # a name you chose: the named key space
    assert await sessions.get_session_metadata("job:fake-job") == {"agent": "triage", "lang": "en"}
    assert await sessions.call_sessions.get("job:fake-job") == {}
    with pytest.raises(ValueError, match="yours to delete"):
        MetadataAdapter(sessions, session_id=lambda c: "x", delete_on_shutdown=True)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ('{"agent": ', InvalidMetadataJSON),
        ('["' + SECRET + '"]', MetadataNotAnObject),
        ('{"x": "' + "y" * 70_000 + '"}', MetadataTooLarge),
    ],
    ids=["bad-json", "not-object", "too-large"],
)
async def test_bad_job_metadata_is_logged_and_counted_not_raised(
    room: Room,
    sessions: SessionManager,
    raw: str,
    error: type[Exception],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="livekit.plugins.metadata")
    with fake_job_context(room=room, job_metadata=raw) as c:
        c.job.attributes["tier"] = "gold"
        adapter = MetadataAdapter(sessions)
        handle = await adapter.load_job(c)
        assert await handle.get() == {}
        assert handle.route_input().attributes == {"tier": "gold"}  # still applies
        assert handle.invalid_updates == 1
        assert adapter.stats.invalid == 1
        assert "job metadata" in caplog.text
        assert SECRET not in caplog.text
        assert "yyyy" not in caplog.text

        strict = MetadataAdapter(SessionManager(), on_invalid="raise")
        with pytest.raises(error):
            await strict.load_job(c)


async def test_bad_job_attributes_are_rejected(ctx: JobContext, sessions: SessionManager) -> None:
    ctx.job.attributes["big"] = "x" * 70_000
    adapter = MetadataAdapter(sessions)
    handle = await adapter.load_job(ctx)
    assert await handle.get() == {"agent": "triage", "lang": "en"}
    assert handle.invalid_updates == 1


# -- attach -----------------------------------------------------------------------------------


async def test_attach_precedence_with_given_participant(
    ctx: JobContext, room: Room, sessions: SessionManager
) -> None:
    ctx.job.attributes.update({"lang": "fr", "tier": "silver", "a": "job-attr"})
    room.metadata = '{"tier": "room", "region": "eu", "a": "room"}'
    caller = Participant(
        "caller",
        metadata='{"tier": "bronze", "name": "Ada", "a": "participant-md"}',
        attributes={"a": "participant-attr"},
    )
    room.join(caller)
    adapter = MetadataAdapter(sessions, sync_room_metadata=True)
    handle = await adapter.attach(ctx, caller)  # type: ignore[arg-type]
    # The call session: job metadata, then room metadata; never a caller's keys.
    assert await handle.get() == {
        "agent": "triage",
        "lang": "en",
        "region": "eu",
        "tier": "room",
        "a": "room",
    }
    assert handle.participant_metadata("caller") == {
        "tier": "bronze",
        "name": "Ada",
        "a": "participant-md",
    }
    # The caller's attribute "a" would shadow the dispatcher's job attribute: refused.
    assert handle.participant_attributes("caller") == {}
    assert adapter.stats.refused == 1
    routed = handle.route_input()
    assert routed.metadata == {
        "agent": "triage",  # job metadata
        "lang": "en",
        "tier": "bronze",  # the caller's view over the job's metadata
        "name": "Ada",
        "a": "participant-md",  # metadata stays metadata: no attribute in it
    }
    assert routed.attributes == {"lang": "fr", "tier": "silver", "a": "job-attr"}
    assert handle.tracked == {"caller"}
    await shutdown(ctx)


async def test_attach_waits_for_a_participant(
    ctx: JobContext, room: Room, sessions: SessionManager
) -> None:
    adapter = MetadataAdapter(sessions)
    task = asyncio.create_task(adapter.attach(ctx))
    await asyncio.sleep(0.01)
    assert not task.done()
    room.join(Participant("bot", metadata='{"x": "agent"}', kind=AGENT))  # agents excluded
    room.join(Participant("caller", metadata='{"name": "Ada"}'))
    handle = await asyncio.wait_for(task, 5)
    assert handle.tracked == {"caller"}
    assert handle.participant_metadata("caller")["name"] == "Ada"
    await shutdown(ctx)


async def test_attach_waits_with_timeout(ctx: JobContext, sessions: SessionManager) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await MetadataAdapter(sessions).attach(ctx, wait_timeout=0.01)


async def test_attach_with_bad_participant_metadata(
    ctx: JobContext, room: Room, sessions: SessionManager
) -> None:
    caller = Participant("caller", metadata="{not json", attributes={"tier": "gold"})
    room.join(caller)
    adapter = MetadataAdapter(sessions)
    handle = await adapter.attach(ctx, caller)  # type: ignore[arg-type]
    assert await handle.get() == {"agent": "triage", "lang": "en"}
    assert handle.participant_metadata("caller") == {}
    assert handle.participant_attributes("caller") == {"tier": "gold"}
    assert handle.invalid_updates == 1
    await shutdown(ctx)

    with fake_job_context(room=room) as c2:
        strict = MetadataAdapter(SessionManager(), on_invalid="raise")
        with pytest.raises(InvalidMetadataJSON):
            await strict.attach(c2, caller)  # type: ignore[arg-type]
        handle2 = await strict.load_job(c2)
        assert handle2.tracked == frozenset()
        await shutdown(c2)


class Caller(BaseModel):
    name: str
    age: int = 0


async def test_schema_applies_to_every_metadata_document(
    room: Room, sessions: SessionManager
) -> None:
    with fake_job_context(room=room, job_metadata='{"name": "Job"}') as c:
        caller = Participant("caller", metadata='{"name": "Ada", "age": 3}')
        adapter = MetadataAdapter(sessions, schema=Caller)
        handle = await adapter.attach(c, caller)  # type: ignore[arg-type]
        view = handle.participant_metadata("caller")
        assert view == {"name": "Ada", "age": 3}  # the object, not the model
        assert await handle.get() == {"name": "Job"}
        room.change_metadata(caller, '{"age": "' + SECRET + '"}')
        await handle.wait_idle()
        assert handle.participant_metadata("caller") == {"name": "Ada", "age": 3}
        assert handle.invalid_updates == 1
        await shutdown(c)
    with fake_job_context(room=room, job_metadata='{"age": 1}') as c2:
        strict = MetadataAdapter(SessionManager(), schema=Caller, on_invalid="raise")
        with pytest.raises(SchemaViolation):
            await strict.load_job(c2)


# -- live updates -----------------------------------------------------------------------------


async def test_events_merge_in_order_and_ignore_others(
    ctx: JobContext, room: Room, sessions: SessionManager
) -> None:
    caller = Participant("caller", metadata='{"step": 0}', attributes={"mood": "ok"})
    other = Participant("other")
    room.join(caller)
    room.join(other)
    adapter = MetadataAdapter(sessions)
    handle = await adapter.attach(ctx, caller)  # type: ignore[arg-type]

    room.change_metadata(caller, '{"step": 1, "extra": true}')
    room.change_attributes(caller, {"mood": "", "color": "red"})  # empty value deletes
    room.change_metadata(other, '{"step": 99}')  # not tracked
    room.change_attributes(room.local_participant, {"step": "agent"})  # the agent itself
    room.change_room_metadata('{"step": "room"}')  # room sync is off
    await handle.wait_idle()
    assert await handle.get() == {"agent": "triage", "lang": "en"}
    assert handle.participant_metadata("caller") == {"step": 1, "extra": True}
    assert handle.participant_attributes("caller") == {"color": "red"}
    assert handle.participant_metadata("other") == {}  # not tracked
    await shutdown(ctx)


async def test_attribute_removed_from_snapshot_is_deleted(
    ctx: JobContext, room: Room, sessions: SessionManager
) -> None:
    caller = Participant("caller", attributes={"a": "1", "b": "2"})
    handle = await MetadataAdapter(sessions).attach(ctx, caller)  # type: ignore[arg-type]
    # Some SDKs report a deleted key without an empty value: the snapshot tells.
    del caller.attributes["b"]
    room.emit("participant_attributes_changed", {"b": "2"}, caller)
    await handle.wait_idle()
    assert handle.participant_attributes("caller") == {"a": "1"}
    await shutdown(ctx)


async def test_room_metadata_sync(ctx: JobContext, room: Room, sessions: SessionManager) -> None:
    room.metadata = '{"topic": "a"}'
    handle = await MetadataAdapter(sessions, sync_room_metadata=True).attach(
        ctx,
        Participant("caller"),  # type: ignore[arg-type]
    )
    room.change_room_metadata('{"topic": "b"}')
    room.change_room_metadata("[1]")  # invalid: counted, ignored
    await handle.wait_idle()
    assert (await handle.get())["topic"] == "b"
    assert handle.invalid_updates == 1
    await shutdown(ctx)


async def test_reconnected_caller_is_reloaded(
    ctx: JobContext, room: Room, sessions: SessionManager
) -> None:
    caller = Participant("caller", metadata='{"v": 1}')
    handle = await MetadataAdapter(sessions).attach(ctx, caller)  # type: ignore[arg-type]
    room.remote_participants.pop("caller", None)
    again = Participant("caller", metadata='{"v": 2}', attributes={"back": "yes"})
    room.join(again)
    await handle.wait_idle()
    assert handle.participant_metadata("caller") == {"v": 2}
    assert handle.participant_attributes("caller") == {"back": "yes"}
    await shutdown(ctx)


async def test_protected_keys(ctx: JobContext, room: Room, sessions: SessionManager) -> None:
    caller = Participant("caller", metadata='{"agent": "admin", "name": "Ada"}')
    adapter = MetadataAdapter(sessions, protected_keys=["agent"])
    handle = await adapter.attach(ctx, caller)  # type: ignore[arg-type]
    room.change_metadata(caller, '{"agent": "root"}')
    room.change_attributes(caller, {"agent": "root", "x": "1"})
    room.change_attributes(caller, {"agent": ""})
    await handle.wait_idle()
    assert handle.participant_metadata("caller") == {"name": "Ada"}
    assert handle.participant_attributes("caller") == {"x": "1"}
    routed = handle.route_input()
    assert routed.metadata["agent"] == "triage"  # the job's, never the client's
    assert "agent" not in routed.attributes
    assert (await handle.get())["agent"] == "triage"
    await shutdown(ctx)


INVALID_UPDATES = [
    ("metadata", "{broken"),
    ("metadata", "[1, 2]"),
    ("metadata", '"' + SECRET + '"'),
    ("metadata", '{"a": NaN}'),
    ("metadata", '{"x": "' + "y" * 70_000 + '"}'),  # over max_metadata_bytes
    ("metadata", '{"x": "' + "y" * 5_000 + '"}'),  # the view would exceed 4,000 bytes
    ("attributes", {"big": "z" * 70_000}),
    ("attributes", {"huge": "z" * 5_000}),  # the view's attributes would exceed 4,000 bytes
]


@pytest.mark.parametrize(("kind", "payload"), INVALID_UPDATES)
async def test_invalid_update_leaves_session_unchanged(
    ctx: JobContext,
    room: Room,
    sessions: SessionManager,
    kind: str,
    payload: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="livekit.plugins.metadata")
    caller = Participant("caller", metadata='{"name": "Ada"}', attributes={"tier": "gold"})
    adapter = MetadataAdapter(sessions, max_metadata_bytes=65_536, max_attributes_bytes=4_000)
    if kind == "metadata" and len(payload) < 65_536:
        adapter = MetadataAdapter(sessions, max_metadata_bytes=4_000)
    handle = await adapter.attach(ctx, caller)  # type: ignore[arg-type]

    async def state() -> tuple[dict[str, Any], ...]:
        return (
            await handle.get(),
            handle.participant_metadata("caller"),
            handle.participant_attributes("caller"),
            handle.route_input()._asdict(),
        )

    before = await state()
    if kind == "metadata":
        room.change_metadata(caller, payload)
    else:
        room.change_attributes(caller, payload)
    await handle.wait_idle()
    assert await state() == before
    assert handle.invalid_updates == 1
    assert adapter.stats.invalid == 1
    assert SECRET not in caplog.text
    assert "yyyyyyyy" not in caplog.text
    assert "zzzzzzzz" not in caplog.text
    # The worker is still alive: the next valid update applies.
    room.change_metadata(caller, '{"after": 1}')
    await handle.wait_idle()
    assert handle.participant_metadata("caller")["after"] == 1
    await shutdown(ctx)


async def test_ordering_of_1000_interleaved_events(
    ctx: JobContext, room: Room, sessions: SessionManager
) -> None:
    rng = random.Random(1234)
    caller = Participant("caller")
    handle = await MetadataAdapter(SessionManager()).attach(ctx, caller)  # type: ignore[arg-type]
    expected: dict[str, Any] = {}
    expected_attributes: dict[str, str] = {}
    keys = [f"k{i}" for i in range(8)]
    for i in range(1000):
        if rng.random() < 0.5:
            doc = {rng.choice(keys): i for _ in range(rng.randint(1, 3))}
            room.change_metadata(caller, orjson.dumps(doc).decode())
            expected.update(doc)
        else:
            changed = {rng.choice(keys): rng.choice(["", str(i)]) for _ in range(rng.randint(1, 3))}
            room.change_attributes(caller, changed)
            for key, value in changed.items():
                if value:
                    expected_attributes[key] = value
                else:
                    expected_attributes.pop(key, None)
        if i % 97 == 0:
            await asyncio.sleep(0)  # let the worker interleave with the producer
    await handle.wait_idle()
    assert handle.participant_metadata("caller") == expected
    assert handle.participant_attributes("caller") == expected_attributes
    assert await handle.get() == {"agent": "triage", "lang": "en"}
    assert handle.applied_updates >= 1000
    assert handle.invalid_updates == 0
    await shutdown(ctx)


@settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.decode("latin-1"))))
@example('{"lk-metadata.session": "x", "a": 1}')  # the plugin's key is dropped, "a" merged
def test_fuzzed_updates_merge_or_leave_the_session_unchanged(raw: str) -> None:
    async def scenario() -> None:
        room = Room()
        with fake_job_context(room=room) as c:
            caller = Participant("caller", metadata='{"keep": 1}')
            handle = await MetadataAdapter(SessionManager()).attach(c, caller)  # type: ignore[arg-type]
            before = handle.participant_metadata("caller")
            room.change_metadata(caller, raw)
            await handle.wait_idle()
            after = handle.participant_metadata("caller")
            try:
                parsed = orjson.loads(raw) if raw.strip(" \t\r\n") else {}
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict):
                # The plugin's own namespace is not the caller's: those keys are dropped.
                kept = {k: v for k, v in parsed.items() if not is_reserved_metadata_key(k)}
                assert handle.invalid_updates == 0
                assert after == {**before, **kept}
            else:
                assert after == before
            await shutdown(c)

    asyncio.run(scenario())


# -- shutdown ---------------------------------------------------------------------------------


@pytest.mark.parametrize("delete", [False, True])
async def test_shutdown_unsubscribes_and_deletes_per_config(
    ctx: JobContext, room: Room, sessions: SessionManager, delete: bool
) -> None:
    before = room.listener_count()
    caller = Participant("caller", metadata='{"a": 1}')
    adapter = MetadataAdapter(sessions, delete_on_shutdown=delete)
    handle = await adapter.attach(ctx, caller)  # type: ignore[arg-type]
    assert room.listener_count() > before
    room.change_metadata(caller, '{"queued": true}')  # still queued at shutdown: applied
    await shutdown(ctx)
    assert handle.closed
    assert room.listener_count() == before
    room.change_metadata(caller, '{"late": true}')
    await asyncio.sleep(0)
    view = handle.participant_metadata("caller")
    assert view["queued"] is True
    assert "late" not in view
    stored = await sessions.call_sessions.get(ctx.job.room.sid)
    if delete:
        assert stored == {}
    else:
        assert stored == {"agent": "triage", "lang": "en"}
    await handle.wait_idle()  # returns at once after close
    await handle.aclose()  # idempotent


# -- parse_request ------------------------------------------------------------------------------


class Request:
    """A JobRequest stand-in: only ``.job`` (a real protocol Job) is read."""

    def __init__(self, metadata: str) -> None:
        self.job = agent_proto.Job(id="J1", room=models.Room(name="r"), metadata=metadata)


def test_parse_request(sessions: SessionManager) -> None:
    adapter = MetadataAdapter(sessions)
    assert adapter.parse_request(Request('{"route": "sales"}')) == {"route": "sales"}  # type: ignore[arg-type]
    assert adapter.parse_request(Request("")) == {}  # type: ignore[arg-type]
    assert adapter.parse_request(Request("{oops")) == {}  # type: ignore[arg-type]
    assert adapter.stats.invalid == 1
    strict = MetadataAdapter(sessions, on_invalid="raise")
    with pytest.raises(InvalidMetadataJSON):
        strict.parse_request(Request("{oops"))  # type: ignore[arg-type]


# -- write-back ---------------------------------------------------------------------------------


async def _attached(ctx: JobContext, sessions: SessionManager) -> SessionHandle:
    handle = await MetadataAdapter(sessions, confirm_timeout=0.5).load_job(ctx)
    await handle.set({"tier": "gold", "score": 7, "nested": {"a": [1]}})
    return handle


async def test_publish_attributes_confirmed(
    ctx: JobContext, room: Room, sessions: SessionManager
) -> None:
    handle = await _attached(ctx, sessions)
    local = room.local_participant
    local.attributes["missing"] = "old"
    result = await handle.publish(["tier", "score", "nested", "missing"])
    assert isinstance(result, PublishResult)
    assert result.confirmed
    assert bool(result)
    assert local.attributes == {"tier": "gold", "score": "7", "nested": '{"a":[1]}'}
    assert local.calls[-1] == (
        "attributes",
        {"tier": "gold", "score": "7", "nested": '{"a":[1]}', "missing": ""},
    )


async def test_publish_not_confirmed_when_the_server_drops_it(
    ctx: JobContext, room: Room, sessions: SessionManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="livekit.plugins.metadata")
    handle = await _attached(ctx, sessions)
    room.local_participant.accept = False
    result = await handle.publish(["tier"], timeout=0.05)
    assert not result.confirmed
    assert "not confirmed" in caplog.text
    assert "gold" not in caplog.text


async def test_publish_confirmed_by_a_late_event(
    ctx: JobContext, room: Room, sessions: SessionManager
) -> None:
    handle = await _attached(ctx, sessions)
    local = room.local_participant
    local.accept = False  # the setter returns before the server's echo arrives

    async def late_echo() -> None:
        await asyncio.sleep(0.01)
        room.change_attributes(local, {"tier": "gold"})

    echo = asyncio.create_task(late_echo())
    result = await handle.publish(["tier"], timeout=5)
    await echo
    assert result.confirmed


async def test_publish_size_checks_happen_before_sending(
    ctx: JobContext, room: Room, sessions: SessionManager
) -> None:
    handle = await _attached(ctx, sessions)
    local = room.local_participant
    local.attributes["filler"] = "f" * 65_520
    with pytest.raises(InvalidAttributes, match="over the limit"):
        await handle.publish(["tier", "score"])
    await handle.set("lk.agent.name", "x")
    with pytest.raises(InvalidAttributes, match="reserves"):
        await handle.publish(["lk.agent.name"])
    await handle.set("blob", "b" * 3_000)
    adapter_small = MetadataAdapter(sessions, max_metadata_bytes=1_000)
    with fake_job_context(room=room) as c2:
        small = await adapter_small.load_job(_same_session(c2, ctx))
        with pytest.raises(MetadataTooLarge):
            await small.publish(["blob"], as_="metadata")
    assert local.calls == []
    with pytest.raises(ValueError, match="as_"):
        await handle.publish(["tier"], as_="name")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        await handle.publish([])


def _same_session(c: JobContext, of: JobContext) -> JobContext:
    """``c`` as a second job of the same call (the same room sid)."""
    c.job.room.sid = of.job.room.sid
    return c


async def test_publish_metadata_merges_and_confirms(
    ctx: JobContext, room: Room, sessions: SessionManager
) -> None:
    handle = await _attached(ctx, sessions)
    local = room.local_participant
    local.metadata = '{"role": "agent", "gone": 1}'
    result = await handle.publish(["tier", "gone"], as_="metadata")
    assert result.confirmed
    assert orjson.loads(local.metadata) == {"role": "agent", "tier": "gold"}
    assert result.size == len(local.metadata)


class FakeRoomService:
    def __init__(self, *, drop: bool = False) -> None:
        self.requests: list[api.UpdateParticipantRequest] = []
        self.drop = drop

    async def update_participant(self, req: api.UpdateParticipantRequest) -> models.ParticipantInfo:
        self.requests.append(req)
        if self.drop:
            return models.ParticipantInfo(identity=req.identity)
        return models.ParticipantInfo(
            identity=req.identity, metadata=req.metadata, attributes=dict(req.attributes)
        )


class FakeAPI:
    def __init__(self, room: FakeRoomService) -> None:
        self.room = room


async def test_update_another_participant_through_the_server_api(
    ctx: JobContext, room: Room, sessions: SessionManager
) -> None:
    handle = await _attached(ctx, sessions)
    service = FakeRoomService()
    fake_api: Any = FakeAPI(service)
    result = await handle.publish(["tier"], participant="caller", api=fake_api)
    assert result.confirmed
    req = service.requests[-1]
    assert (req.room, req.identity, dict(req.attributes)) == ("room-1", "caller", {"tier": "gold"})
    # Metadata of nothing is "{}", never "" (the server would skip an empty string).
    result = await handle.publish(["nope"], as_="metadata", participant="caller", api=fake_api)
    assert result.confirmed
    assert service.requests[-1].metadata == "{}"
    dropped: Any = FakeAPI(FakeRoomService(drop=True))
    assert not await handle.publish(["tier"], participant="caller", api=dropped)


# -- options --------------------------------------------------------------------------------


def test_option_validation(sessions: SessionManager) -> None:
    with pytest.raises(ValueError, match="on_invalid"):
        MetadataAdapter(sessions, on_invalid="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="session_id"):
        MetadataAdapter(sessions, session_id="fixed")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="schema"):
        MetadataAdapter(sessions, schema=dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_metadata_bytes"):
        MetadataAdapter(sessions, max_metadata_bytes=0)
    with pytest.raises(ValueError, match="participant_kinds"):
        MetadataAdapter(sessions, participant_kinds=[])
    assert "MetadataAdapter(" in repr(MetadataAdapter(sessions))
