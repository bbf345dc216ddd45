"""``reroute`` under update floods: the running agent always converges to the latest route.

livekit-agents runs handoffs one after another and, while one runs, reports that one's
agent as ``session.current_agent`` even when a later one is queued. A ``reroute`` that
compared against it skipped needed handoffs or repeated stale ones, and the call could
end on the wrong agent for good (issue 35). These tests start a real ``AgentSession``
with no room and no model, flood it with updates at random pace, and check that the
agent it ends up running is the route of the last routable update, every time, with at
most one handoff in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit.agents import Agent, AgentHandoff, AgentSession, ConversationItemAddedEvent
from livekit.agents.testing import fake_job_context

from livekit.plugins.metadata.agent.selection import AgentFactoryMap, reroute, route_of, select
from livekit.plugins.metadata.errors import NoRouteMatched
from livekit.plugins.metadata.routing.route import Route
from livekit.plugins.metadata.routing.router import MetadataRouter
from tests.strategies import examples

pytestmark = pytest.mark.unit

SETTLE_GUARD_S = 120  # a hang guard only: settling takes a few event-loop turns


class Tracked(Agent):
    """An Agent that says when it started running (``on_enter`` runs once its activity has)."""

    def __init__(self, instructions: str) -> None:
        super().__init__(instructions=instructions)
        self.entered = asyncio.Event()

    async def on_enter(self) -> None:
        self.entered.set()


class SupportAgent(Tracked):
    def __init__(self) -> None:
        super().__init__("support")


class SpanishSupportAgent(Tracked):
    def __init__(self, route: Route) -> None:
        super().__init__(f"soporte ({route.label})")


class SalesAgent(Tracked):
    def __init__(self) -> None:
        super().__init__("sales")


class GeneralAgent(Tracked):
    def __init__(self) -> None:
        super().__init__("general")


RULES = {
    "rules": [
        {"name": "blocked", "when": {"blocked": True}, "reject": True},
        {"name": "es", "when": {"department": "support", "language": "es"}, "agent": "support-es"},
        {"name": "support", "when": {"department": "support"}, "agent": "support"},
        {"name": "sales", "when": {"department": "sales"}, "agent": "sales"},
        {"name": "nobody", "when": {"department": "nobody"}, "agent": "unserved"},
    ],
    "default": "general",
}
ROUTER = MetadataRouter.from_dict(RULES)
FACTORIES: dict[str, Any] = {
    "support": SupportAgent,
    "support-es": lambda route: SpanishSupportAgent(route),
    "sales": SalesAgent,
    "general": GeneralAgent,
}

SUPPORT = {"department": "support"}
SALES = {"department": "sales"}
PAYLOADS: list[dict[str, Any]] = [
    SUPPORT,
    SALES,
    {"department": "support", "language": "es"},
    {"department": "hr"},  # the default
    {"blocked": True},  # reject: keeps the agent
    {"department": "nobody"},  # an agent without a factory: keeps the agent
]


def routable(metadata: dict[str, Any]) -> str | None:
    """The agent ``metadata`` hands off to, or ``None`` when it keeps the current one."""
    try:
        route = ROUTER.route(metadata)
    except NoRouteMatched:
        return None
    return None if route.rejected or route.agent not in FACTORIES else route.agent


class Handoffs:
    """Counts the session's ``update_agent`` calls and the handoffs that took effect."""

    def __init__(self, session: AgentSession[Any]) -> None:
        self.requested = 0
        self.done = 0
        self.most_in_flight = 0
        self._settled = asyncio.Event()
        self._settled.set()
        # Registered before reroute's own listener, so it counts a handoff first.
        session.on("conversation_item_added", self._on_item)
        update_agent = session.update_agent

        def counting_update_agent(agent: Agent) -> None:
            self.requested += 1
            self.most_in_flight = max(self.most_in_flight, self.requested - self.done)
            self._settled.clear()
            update_agent(agent)

        session.update_agent = counting_update_agent  # type: ignore[method-assign]

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        if isinstance(ev.item, AgentHandoff):
            self.done += 1
            if self.done >= self.requested:
                self._settled.set()

    async def settled(self, session: AgentSession[Any]) -> None:
        """Every requested handoff took effect and the last agent runs.

        A handoff taking effect may start the next one (reroute's waiting route), so
        the condition is checked again after each wake-up.
        """
        while True:
            await asyncio.wait_for(self._settled.wait(), SETTLE_GUARD_S)
            agent = session.current_agent
            assert isinstance(agent, Tracked)
            await asyncio.wait_for(agent.entered.wait(), SETTLE_GUARD_S)
            if self.done >= self.requested and session.current_agent is agent:
                return


@contextlib.asynccontextmanager
async def started(metadata: dict[str, Any]) -> AsyncIterator[tuple[AgentSession[Any], Handoffs]]:
    """A session with no room and no model, running the agent ``metadata`` routes to."""
    with fake_job_context() as ctx:
        try:
            session: AgentSession[Any] = AgentSession()
            handoffs = Handoffs(session)
            await session.start(select(ROUTER, metadata, FACTORIES).agent)
            handoffs.done = 0  # the start is not a handoff
            try:
                yield session, handoffs
            finally:
                await session.aclose()
        finally:
            tempdir = getattr(ctx, "_tempdir", None)  # see tests/test_router.py
            if tempdir is not None:
                tempdir.cleanup()


def to(session: AgentSession[Any], metadata: dict[str, Any]) -> bool:
    return reroute(session, ROUTER, FACTORIES, metadata)


def running(session: AgentSession[Any]) -> str | None:
    """The route of the agent the session runs (it must be running, not merely named)."""
    agent = session.current_agent
    assert agent.session is session  # raises RuntimeError unless its activity runs
    route = route_of(agent)
    return None if route is None else route.agent


SEEDS = range(examples(20))
"""20 floods of ``UPDATES`` under the dev profile (4 in the unit tier, 40 deep, 200 thorough)."""
UPDATES = 200


@pytest.mark.parametrize("seed", SEEDS)
async def test_the_final_agent_is_the_route_of_the_final_state(seed: int) -> None:
    rng = random.Random(seed)
    async with started(SUPPORT) as (session, handoffs):
        expected = "support"
        for i in range(UPDATES):
            # Half the flood alternates support/sales (the field report), half is random.
            alternate = rng.random() < 0.5
            metadata = (SALES if i % 2 else SUPPORT) if alternate else rng.choice(PAYLOADS)
            to(session, metadata)
            expected = routable(metadata) or expected
            await asyncio.sleep(rng.uniform(0, 0.001))
        if rng.random() < 0.5:  # end on sales half the time, as in the field report
            to(session, SALES)
            expected = "sales"
        await handoffs.settled(session)
        assert running(session) == expected, f"seed {seed}"
        assert handoffs.most_in_flight <= 1, f"seed {seed}"


async def test_a_route_wanted_during_a_handoff_waits_and_the_newest_wins() -> None:
    async with started(SUPPORT) as (session, handoffs):
        assert to(session, SALES) is True  # in flight
        assert to(session, {"department": "hr"}) is True  # waits
        assert to(session, {"department": "support", "language": "es"}) is True
        assert to(session, {"blocked": True}) is False
        assert to(session, {"department": "support", "language": "es"}) is False
        assert handoffs.requested == 1
        await handoffs.settled(session)
        assert running(session) == "support-es"
        assert handoffs.requested == 2  # sales, then only the newest wanted one
        assert handoffs.most_in_flight == 1


async def test_back_to_the_agent_in_flight_drops_the_waiting_one() -> None:
    async with started(SUPPORT) as (session, handoffs):
        assert to(session, SALES) is True
        assert to(session, SUPPORT) is True  # waits behind sales
        assert to(session, SALES) is True  # sales is on its way already
        assert to(session, SALES) is False
        await handoffs.settled(session)
        assert running(session) == "sales"
        assert handoffs.requested == 1


async def test_the_stale_current_agent_neither_skips_nor_repeats_a_handoff() -> None:
    """The field report's sequence: compared with a stale ``current_agent``, it ended on support."""
    async with started(SUPPORT) as (session, handoffs):
        for metadata in (SALES, SUPPORT, SALES, SUPPORT, SALES):
            to(session, metadata)
            await asyncio.sleep(0)
        await handoffs.settled(session)
        assert running(session) == "sales"
        assert handoffs.most_in_flight <= 1


async def test_after_settling_it_compares_with_the_running_agent_again() -> None:
    async with started(SUPPORT) as (session, handoffs):
        assert to(session, SALES) is True
        await handoffs.settled(session)
        assert to(session, SALES) is False
        assert to(session, SUPPORT) is True
        await handoffs.settled(session)
        assert running(session) == "support"
        assert handoffs.requested == 2


async def test_a_handoff_made_outside_reroute_is_respected() -> None:
    async with started(SUPPORT) as (session, handoffs):
        session.update_agent(SalesAgent())  # e.g. a tool's handoff
        await handoffs.settled(session)
        assert to(session, SALES) is False  # the class matches the factory
        assert to(session, SUPPORT) is True
        await handoffs.settled(session)
        assert running(session) == "support"


async def test_reroute_needs_a_session_with_an_agent() -> None:
    session: AgentSession[Any] = AgentSession()
    with pytest.raises(RuntimeError):
        to(session, SALES)


async def test_the_factory_map_reroutes_the_same_way() -> None:
    served = MetadataRouter.from_dict({**RULES, "rules": RULES["rules"][:-1]})
    agents = AgentFactoryMap(served, FACTORIES)
    async with started(SUPPORT) as (session, handoffs):
        assert agents.reroute(session, SALES) is True
        assert agents.reroute(session, SUPPORT) is True
        assert agents.reroute(session, SALES) is True
        await handoffs.settled(session)
        assert running(session) == "sales"
        assert handoffs.requested == 1


def test_payloads_cover_every_kind_of_update() -> None:
    kinds: set[str | None] = {routable(p) for p in PAYLOADS}
    assert kinds == {"support", "sales", "support-es", "general", None}
