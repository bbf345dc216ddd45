"""The adapter over real time and a traced heap (issues 34 and 35).

A 1 s paced flood (real sleeps) and 320 callers coming and going under ``tracemalloc``.
Integration tier: too slow for the unit tier; the stand-ins are those of
``tests/test_adapter.py`` and ``tests/test_adapter_flow.py``.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import orjson
import pytest

from livekit.plugins.metadata.agent.adapter import MetadataAdapter
from livekit.plugins.metadata.sessions.manager import SessionManager
from tests.test_adapter import Participant, Room, fake_job_context, shutdown

pytestmark = pytest.mark.integration


async def test_callers_who_leave_are_forgotten() -> None:
    room = Room()
    first = Participant("first", metadata='{"a": 1}')
    room.join(first)
    blob = "x" * 30_000
    with fake_job_context(room=room) as ctx:
        adapter = MetadataAdapter(SessionManager(), track="all")
        handle = await adapter.attach(ctx, first)  # type: ignore[arg-type]

        async def churn(n: int, start: int) -> None:
            for i in range(start, start + n):
                p = Participant(f"c{i}", metadata=orjson.dumps({"blob": blob, "i": i}).decode())
                room.join(p)
                await handle.wait_idle()
                room.remote_participants.pop(p.identity)
                room.emit("participant_disconnected", p)

        await churn(20, 0)  # warm up
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await churn(300, 20)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert handle.participants == ("first",)  # 320 callers came and went
        assert adapter.stats.forgotten == 320
        assert grown < 1_000_000, grown  # 300 x 30 KB views would be 9 MB
        # A caller of track="first" who leaves and comes back is followed again.
        room.emit("participant_disconnected", first)
        assert handle.participants == ()
        room.join(Participant("first", metadata='{"a": 2}'))
        await handle.wait_idle()
        assert handle.participant_metadata("first") == {"a": 2}
        await shutdown(ctx)


async def test_a_paced_flood_costs_a_handful_of_calls_and_ends_on_the_final_state() -> None:
    """Updates 5 ms apart (slower than a fast on_change): still not one call per update."""
    room = Room()
    ada = Participant("ada", metadata='{"n": -1}')
    room.join(ada)
    calls: list[Any] = []
    with fake_job_context(room=room) as ctx:
        handle_box: list[Any] = []

        async def on_change(identity: str) -> None:
            calls.append(handle_box[0].participant_metadata(identity)["n"])

        adapter = MetadataAdapter(SessionManager(), settle=0.05)
        handle = await adapter.attach(ctx, ada, on_change=on_change)  # type: ignore[arg-type]
        handle_box.append(handle)
        for n in range(200):
            room.change_metadata(ada, orjson.dumps({"n": n}).decode())
            await asyncio.sleep(0.005)
        await handle.wait_idle()
        assert calls[0] == 0  # the first change after a quiet spell: at once
        assert calls[-1] == 199  # the final state
        # ~1 s of flood, settle 0.05 s: a call at most every 8 x settle while it lasts
        assert len(calls) <= 8, calls
        await shutdown(ctx)
