"""Agent-side routing in the entrypoint: build the routed Agent, and hand off when it changes.

:func:`select` (or :class:`AgentFactoryMap`) builds the ``Agent`` the route names;
:func:`reroute` hands a running session to another Agent when the route changes.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Union

from ..codec import DEFAULT_MAX_METADATA_BYTES, parse_metadata
from ..errors import ConfigError, MetadataError, NoRouteMatched, RoutingError
from ..log import logger
from ..routing.phone import number_problem
from ..routing.route import Route
from ..routing.router import MetadataRouter

if TYPE_CHECKING:
    from livekit.agents import (
        Agent,
        AgentSession,
        CloseEvent,
        ConversationItemAddedEvent,
    )

__all__ = [
    "AgentFactory",
    "AgentFactoryMap",
    "Selection",
    "reroute",
    "route_of",
    "select",
]

AgentFactory = Union["type[Agent]", Callable[[Route], "Agent"]]
"""An ``Agent`` subclass (called with no arguments) or a callable ``(route) -> Agent``."""


class Selection(NamedTuple):
    """The result of :func:`select`: the route and the Agent built for it."""

    route: Route
    agent: Agent


_ROUTES: weakref.WeakKeyDictionary[Any, Route] = weakref.WeakKeyDictionary()


def route_of(agent: Agent) -> Route | None:
    """The route an Agent was built for by :func:`select`, if any."""
    try:
        return _ROUTES.get(agent)
    except TypeError:
        return None


def _build_agent(factory: AgentFactory, route: Route) -> Agent:
    from livekit.agents import Agent

    agent = factory() if isinstance(factory, type) else factory(route)
    if not isinstance(agent, Agent):
        raise TypeError(
            f"the factory for agent {route.agent!r} returned {type(agent).__name__}, not an Agent"
        )
    with contextlib.suppress(TypeError):  # an Agent subclass without weakref support
        _ROUTES[agent] = route
    return agent


_NOTED_JOBS: dict[str, None] = {}
_MAX_NOTED_JOBS = 1024


@functools.lru_cache(maxsize=64)  # a few routers per process
def _phone_attributes(router: MetadataRouter) -> frozenset[str]:
    """The attributes the router's ``phone``/``phone_prefix`` conditions read."""
    return frozenset(
        c.path
        for rule in router.rule_set.rules
        for c in rule.conds
        if c.source == "attributes" and c.op in ("phone", "phone_prefix")
    )


def _note_unreadable_numbers(router: MetadataRouter, attributes: Mapping[str, str]) -> None:
    """Log, once per job, each phone attribute that is no number (name, length, why; never
    the number): it matches no phone rule."""
    region = router.rule_set.phone_region
    problems = [
        (name, len(value), problem)
        for name in sorted(_phone_attributes(router))
        if isinstance(value := attributes.get(name), str)
        and (problem := number_problem(value, region)) is not None
    ]
    if not problems:
        return
    from livekit.agents import get_job_context

    ctx = get_job_context(required=False)
    job = ctx.job.id if ctx is not None else None
    if job is not None:
        if job in _NOTED_JOBS:
            return
        if len(_NOTED_JOBS) >= _MAX_NOTED_JOBS:
            _NOTED_JOBS.pop(next(iter(_NOTED_JOBS)))
        _NOTED_JOBS[job] = None
    for name, size, problem in problems:
        logger.warning(
            "job %s: attribute %s (%d characters) is not a phone number (%s): "
            "no phone rule can match it",
            job or "-",
            name,
            size,
            problem,
        )


def select(
    router: MetadataRouter,
    metadata: Mapping[str, Any] | str | bytes | None,
    factories: Mapping[str, AgentFactory],
    *,
    attributes: Mapping[str, str] | None = None,
    fallback: str | None = None,
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
) -> Selection:
    """Route ``metadata`` (a mapping or raw JSON) and ``attributes``, and build the Agent.

    ``fallback`` (a key of ``factories``) is built instead of raising (without it):
    MetadataError (invalid raw metadata), NoRouteMatched, RoutingError (the route is
    ``reject``), ConfigError (no factory). The agent remembers its route (:func:`route_of`).
    """
    if fallback is not None and fallback not in factories:
        raise ConfigError(f"fallback agent {fallback!r} has no factory")
    md: Mapping[str, Any] = {}
    try:
        md = (
            metadata
            if isinstance(metadata, Mapping)
            else parse_metadata(metadata, max_bytes=max_metadata_bytes)
        )
        if attributes:
            _note_unreadable_numbers(router, attributes)
        route = router.route(md, attributes=attributes)
        if route.rejected:
            raise RoutingError(f"the routing rules reject this metadata ({route.label})")
        if route.agent not in factories:
            raise ConfigError(
                f"no Agent factory for routed agent {route.agent!r} ({route.label}); "
                f"factories: {sorted(factories)}"
            )
    except (MetadataError, RoutingError, ConfigError) as exc:
        if fallback is None:
            raise
        logger.warning("routing fell back to %r: %s", fallback, type(exc).__name__)
        route = Route(
            agent=fallback,
            agent_name=router.worker or fallback,
            metadata=dict(md),
            is_fallback=True,
        )
    return Selection(route, _build_agent(factories[route.agent], route))


@dataclass(frozen=True, eq=False, slots=True)
class AgentFactoryMap:
    """Agent factories by agent name, checked against a router: one worker, several agents.

    Raises ConfigError (an agent without a factory, ``fallback`` not a key) or TypeError
    (a factory that is not callable)::

        agents = AgentFactoryMap(router, {"support": SupportAgent, "sales": SalesAgent},
                                 fallback="support")
        route, agent = agents.select(ctx.job.metadata)
        await session.start(agent, room=ctx.room)
    """

    router: MetadataRouter
    factories: Mapping[str, AgentFactory]
    fallback: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        factories = dict(self.factories)
        object.__setattr__(self, "factories", factories)
        for name, factory in factories.items():
            if not callable(factory):
                raise TypeError(f"factory for agent {name!r} must be an Agent subclass or callable")
        missing = sorted(self.router.agents - factories.keys())
        if missing:
            raise ConfigError(f"no Agent factory for routed agent(s): {', '.join(missing)}")
        if self.fallback is not None and self.fallback not in factories:
            raise ConfigError(f"fallback agent {self.fallback!r} has no factory")

    def select(
        self,
        metadata: Mapping[str, Any] | str | bytes | None,
        *,
        attributes: Mapping[str, str] | None = None,
    ) -> Selection:
        """Route ``metadata`` (and ``attributes``) and build its Agent (see :func:`select`)."""
        return select(
            self.router,
            metadata,
            self.factories,
            attributes=attributes,
            fallback=self.fallback,
        )

    def reroute(
        self,
        session: AgentSession[Any],
        metadata: Mapping[str, Any],
        *,
        attributes: Mapping[str, str] | None = None,
    ) -> bool:
        """Hand off to a new Agent if ``metadata`` now routes elsewhere (see :func:`reroute`)."""
        return reroute(session, self.router, self.factories, metadata, attributes=attributes)


@dataclass(slots=True)
class _Handoffs:
    """What :func:`reroute` asked of one session: the handoff in flight and the newest after
    it (livekit-agents runs handoffs in order and reports the running one's agent as
    ``current_agent`` even when a later one is queued)."""

    inflight: tuple[Agent, Route] | None = None
    pending: tuple[Agent, Route] | None = None


_HANDOFFS: weakref.WeakKeyDictionary[Any, _Handoffs] = weakref.WeakKeyDictionary()


def _handoffs(session: AgentSession[Any]) -> _Handoffs:
    """The session's handoff record, created (with its event listeners) on first use."""
    st = _HANDOFFS.get(session)
    if st is not None:
        return st
    from livekit.agents import AgentHandoff

    st = _HANDOFFS[session] = _Handoffs()
    ref = weakref.ref(session)  # the listeners must not keep the session alive

    def on_item(ev: ConversationItemAddedEvent) -> None:
        # A handoff took effect: if it is the one in flight, start the newest wanted one.
        item = ev.item
        if not isinstance(item, AgentHandoff) or st.inflight is None:
            return
        if item.new_agent_id != st.inflight[0].id:
            return
        pending, st.inflight, st.pending = st.pending, None, None
        sess = ref()
        if pending is not None and sess is not None:
            _hand_off(sess, st, *pending)

    def on_close(_: CloseEvent) -> None:
        st.inflight = st.pending = None

    session.on("conversation_item_added", on_item)
    session.on("close", on_close)
    return st


def _hand_off(session: AgentSession[Any], st: _Handoffs, agent: Agent, route: Route) -> None:
    logger.info("reroute: handing off to agent %r (%s)", route.agent, route.label)
    st.inflight = (agent, route)
    try:
        session.update_agent(agent)
    except Exception as exc:  # runs inside a livekit-agents event callback too
        st.inflight = None
        logger.warning("reroute: handoff to agent %r failed (%s)", route.agent, type(exc).__name__)


def _same_agent(route: Route, factory: AgentFactory, current: Agent) -> bool:
    current_route = route_of(current)
    if current_route is not None:
        return current_route.agent == route.agent
    return isinstance(factory, type) and type(current) is factory


def reroute(
    session: AgentSession[Any],
    router: MetadataRouter,
    factories: Mapping[str, AgentFactory],
    metadata: Mapping[str, Any],
    *,
    attributes: Mapping[str, str] | None = None,
) -> bool:
    """Re-route a running session after its metadata (or attributes) changed.

    A new agent is handed over with ``session.update_agent``, one handoff in flight at a
    time, the newest route waiting for it. Invalid routing keeps the agent (logged).
    True if the agent the session will end up running changed.
    """
    try:
        route = router.route(metadata, attributes=attributes)
    except NoRouteMatched:
        logger.info("reroute: no rule matched; keeping the current agent")
        return False
    if route.rejected or route.agent not in factories:
        logger.info(
            "reroute: route %s (%s) has no agent to hand off to; keeping the current agent",
            route.label,
            "reject" if route.rejected else repr(route.agent),
        )
        return False
    current = session.current_agent  # raises RuntimeError before the session has an agent
    st = _handoffs(session)
    factory = factories[route.agent]
    if st.inflight is None:
        if _same_agent(route, factory, current):
            return False
        _hand_off(session, st, _build_agent(factory, route), route)
        return True
    if (st.pending or st.inflight)[1].agent == route.agent:
        return False
    if st.inflight[1].agent == route.agent:  # back to the agent in flight: drop the waiting one
        logger.info("reroute: agent %r is already on its way (%s)", route.agent, route.label)
        st.pending = None
        return True
    logger.info("reroute: agent %r (%s) waits for the handoff in flight", route.agent, route.label)
    st.pending = (_build_agent(factory, route), route)
    return True
