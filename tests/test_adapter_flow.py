"""The adapter under floods, slow callbacks and store outages (issues 34 and 35).

Unit tier: fake job context, the stand-in room of ``tests/test_adapter.py``, and a
store stand-in that fails on demand. The paced flood and the callers' churn (real time,
a traced heap) are in ``test_adapter_soak.py`` (integration tier).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from typing import Any

import orjson
import pytest

from livekit.plugins.metadata.agent.adapter import MetadataAdapter
from livekit.plugins.metadata.errors import StoreUnavailable
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.sessions.memory import MemoryStore
from livekit.plugins.metadata.tokens.issuer import TokenIssuer
from tests.test_adapter import Participant, Room, fake_job_context, shutdown
from tests.trust_scenarios import SECRET, joined

pytestmark = pytest.mark.unit


async def test_a_flood_costs_one_on_change_per_settled_state() -> None:
    room = Room()
    ada = Participant("ada", metadata='{"department": "support"}')
    room.join(ada)
    calls: list[tuple[str, Any, Any]] = []
    with fake_job_context(room=room) as ctx:
        handle_box: list[Any] = []

        async def on_change(identity: str) -> None:
            routed = handle_box[0].route_input()
            calls.append((identity, routed.metadata.get("department"), routed.metadata.get("k")))
            await asyncio.sleep(0.01)  # a handoff takes time; updates keep arriving

        adapter = MetadataAdapter(SessionManager())
        handle = await adapter.attach(ctx, ada, on_change=on_change)  # type: ignore[arg-type]
        handle_box.append(handle)
        expected: dict[str, Any] = {"department": "support"}
        for i in range(1000):
            doc = {"department": "sales" if i % 2 else "support", f"k{i % 7}": i, "k": i}
            room.change_metadata(ada, orjson.dumps(doc).decode())
            expected.update(doc)
            if i % 100 == 0:
                await asyncio.sleep(0)  # on_change starts while the flood goes on
        await handle.wait_idle()
        assert handle.participant_metadata("ada") == expected  # no key's last value lost
        assert calls[-1] == ("ada", "sales", 999)  # the final state
        assert len(calls) <= 11  # one per settled state, not one per update
        assert adapter.stats.applied >= 1000
        assert adapter.stats.coalesced >= 1000 - len(calls) - 1
        assert adapter.stats.flooding == 1  # logged once
        await shutdown(ctx)


async def test_a_single_update_re_routes_at_once() -> None:
    room = Room()
    ada = Participant("ada", metadata='{"department": "support"}')
    room.join(ada)
    seen = asyncio.Event()
    with fake_job_context(room=room) as ctx:

        async def on_change(identity: str) -> None:
            seen.set()

        handle = await MetadataAdapter(SessionManager()).attach(ctx, ada, on_change=on_change)  # type: ignore[arg-type]
        room.change_metadata(ada, '{"department": "sales"}')
        # Applied synchronously in the event callback: the view is current before any await.
        assert handle.participant_metadata("ada")["department"] == "sales"
        await asyncio.wait_for(seen.wait(), 5)
        await shutdown(ctx)


async def test_a_slow_on_change_never_holds_up_later_updates() -> None:
    room = Room()
    ada = Participant("ada", metadata='{"n": 0}')
    room.join(ada)
    release = asyncio.Event()
    started = asyncio.Event()
    with fake_job_context(room=room) as ctx:

        async def on_change(identity: str) -> None:
            started.set()
            await release.wait()  # e.g. a set_attributes acknowledgement that takes 5 s

        handle = await MetadataAdapter(SessionManager()).attach(ctx, ada, on_change=on_change)  # type: ignore[arg-type]
        room.change_metadata(ada, '{"n": 1}')
        await asyncio.wait_for(started.wait(), 5)
        for n in range(2, 50):
            room.change_metadata(ada, orjson.dumps({"n": n}).decode())
        assert handle.participant_metadata("ada")["n"] == 49  # applied meanwhile
        assert handle.route_input().metadata["n"] == 49
        release.set()
        await handle.wait_idle()
        await shutdown(ctx)


class FlakyStore(MemoryStore):
    """A MemoryStore that answers StoreUnavailable while ``down`` is set."""

    down = False

    async def get(self, session_id: str) -> dict[str, Any]:
        if self.down:
            raise StoreUnavailable("store down (test)")
        return await super().get(session_id)

    async def merge(
        self,
        session_id: str,
        fields: Mapping[str, bytes],
        *,
        remove: Collection[str] = (),
        ttl: float,
        max_bytes: int,
    ) -> None:
        if self.down:
            raise StoreUnavailable("store down (test)")
        await super().merge(session_id, fields, remove=remove, ttl=ttl, max_bytes=max_bytes)


async def test_a_store_outage_converges_without_another_update(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from livekit.plugins.metadata.agent import options

    monkeypatch.setattr(options, "_RETRY_FIRST", 0.01)
    caplog.set_level(logging.INFO, logger="livekit.plugins.metadata")
    store = FlakyStore()
    sessions = SessionManager(store, secret_key=SECRET)
    minted = await TokenIssuer("devkey", SECRET, sessions=sessions).amint(
        "ada", "room-1", metadata={"department": "support"}, private_metadata={"tier": "vip"}
    )
    room = Room()
    ada = joined(minted.token)
    room.join(ada)
    changes: list[str] = []
    with fake_job_context(room=room, job_metadata='{"agent": "x"}') as ctx:

        async def on_change(identity: str) -> None:
            changes.append(identity)

        store.down = True
        adapter = MetadataAdapter(sessions, sync_room_metadata=True)
        handle = await adapter.attach(ctx, ada, on_change=on_change)  # type: ignore[arg-type]
        # Routing does not wait for the store: the public metadata is there at once.
        assert handle.route_input().metadata == {"agent": "x", "department": "support"}
        room.change_metadata(ada, '{"department": "sales"}')
        room.change_room_metadata('{"topic": "outage"}')
        assert handle.route_input().metadata["department"] == "sales"
        await asyncio.sleep(0.05)
        store.down = False  # Redis is back: nothing more is sent
        for _ in range(200):
            if (
                handle.route_input().metadata.get("tier") == "vip"
                and (await handle.get()).get("topic") == "outage"
            ):
                break
            await asyncio.sleep(0.02)
        routed = handle.route_input()
        assert routed.metadata == {"agent": "x", "department": "sales", "tier": "vip"}
        assert await handle.get() == {"agent": "x", "topic": "outage"}  # retried writes landed
        assert "ada" in changes  # on_change ran for the late binding
        assert adapter.stats.failed >= 2
        assert "after a store outage" in caplog.text
        await shutdown(ctx)


def test_flood_rate_is_validated() -> None:
    for bad in (0, -1, float("nan"), float("inf"), True, "20"):
        with pytest.raises(ValueError, match="flood_rate"):
            MetadataAdapter(SessionManager(), flood_rate=bad)  # type: ignore[arg-type]


def test_settle_is_validated() -> None:
    for bad in (-1, float("nan"), 60, True, "0.2"):
        with pytest.raises(ValueError, match="settle"):
            MetadataAdapter(SessionManager(), settle=bad)  # type: ignore[arg-type]
