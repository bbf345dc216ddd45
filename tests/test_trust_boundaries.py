"""Issue 21 and 31 on the memory store: no string a client chooses crosses into another
caller's session or overrides what the server decided (see tests/trust_scenarios.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest

from livekit.plugins.metadata.sessions.manager import SessionManager
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
