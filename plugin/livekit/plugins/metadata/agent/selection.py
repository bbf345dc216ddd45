"""Agent-side routing: answer job requests and build the routed Agent in the entrypoint.

A worker uses one rule set twice. In ``on_request`` (:func:`request_handler`) it
accepts the jobs whose metadata routes to it and rejects the others with
``terminate=False``, so LiveKit offers them to another worker. In the entrypoint
(:func:`select`, :class:`AgentFactoryMap`) it builds the ``Agent`` class the
route names, and :func:`reroute` hands a running session to another Agent when
its metadata changes.

Phone calls: a SIP caller's numbers (``sip.phoneNumber``, ``sip.trunkPhoneNumber``)
arrive as attributes of the SIP participant, which joins after the job was
offered. A job request therefore never sees them, and a handler that rejected
every job it could not route yet would turn every call away. So when the decision
depends on ``when_attributes`` that cannot be known at request time, the handler
accepts the job if any route the attributes could still choose is this worker's,
and leaves the choice to the entrypoint, which routes again with the caller's
attributes (``select(..., attributes=...)``).

This is the routing code that imports ``livekit.agents``; :mod:`..routing` does not.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Union

from .._util import keys_for_log
from ..codec import DEFAULT_MAX_METADATA_BYTES, parse_metadata
from ..errors import ConfigError, MetadataError, NoRouteMatched, RoutingError
from ..log import logger
from ..routing.phone import number_problem
from ..routing.route import Route
from ..routing.router import MetadataRouter

if TYPE_CHECKING:
    from livekit.agents import Agent, AgentSession, JobRequest

__all__ = [
    "AgentFactory",
    "AgentFactoryMap",
    "MetadataSource",
    "Selection",
    "request_handler",
    "reroute",
    "route_job_request",
    "route_of",
    "select",
]

AgentFactory = Union["type[Agent]", Callable[[Route], "Agent"]]
"""An ``Agent`` subclass (called with no arguments) or a callable ``(route) -> Agent``."""

MetadataSource = (
    Literal["job", "room"] | Callable[["JobRequest"], "str | bytes | Mapping[str, Any] | None"]
)
"""Where a job request's metadata comes from: the job's, the room's, or a callable."""


class Selection(NamedTuple):
    """The result of :func:`select`: the route and the Agent built for it."""

    route: Route
    agent: Agent


# --------------------------------------------------------------------------- job requests


def _check_source(metadata_from: Any) -> None:
    if metadata_from not in ("job", "room") and not callable(metadata_from):
        raise ValueError("metadata_from must be 'job', 'room' or a callable")


def _request_metadata(
    req: JobRequest, metadata_from: MetadataSource, max_bytes: int
) -> dict[str, Any] | None:
    """The job request's metadata, or ``None`` (logged) when it cannot be read."""
    raw: Any = None
    try:
        if metadata_from == "job":
            raw = req.job.metadata
        elif metadata_from == "room":
            raw = req.room.metadata
        else:
            raw = metadata_from(req)
        return dict(raw) if isinstance(raw, Mapping) else parse_metadata(raw, max_bytes=max_bytes)
    except MetadataError as exc:
        size = len(raw.encode("utf-8", "replace")) if isinstance(raw, str) else None
        logger.warning(
            "job %s: rejecting (terminate=False): invalid metadata (%s, %s bytes)",
            req.id,
            type(exc).__name__,
            size,
        )
    except Exception as exc:
        logger.warning(
            "job %s: rejecting (terminate=False): metadata_from failed (%s)",
            req.id,
            type(exc).__name__,
        )
    return None


async def _decide(
    router: MetadataRouter, req: JobRequest, md: dict[str, Any], me: str, publish: bool
) -> Route | None:
    pending = router.pending_agent_names(md)
    if pending is not None:
        # The route depends on participant attributes (a SIP caller's numbers) that
        # only exist once the caller joins: accept if it may be ours (module doc).
        if me in pending:
            logger.info("job %s: accepting: the route depends on participant attributes", req.id)
            await req.accept()
        else:
            logger.info("job %s: rejecting (terminate=False): no possible route is ours", req.id)
            await req.reject(terminate=False)
        return None
    try:
        route = router.route(md)
    except NoRouteMatched:
        logger.info(
            "job %s: rejecting (terminate=False): no rule matched (keys %s)",
            req.id,
            keys_for_log(sorted(md)),
        )
        await req.reject(terminate=False)
        return None
    if route.rejected or route.agent_name != me:
        logger.info(
            "job %s: rejecting (terminate=False): routed to %s by %s, this worker is %r",
            req.id,
            "reject" if route.rejected else repr(route.agent_name),
            route.label,
            me,
        )
        await req.reject(terminate=False)
        return None
    attrs = {"route": route.agent, "route.rule": route.label} if publish else None
    logger.info("job %s: accepting: agent %r by %s", req.id, route.agent, route.label)
    await req.accept(attributes=attrs)
    return route


async def route_job_request(
    router: MetadataRouter,
    req: JobRequest,
    *,
    agent_name: str | None = None,
    metadata_from: MetadataSource = "job",
    max_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    publish_route: bool = False,
) -> Route | None:
    """Answer a job request: accept it if its metadata routes to this worker.

    The job is accepted when the route's ``agent_name`` equals ``agent_name``
    (default: the name the job was dispatched to, ``req.agent_name``, i.e. this
    worker's registered name). Otherwise, and for invalid metadata, no match or
    a ``reject`` route, it is rejected with ``terminate=False`` so the server can
    offer it to another worker. When the route depends on participant attributes
    (``when_attributes``), the job is accepted if it may route here, and the
    entrypoint decides (see the module docstring). Logs carry the job id, keys
    and sizes only.

    Args:
        router: The rules.
        req: The ``JobRequest`` given to ``on_request``.
        agent_name: This worker's agent_name (default ``req.agent_name``).
        metadata_from: ``"job"`` (``req.job.metadata``, default), ``"room"``
            (``req.room.metadata``) or a callable ``(req) -> str | bytes | Mapping | None``.
        max_bytes: Size limit for the metadata string.
        publish_route: Accept with agent-participant attributes ``route`` and
            ``route.rule`` set to the decision.

    Returns:
        The route if the job was accepted with a decision; ``None`` if it was
        rejected, or accepted while the route waits for participant attributes.
    """
    _check_source(metadata_from)
    md = _request_metadata(req, metadata_from, max_bytes)
    if md is None:
        await req.reject(terminate=False)
        return None
    me = agent_name if agent_name is not None else req.agent_name
    return await _decide(router, req, md, me, publish_route)


def request_handler(
    router: MetadataRouter,
    agent_name: str | None = None,
    *,
    metadata_from: MetadataSource = "job",
    max_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    publish_route: bool = False,
) -> Callable[[JobRequest], Awaitable[None]]:
    """A ready ``on_request`` handler for ``AgentServer.rtc_session(on_request=...)``.

    See :func:`route_job_request` for the decision and the arguments.
    """
    if agent_name is not None and (not isinstance(agent_name, str) or not agent_name):
        raise ValueError("agent_name must be a non-empty string or None")
    _check_source(metadata_from)

    async def on_request(req: JobRequest) -> None:
        await route_job_request(
            router,
            req,
            agent_name=agent_name,
            metadata_from=metadata_from,
            max_bytes=max_bytes,
            publish_route=publish_route,
        )

    return on_request


# --------------------------------------------------------------------------- entrypoint

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


_PHONE_ATTRIBUTES: dict[int, tuple[MetadataRouter, frozenset[str]]] = {}
_NOTED_JOBS: dict[str, None] = {}
_MAX_NOTED_JOBS = 1024


def _phone_attributes(router: MetadataRouter) -> frozenset[str]:
    """The attributes the router's ``phone``/``phone_prefix`` conditions read."""
    cached = _PHONE_ATTRIBUTES.get(id(router))
    if cached is not None and cached[0] is router:
        return cached[1]
    names = frozenset(
        c.path
        for rule in router.rule_set.rules
        for c in rule.conds
        if c.source == "attributes" and c.op in ("phone", "phone_prefix")
    )
    if len(_PHONE_ATTRIBUTES) >= 64:  # a few routers per process; never unbounded
        _PHONE_ATTRIBUTES.clear()
    _PHONE_ATTRIBUTES[id(router)] = (router, names)
    return names


def _note_unreadable_numbers(router: MetadataRouter, attributes: Mapping[str, str]) -> None:
    """Log, once per job, each phone attribute that cannot be read as a number.

    Such a number matches no phone rule, so the call goes to the default; the
    log says which attribute, its length and why, never the number.
    """
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


def _routed(
    router: MetadataRouter,
    md: Mapping[str, Any],
    attributes: Mapping[str, str] | None,
    factories: Mapping[str, AgentFactory],
) -> Route:
    route = router.route(md, attributes=attributes)
    if route.rejected:
        raise RoutingError(f"the routing rules reject this metadata ({route.label})")
    if route.agent not in factories:
        raise ConfigError(
            f"no Agent factory for routed agent {route.agent!r} ({route.label}); "
            f"factories: {sorted(factories)}"
        )
    return route


def select(
    router: MetadataRouter,
    metadata: Mapping[str, Any] | str | bytes | None,
    factories: Mapping[str, AgentFactory],
    *,
    attributes: Mapping[str, str] | None = None,
    fallback: str | None = None,
    max_bytes: int = DEFAULT_MAX_METADATA_BYTES,
) -> Selection:
    """Route ``metadata`` (and ``attributes``) and build the Agent for the route.

    Args:
        router: The rules.
        metadata: A parsed mapping, or a raw metadata string (parsed with
            ``parse_metadata``; ``None``/``""`` mean ``{}``).
        factories: Agent factories by agent name: an ``Agent`` subclass (called
            with no arguments) or a callable ``(route) -> Agent``.
        attributes: The participant attributes ``when_attributes`` reads (e.g. the
            SIP caller's); ``None`` means none.
        fallback: An agent name in ``factories`` used when the metadata is
            invalid, nothing matches, the route is ``reject`` or names an agent
            without a factory. Without it those cases raise.
        max_bytes: Size limit for a raw metadata string.

    Returns:
        ``Selection(route, agent)``; the agent remembers its route (:func:`route_of`).

    Raises:
        MetadataError: Invalid raw metadata and no fallback.
        NoRouteMatched: No match, no default and no fallback.
        RoutingError: The route is ``reject`` and there is no fallback.
        ConfigError: No factory for the routed agent (or the fallback) and no fallback.
    """
    if fallback is not None and fallback not in factories:
        raise ConfigError(f"fallback agent {fallback!r} has no factory")
    md: Mapping[str, Any] = {}
    try:
        md = (
            metadata
            if isinstance(metadata, Mapping)
            else parse_metadata(metadata, max_bytes=max_bytes)
        )
        if attributes:
            _note_unreadable_numbers(router, attributes)
        route = _routed(router, md, attributes, factories)
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


class AgentFactoryMap:
    """Agent factories by agent name, checked against a router at construction.

    One worker can serve several agents (LiveKit allows one ``rtc_session`` per
    server): route inside the entrypoint and start the Agent this map builds.

    Example::

        agents = AgentFactoryMap(router, {"support": SupportAgent, "sales": SalesAgent},
                                 fallback="support")
        route, agent = agents.select(ctx.job.metadata)
        await session.start(agent, room=ctx.room)
    """

    __slots__ = ("_factories", "_fallback", "_router")

    def __init__(
        self,
        router: MetadataRouter,
        factories: Mapping[str, AgentFactory],
        *,
        fallback: str | None = None,
    ) -> None:
        """Check that every agent the router can choose has a factory.

        Raises:
            ConfigError: An agent has no factory, or ``fallback`` is not a key.
            TypeError: A factory is neither an Agent subclass nor callable.
        """
        self._router = router
        self._factories = dict(factories)
        for name, factory in self._factories.items():
            if not callable(factory):
                raise TypeError(f"factory for agent {name!r} must be an Agent subclass or callable")
        missing = sorted(router.agents - self._factories.keys())
        if missing:
            raise ConfigError(f"no Agent factory for routed agent(s): {', '.join(missing)}")
        if fallback is not None and fallback not in self._factories:
            raise ConfigError(f"fallback agent {fallback!r} has no factory")
        self._fallback = fallback

    @property
    def router(self) -> MetadataRouter:
        """The router this map selects with."""
        return self._router

    @property
    def factories(self) -> Mapping[str, AgentFactory]:
        """The factories by agent name."""
        return self._factories

    def select(
        self,
        metadata: Mapping[str, Any] | str | bytes | None,
        *,
        attributes: Mapping[str, str] | None = None,
    ) -> Selection:
        """Route ``metadata`` (and ``attributes``) and build its Agent (see :func:`select`)."""
        return select(
            self._router,
            metadata,
            self._factories,
            attributes=attributes,
            fallback=self._fallback,
        )

    def reroute(
        self,
        session: AgentSession[Any],
        metadata: Mapping[str, Any],
        *,
        attributes: Mapping[str, str] | None = None,
    ) -> bool:
        """Hand off to a new Agent if ``metadata`` now routes elsewhere (see :func:`reroute`)."""
        return reroute(session, self._router, self._factories, metadata, attributes=attributes)


def reroute(
    session: AgentSession[Any],
    router: MetadataRouter,
    factories: Mapping[str, AgentFactory],
    metadata: Mapping[str, Any],
    *,
    attributes: Mapping[str, str] | None = None,
) -> bool:
    """Re-route a running session after its metadata (or attributes) changed.

    If the new route names a different agent than the session's current one,
    build the new Agent and hand off with ``session.update_agent``. Invalid
    routing (no match, ``reject``, an agent without a factory) keeps the current
    agent and is logged (keys and rule names only).

    Returns:
        True if the session was handed to a new Agent.
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
    current = session.current_agent
    current_route = route_of(current)
    factory = factories[route.agent]
    if current_route is not None:
        if current_route.agent == route.agent:
            return False
    elif isinstance(factory, type) and type(current) is factory:
        return False
    agent = _build_agent(factory, route)
    logger.info("reroute: handing off to agent %r (%s)", route.agent, route.label)
    session.update_agent(agent)
    return True
