"""Issue 26 on a real Redis: tool writes persist under the caller's key, concurrent writes
lose nothing, a routing write hands off once, and the caller's key goes with the call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from livekit.plugins.metadata.agent.tools import CallerSessionTools
from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.sessions.manager import SessionManager
from tests.scripted_llm import Turn
from tests.test_tools import RULES, SalesAgent, call

pytestmark = [pytest.mark.integration, pytest.mark.store("redis")]


async def test_tool_writes_on_redis(sessions: SessionManager) -> None:
    built: list[str] = []
    toolset = CallerSessionTools(
        write=["department", "note"],
        transfer_key="department",
        destinations=["sales"],
        router=MetadataRouter.from_dict(RULES),
    )
    turns: list[Turn] = [
        [
            ("update_caller_data", {"key": "note", "value": "vip"}),
            ("transfer", {"destination": "sales"}),
        ]
    ]
    tools: list[Any] = [toolset]
    async with call(turns, tools, built=built, sessions=sessions) as (session, handle, _):
        result = await session.run(user_input="sales")
        await handle.wait_idle()
        result.expect.contains_agent_handoff(new_agent_type=SalesAgent)
        assert built == ["support", "sales"]
        await asyncio.gather(*(session.userdata.update({f"k{i}": i}) for i in range(30)))
        where = handle.caller_session_id("ada")
        assert where is not None
        stored = await sessions.call_sessions.get(where)
        assert stored == {"note": "vip", "department": "sales", **{f"k{i}": i for i in range(30)}}
        view = handle.participant_metadata("ada")
        assert all(view[f"k{i}"] == i for i in range(30))
        await handle.aclose(delete=True)
        assert await sessions.call_sessions.get(where) == {}
