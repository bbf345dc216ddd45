"""Issue 21 and 31 on the memory store: no string a client chooses crosses into another
caller's session or overrides what the server decided (see tests/trust_scenarios.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from livekit.plugins.metadata.sessions.manager import SessionManager
from tests import trust_scenarios
from tests.strategies import examples
from tests.trust_scenarios import SCENARIOS

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
async def test_attack_fails_on_the_memory_store(
    scenario: Callable[[SessionManager], Awaitable[None]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="livekit.plugins.metadata")
    await scenario(SessionManager(secret_key="t" * 40))
    for secret in ("PIN-7431", "C-ALICE-42", "C-MALLORY-999", "+34600000000"):
        assert secret not in caplog.text  # refusals are logged without values


@pytest.mark.parametrize("space", ["named", "token", "call"])
async def test_no_id_addresses_another_key_space(space: str) -> None:
    sessions = SessionManager(secret_key="t" * 40)
    spaces = {s: getattr(sessions, f"{s}_sessions") for s in ("named", "token", "call")}
    hostile = ["x", "t:x", "c:x", "u:x", "u:t:x", "lkmeta:t:x", "{x}", "x\x00", "ü:x", "t:"]
    for sid in hostile:
        await spaces[space].update(sid, {"owner": space})
    for other, target in spaces.items():
        for sid in hostile:
            expected = {"owner": space} if other == space else {}
            assert await target.get(sid) == expected, (other, sid)
    keys = {spaces[s].key(sid) for s in spaces for sid in hostile}
    assert len(keys) == 3 * len(hostile)  # every (space, id) pair has its own store key


async def test_refusals_are_logged_once_per_participant(caplog: pytest.LogCaptureFixture) -> None:
    from livekit.plugins.metadata.agent.adapter import MetadataAdapter
    from tests.test_adapter import Participant, Room, fake_job_context, shutdown

    caplog.set_level(logging.WARNING, logger="livekit.plugins.metadata")
    room = Room()
    web = Participant("web", attributes={"sip.phoneNumber": "+34600000000"})
    room.join(web)
    with fake_job_context(room=room) as ctx:
        adapter = MetadataAdapter(SessionManager(), protected_keys=["tier"])
        handle = await adapter.attach(ctx, web)  # type: ignore[arg-type]
        for n in range(5):
            room.change_attributes(web, {"sip.phoneNumber": f"+3460000000{n}"})
            room.change_metadata(web, '{"tier": "vip"}')
        await handle.wait_idle()
        assert adapter.stats.refused == 11
        lines = [r.getMessage() for r in caplog.records if "participant 'web'" in r.getMessage()]
        assert len(lines) == 2, lines  # one per reason, however often it happens
        assert any("sip.phoneNumber" in line for line in lines)
        assert "+3460" not in caplog.text
        await shutdown(ctx)


# -- property: whatever a client sends, the server's decisions hold ---------------------------

_KEYS = ["tier", "crm_id", "channel", "department", "lk-metadata.session", "sip.phoneNumber", "x"]
_step = st.one_of(
    st.tuples(
        st.just("metadata"),
        st.sampled_from(["alice", "mallory"]),
        st.dictionaries(st.sampled_from(_KEYS), st.sampled_from(["vip", "C-1", "", "y"])),
    ),
    st.tuples(
        st.just("attributes"),
        st.sampled_from(["alice", "mallory"]),
        st.dictionaries(st.sampled_from(_KEYS), st.sampled_from(["vip", "C-1", "", "ref"])),
    ),
    st.tuples(
        st.just("rejoin"),
        st.sampled_from(["alice", "mallory"]),
        st.sampled_from(["own", "other", "none"]),
    ),
)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    room_name=st.sampled_from(["alice-session", "mallory-session", "support"]),
    steps=st.lists(_step, max_size=12),
)
def test_client_input_never_moves_what_the_server_decided(
    room_name: str, steps: list[tuple[Any, ...]]
) -> None:
    asyncio.run(_client_input_scenario(room_name, steps))


async def _client_input_scenario(room_name: str, steps: list[tuple[Any, ...]]) -> None:
    from livekit.plugins.metadata.agent.adapter import MetadataAdapter
    from livekit.plugins.metadata.codec import SESSION_KEY
    from tests.test_adapter import Participant, Room, fake_job_context, shutdown
    from tests.trust_scenarios import issuer, joined, raw

    sessions = SessionManager(secret_key="t" * 40)
    minter = issuer(sessions)
    minted: dict[str, Any] = {}
    for who, crm in (("alice", "C-ALICE"), ("mallory", "C-MALLORY")):
        minted[who] = await minter.amint(
            who,
            "shared-room",
            metadata={"department": "support", "channel": "web"},
            private_metadata={"tier": f"{who}-tier", "crm_id": crm},
            protected_keys=["channel"],
        )
    names = {
        "alice-session": minted["alice"].session_id,
        "mallory-session": minted["mallory"].session_id,
        "support": "shared-room",
    }
    before = {w: await raw(sessions, "token", m.session_id) for w, m in minted.items()}
    stored = {w: await sessions.token_sessions.get(m.session_id) for w, m in minted.items()}
    room = Room(names[room_name])
    people = {w: joined(m.token) for w, m in minted.items()}
    for p in people.values():
        room.join(p)
    bound = dict.fromkeys(people, room.name == "shared-room")
    with fake_job_context(room=room) as ctx:
        handle = await MetadataAdapter(sessions, track="all").attach(ctx, people["alice"])  # type: ignore[arg-type]
        await handle.wait_idle()
        for step in steps:
            who = step[1]
            if step[0] == "metadata":
                room.change_metadata(people[who], orjson.dumps(step[2]).decode())
            elif step[0] == "attributes":
                other = "mallory" if who == "alice" else "alice"
                update = {
                    k: (minted[other].session_id if v == "ref" else v) for k, v in step[2].items()
                }
                room.change_attributes(people[who], update)
            else:
                other = "mallory" if who == "alice" else "alice"
                ref = {"own": minted[who].session_id, "other": minted[other].session_id}
                attrs = {SESSION_KEY: ref[step[2]]} if step[2] != "none" else {}
                people[who] = Participant(who, metadata=people[who].metadata, attributes=attrs)
                room.join(people[who])
                bound[who] = step[2] == "own" and room.name == "shared-room"
            await handle.wait_idle()
            for w in people:
                view = handle.participant_metadata(w)
                attrs_view = handle.participant_attributes(w)
                mine = stored[w]
                for key in ("tier", "crm_id", "channel"):
                    if bound[w]:
                        assert view.get(key) == mine[key], (w, key)
                    # a protected key never comes from an attribute, in any view
                    assert key not in attrs_view or not bound[w], (w, key)
                other = stored["mallory" if w == "alice" else "alice"]
                assert view.get("crm_id") != other["crm_id"], w  # never another's private key
                assert not any(k.startswith(("lk-metadata.", "sip.")) for k in attrs_view)
            call = orjson.dumps(await handle.get()).decode()
            assert "C-ALICE" not in call
            assert "C-MALLORY" not in call
        await shutdown(ctx)
    for w, m in minted.items():
        assert await raw(sessions, "token", m.session_id) == before[w]


# -- the README's precedence and key-space tables, row by row ----------------------------------


def _table_rows(after: str) -> list[str]:
    """First cells of the markdown table that follows the line containing ``after``."""
    from pathlib import Path

    lines = (Path(__file__).parents[1] / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    rows: list[str] = []
    for line in lines[start + 1 :]:
        cell = line.strip()
        if not cell.startswith("|"):
            if rows:
                break
            continue
        first = cell.strip("|").split("|")[0].strip()
        if first and not set(first) <= set("-: ") and first not in ("input", "space"):
            rows.append(first)
    return rows


async def _job_metadata_row(sessions: SessionManager) -> None:
    from livekit.plugins.metadata.agent.adapter import MetadataAdapter
    from tests.test_adapter import Room, fake_job_context

    with fake_job_context(room=Room(), job_metadata='{"department": "sales"}') as ctx:
        handle = await MetadataAdapter(sessions).load_job(ctx)
        assert await sessions.call_sessions.get(ctx.job.room.sid) == {"department": "sales"}
        assert handle.route_input().metadata == {"department": "sales"}


async def _spaces_row(sessions: SessionManager) -> None:
    await test_no_id_addresses_another_key_space("named")


PRECEDENCE_ROWS: dict[str, list[Callable[[SessionManager], Awaitable[None]]]] = {
    "job metadata (from the dispatcher)": [_job_metadata_row],
    "the caller's token session (bound by its own reference)": [
        trust_scenarios.callers_never_share_the_call_session
    ],
    "live metadata updates (`canUpdateOwnMetadata`)": [
        trust_scenarios.attributes_cannot_override_trusted_metadata
    ],
    "attributes (at mint, live)": [trust_scenarios.attributes_cannot_override_trusted_metadata],
    "`sip.*` attributes": [trust_scenarios.phone_numbers_only_from_sip_participants],
    "another caller's reference, a copied reference, a shared identity": [
        trust_scenarios.room_named_after_a_session_id,
        trust_scenarios.a_second_token_with_the_same_identity,
    ],
}
SPACE_ROWS = {"token sessions", "call sessions", "named sessions"}


async def test_every_readme_row_is_checked() -> None:
    assert _table_rows("**Precedence, one rule everywhere**") == list(PRECEDENCE_ROWS)
    assert set(_table_rows("**Key spaces.**")) == SPACE_ROWS
    for checks in PRECEDENCE_ROWS.values():
        for check in checks:
            await check(SessionManager(secret_key="t" * 40))
    await _spaces_row(SessionManager())
