"""Function tools over the caller's session (issue 26), driven by a scripted LLM through
livekit-agents' own ``AgentSession.run`` and its result assertions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import orjson
import pytest
from livekit.agents import Agent, AgentSession, RunContext, function_tool
from pydantic import BaseModel

from livekit.plugins.metadata.agent.adapter import MetadataAdapter
from livekit.plugins.metadata.agent.handle import SessionHandle
from livekit.plugins.metadata.agent.selection import AgentFactoryMap
from livekit.plugins.metadata.agent.tools import (
    TOOL_TOKEN_HEADER,
    CallerSession,
    CallerSessionTools,
    caller_session,
    sign_tool_call,
    verify_tool_call,
)
from livekit.plugins.metadata.errors import ProtectedKey
from livekit.plugins.metadata.routing.route import Route
from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.sessions.manager import SessionManager
from tests.scripted_llm import ScriptedLLM, Turn
from tests.test_adapter import Room, fake_job_context, shutdown
from tests.test_adapter_views import PRIVATE, caller

pytestmark = pytest.mark.unit

RULES = {
    "rules": [
        {"name": "sales", "when": {"department": "sales"}, "agent": "sales"},
        {"name": "support", "when": {"department": "support"}, "agent": "support"},
    ],
    "default": "support",
}


class SupportAgent(Agent):
    def __init__(self, tools: list[Any] | None = None) -> None:
        super().__init__(instructions="support", tools=tools or [])


class SalesAgent(Agent):
    def __init__(self, tools: list[Any] | None = None) -> None:
        super().__init__(instructions="sales", tools=tools or [])


class Tier(BaseModel):
    tier: Literal["gold", "silver"] = "silver"


@asynccontextmanager
async def call(
    turns: list[Turn],
    tools: list[Any],
    *,
    adapter_options: dict[str, Any] | None = None,
    built: list[str] | None = None,
    sessions: SessionManager | None = None,
    room: Room | None = None,
) -> AsyncIterator[tuple[AgentSession[CallerSession], SessionHandle, ScriptedLLM]]:
    """One caller (public department/tier, private customer) in a job whose on_change
    re-routes with the rules, and a started AgentSession whose userdata is its session."""
    sessions, room = sessions or SessionManager(), room or Room()
    ada = await caller(
        sessions, "ada", {"department": "support", "tier": "silver"}, {"customer": PRIVATE}
    )
    room.join(ada)
    router = MetadataRouter.from_dict(RULES)

    def build(name: str) -> Any:
        def factory(route: Route) -> Agent:
            if built is not None:
                built.append(name)
            return (SalesAgent if name == "sales" else SupportAgent)(tools)

        return factory

    agents = AgentFactoryMap(router, {"sales": build("sales"), "support": build("support")})
    session_ref: list[AgentSession[CallerSession]] = []

    async def on_change(identity: str) -> None:
        routed = handle.route_input()
        if session_ref:
            agents.reroute(session_ref[0], routed.metadata, attributes=routed.attributes)

    with fake_job_context(room=room) as ctx:
        adapter = MetadataAdapter(sessions, **(adapter_options or {}))
        handle = await adapter.attach(ctx, ada, on_change=on_change)  # type: ignore[arg-type]
        routed = handle.route_input()
        assert routed.identity == "ada"
        _, agent = agents.select(routed.metadata, attributes=routed.attributes)
        model = ScriptedLLM(turns)
        session: AgentSession[CallerSession] = AgentSession(
            llm=model, userdata=CallerSession(handle, routed.identity)
        )
        session_ref.append(session)
        async with session:
            await session.start(agent)
            yield session, handle, model
        await shutdown(ctx)


async def test_a_tool_reads_a_private_key_of_the_caller_it_serves() -> None:
    @function_tool
    async def customer_id(context: RunContext[CallerSession]) -> str:
        """The caller's customer id."""
        view = context.userdata.metadata()  # typed: the caller's own view
        return str(view["customer"])

    tools: list[Any] = [customer_id, CallerSessionTools(read=["customer"], read_public=True)]
    turns: list[Turn] = [[("customer_id", {})], [("read_caller_data", {"key": "customer"})]]
    async with call(turns, tools) as (session, handle, _model):
        first = await session.run(user_input="what is my customer id?")
        first.expect.next_event().is_function_call(name="customer_id")
        first.expect.next_event().is_function_call_output(output=PRIVATE)
        second = await session.run(user_input="again, from the toolset")
        second.expect.next_event().is_function_call(name="read_caller_data")
        second.expect.next_event().is_function_call_output(output=orjson.dumps(PRIVATE).decode())
        # Reading published nothing: the call session still holds no caller's key.
        assert "customer" not in await handle.get()


async def test_a_private_key_is_readable_only_when_listed() -> None:
    tools: list[Any] = [CallerSessionTools(read_public=True)]
    turns: list[Turn] = [
        [("read_caller_data", {"key": "customer"})],
        [("read_caller_data", {"key": "department"})],
    ]
    async with call(turns, tools) as (session, _, _model):
        refused = await session.run(user_input="customer?")
        refused.expect.next_event().is_function_call(name="read_caller_data")
        out = refused.expect.next_event().is_function_call_output().event().item.output
        assert "refused" in out
        assert PRIVATE not in out
        public = await session.run(user_input="department?")
        public.expect.next_event().is_function_call(name="read_caller_data")
        public.expect.next_event().is_function_call_output(output='"support"')


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("language", "fr", "not writable"),  # not allow-listed
        ("customer", "forged", "server decided"),  # a private key
        ("note", "x" * 400, "over the limit"),  # the view would be too large
        ("tier", "platinum", "does not match"),  # the schema refuses it
        ("lk-metadata.session", "forged", "reserved"),  # the plugin's namespace
    ],
)
async def test_a_refused_write_changes_nothing_and_tells_the_llm_why(
    key: str, value: str, why: str
) -> None:
    tools: list[Any] = [
        CallerSessionTools(write=["customer", "note", "tier", "lk-metadata.session"])
    ]
    turns: list[Turn] = [[("update_caller_data", {"key": key, "value": value})]]
    options = {"max_metadata_bytes": 300, "schema": Tier}
    async with call(turns, tools, adapter_options=options) as (session, handle, _model):
        before = handle.participant_metadata("ada")
        result = await session.run(user_input="change it")
        result.expect.next_event().is_function_call(name="update_caller_data")
        out = result.expect.next_event().is_function_call_output().event().item.output
        assert out.startswith("refused")
        assert why in out
        assert value not in out  # the LLM is told why, never the value echoed back
        assert handle.participant_metadata("ada") == before
        where = handle.caller_session_id("ada")
        assert where is not None
        assert await handle.space.get(where) == {}


async def test_a_write_that_changes_the_route_hands_off_once() -> None:
    built: list[str] = []
    toolset = CallerSessionTools(
        write=["department", "note"],
        transfer_key="department",
        destinations=["sales", "support"],
        router=MetadataRouter.from_dict(RULES),
    )
    turns: list[Turn] = [
        [
            ("update_caller_data", {"key": "department", "value": "sales"}),
            ("update_caller_data", {"key": "note", "value": "wants a quote"}),
        ]
    ]
    async with call(turns, [toolset], built=built) as (session, handle, _model):
        assert built == ["support"]
        result = await session.run(user_input="I want to buy")
        await handle.wait_idle()
        result.expect.contains_agent_handoff(new_agent_type=SalesAgent)
        assert isinstance(session.current_agent, SalesAgent)
        assert built == ["support", "sales"]  # one handoff for two writes
        view = handle.participant_metadata("ada")
        assert view["department"] == "sales"
        assert view["note"] == "wants a quote"
        assert handle.route_input().metadata["department"] == "sales"
        where = handle.caller_session_id("ada")
        assert where is not None
        stored = await handle.space.get(where)
        assert stored == {"department": "sales", "note": "wants a quote"}
        assert "department" not in await handle.get()  # the call session stays the job's


async def test_transfer_goes_through_the_rules() -> None:
    built: list[str] = []
    toolset = CallerSessionTools(
        transfer_key="department",
        destinations=["sales", "support"],
        router=MetadataRouter.from_dict(RULES),
    )
    turns: list[Turn] = [
        [("transfer", {"destination": "billing"})],
        [("transfer", {"destination": "sales"})],
    ]
    async with call(turns, [toolset], built=built) as (session, handle, _model):
        unknown = await session.run(user_input="billing please")
        unknown.expect.next_event().is_function_call(name="transfer")
        out = unknown.expect.next_event().is_function_call_output().event().item.output
        assert out.startswith("refused: unknown destination")
        await handle.wait_idle()
        assert built == ["support"]
        result = await session.run(user_input="sales please")
        result.expect.next_event().is_function_call(name="transfer")
        result.expect.next_event().is_function_call_output(output="ok: the sales agent takes over")
        await handle.wait_idle()
        assert isinstance(session.current_agent, SalesAgent)
        assert built == ["support", "sales"]


async def test_concurrent_writes_from_two_tools_lose_nothing() -> None:
    toolset = CallerSessionTools(write=["a", "b"])
    turns: list[Turn] = [
        [
            ("update_caller_data", {"key": "a", "value": "1"}),
            ("update_caller_data", {"key": "b", "value": "2"}),
        ]
    ]
    async with call(turns, [toolset]) as (session, handle, _model):
        result = await session.run(user_input="set both")
        outputs = [e.item.output for e in result.events if e.type == "function_call_output"]
        assert outputs == ["ok: 'a' updated", "ok: 'b' updated"]
        caller_of = session.userdata
        many = [caller_of.update({f"k{i}": i}) for i in range(20)]
        await asyncio.gather(*many)
        view = handle.participant_metadata("ada")
        assert view["a"] == "1"
        assert view["b"] == "2"
        assert all(view[f"k{i}"] == i for i in range(20))
        where = handle.caller_session_id("ada")
        assert where is not None
        stored = await handle.space.get(where)
        assert stored == {"a": "1", "b": "2", **{f"k{i}": i for i in range(20)}}


async def test_the_client_overrides_a_tool_write_only_with_a_new_value() -> None:
    room = Room()
    async with call([], [], room=room) as (session, handle, _model):
        ada = room.remote_participants["ada"]
        await session.userdata.update({"department": "sales"})
        # The client re-sends its unchanged document: the tool's write stands.
        room.change_metadata(ada, '{"department": "support", "tier": "silver", "x": 1}')
        await handle.wait_idle()
        assert handle.participant_metadata("ada")["department"] == "sales"
        # A new value from the client for that key: the newest intent wins.
        room.change_metadata(ada, '{"department": "billing"}')
        await handle.wait_idle()
        assert handle.participant_metadata("ada")["department"] == "billing"


def test_caller_session_is_found_in_userdata_or_its_attribute() -> None:
    class Context:
        def __init__(self, userdata: Any) -> None:
            self.userdata = userdata

    mine = CallerSession(handle=None, identity="ada")  # type: ignore[arg-type]

    class Mine:
        caller_session = mine

    assert caller_session(Context(mine)) is mine  # type: ignore[arg-type]
    assert caller_session(Context(Mine())) is mine  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="CallerSession"):
        caller_session(Context(object()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="destination"):
        CallerSessionTools(transfer_key="department")


def test_a_signed_tool_call_is_checked_on_the_receiving_side() -> None:
    secret = "s" * 40
    agent_side = SessionManager(secret_key=secret)
    webhook_side = SessionManager(secret_key=secret)
    signed = sign_tool_call(agent_side, "lookup_order", "RM_call", {"order": "42"})
    assert TOOL_TOKEN_HEADER in signed.headers
    assert b"lookup_order" in signed.body
    assert signed.headers[TOOL_TOKEN_HEADER] not in str(signed.body)
    payload = verify_tool_call(webhook_side, signed.body, signed.headers, function="lookup_order")
    assert payload == {
        "function": "lookup_order",
        "call_id": "RM_call",
        "argument": {"order": "42"},
    }
    lower = {k.lower(): v for k, v in signed.headers.items()}
    assert verify_tool_call(webhook_side, signed.body, lower, function="lookup_order") is not None
    # Another function, another call, a forged body, no token, another secret: refused.
    assert verify_tool_call(webhook_side, signed.body, signed.headers, function="refund") is None
    forged = signed.body.replace(b"RM_call", b"RM_other")
    assert verify_tool_call(webhook_side, forged, signed.headers, function="lookup_order") is None
    assert verify_tool_call(webhook_side, signed.body, {}, function="lookup_order") is None
    assert verify_tool_call(webhook_side, b"not json", signed.headers, function="x") is None
    other = SessionManager(secret_key="t" * 40)
    assert verify_tool_call(other, signed.body, signed.headers, function="lookup_order") is None


async def test_the_example_worker_tools_answer_privately_and_hand_off() -> None:
    """examples/agent.py's two tools, on its own rules and Agent factories."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "agent.py"
    spec = importlib.util.spec_from_file_location("example_agent_tools", path)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    sessions, room = SessionManager(), Room()
    ada = await caller(sessions, "ada", {"department": "support"}, {"customer_id": PRIVATE})
    room.join(ada)
    session_ref: list[AgentSession[CallerSession]] = []
    handoffs: list[str] = []

    async def on_change(identity: str) -> None:
        routed = handle.route_input()
        if session_ref and example.AGENTS.reroute(
            session_ref[0], routed.metadata, attributes=routed.attributes
        ):
            handoffs.append(example.ROUTER.route(routed.metadata).agent)

    turns: list[Turn] = [
        [("my_customer_id", {})],
        [("change_department", {"department": "sales"})],
    ]
    with fake_job_context(room=room) as ctx:
        handle = await MetadataAdapter(sessions).attach(ctx, ada, on_change=on_change)  # type: ignore[arg-type]
        routed = handle.route_input()
        _, agent = example.choose_agent(routed.metadata, routed.attributes)
        assert isinstance(agent, example.SupportAgent)
        session: AgentSession[CallerSession] = AgentSession(
            llm=ScriptedLLM(turns), userdata=CallerSession(handle, "ada")
        )
        session_ref.append(session)
        async with session:
            await session.start(agent)
            asked = await session.run(user_input="what is my customer id?")
            asked.expect.next_event().is_function_call(name="my_customer_id")
            asked.expect.next_event().is_function_call_output(output=PRIVATE)
            moved = await session.run(user_input="sales please")
            moved.expect.next_event().is_function_call(name="change_department")
            await handle.wait_idle()
            assert isinstance(session.current_agent, example.SalesAgent)
            assert handoffs == ["sales"]
            assert PRIVATE not in orjson.dumps(await handle.get()).decode()
        await shutdown(ctx)


async def test_update_participant_refuses_bad_input_and_untracked_callers() -> None:
    async with call([], []) as (session, handle, _model):
        before = handle.participant_metadata("ada")
        with pytest.raises(LookupError):
            await handle.update_participant("nobody", {"a": 1})
        with pytest.raises(TypeError):
            await handle.update_participant("ada", {"a": object()})
        with pytest.raises(TypeError):
            await handle.update_participant("ada", {1: "a"})  # type: ignore[dict-item]
        with pytest.raises(ProtectedKey):
            await handle.update_participant("ada", {}, remove=["customer"])
        assert handle.participant_metadata("ada") == before
        assert handle.participant_protected("ada") == frozenset({"customer"})
        assert handle.participant_protected("nobody") == frozenset()
        assert handle.caller_session_id("nobody") is None
        # A removal drops what a tool wrote, never what the client or the server set.
        await session.userdata.update({"note": "x"})
        await session.userdata.update({}, remove=["note"])
        assert handle.participant_metadata("ada") == before
        routed = session.userdata.route_input()
        assert routed.identity == "ada"
        assert routed.metadata["customer"] == PRIVATE
