"""Answering job requests (``on_request``) with the routing rules.

Jobs whose metadata routes to this worker are accepted, the others rejected with
``terminate=False`` (LiveKit offers them to another). When the route depends on a SIP
caller's numbers (attributes, after the offer), a job that may be ours is accepted and the
entrypoint decides (:func:`~.selection.select`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._util import keys_for_log, raw_size
from ..codec import DEFAULT_MAX_METADATA_BYTES, parse_metadata
from ..errors import MetadataError, NoRouteMatched
from ..log import logger
from ..routing.route import Route
from ..routing.router import MetadataRouter

if TYPE_CHECKING:
    from livekit.agents import JobRequest

__all__ = [
    "MetadataSource",
    "RequestHandler",
    "RequestStats",
    "request_handler",
    "route_job_request",
]

MetadataSource = (
    Literal["job", "room"] | Callable[["JobRequest"], "str | bytes | Mapping[str, Any] | None"]
)
"""Where a job request's metadata comes from: the job's, the room's, or a callable."""


@dataclass
class RequestStats:
    """Counters of the answers to job requests: ``accepted``, ``rejected`` (with
    ``terminate=False``) and ``invalid`` (metadata routed as empty; also in one of those)."""

    accepted: int = 0
    rejected: int = 0
    invalid: int = 0


def _request_metadata(
    req: JobRequest, metadata_from: MetadataSource, max_metadata_bytes: int, stats: RequestStats
) -> dict[str, Any]:
    raw: Any = None
    try:
        if metadata_from == "job":
            raw = req.job.metadata
        elif metadata_from == "room":
            raw = req.room.metadata
        else:
            raw = metadata_from(req)
        return (
            dict(raw)
            if isinstance(raw, Mapping)
            else parse_metadata(raw, max_bytes=max_metadata_bytes)
        )
    except MetadataError as exc:
        what = f"invalid metadata ({type(exc).__name__}, {raw_size(raw)} bytes)"
    except Exception as exc:
        what = f"metadata_from failed ({type(exc).__name__})"
    stats.invalid += 1
    logger.warning("job %s: %s; routing it as empty metadata", req.id, what)
    return {}


async def _accept(
    req: JobRequest,
    stats: RequestStats,
    why: str,
    *args: object,
    attributes: dict[str, str] | None = None,
) -> None:
    logger.info("job %s: accepting: " + why, req.id, *args)
    stats.accepted += 1
    await req.accept(attributes=attributes)


async def _reject(req: JobRequest, stats: RequestStats, why: str, *args: object) -> None:
    logger.info("job %s: rejecting (terminate=False): " + why, req.id, *args)
    stats.rejected += 1
    await req.reject(terminate=False)


async def _decide(
    router: MetadataRouter,
    req: JobRequest,
    md: dict[str, Any],
    me: str,
    publish: bool,
    stats: RequestStats,
) -> Route | None:
    pending = router.pending_agent_names(md)
    if pending is not None:
        # The route depends on participant attributes (a SIP caller's numbers) that
        # only exist once the caller joins: accept if it may be ours (module doc).
        if me in pending:
            await _accept(req, stats, "the route depends on participant attributes")
        else:
            await _reject(req, stats, "no possible route is ours")
        return None
    try:
        route = router.route(md)
    except NoRouteMatched:
        await _reject(req, stats, "no rule matched (keys %s)", keys_for_log(sorted(md)))
        return None
    if route.rejected or route.agent_name != me:
        agent = "reject" if route.rejected else repr(route.agent_name)
        await _reject(req, stats, "routed to %s by %s, this worker is %r", agent, route.label, me)
        return None
    attrs = {"route": route.agent, "route.rule": route.label} if publish else None
    await _accept(req, stats, "agent %r by %s", route.agent, route.label, attributes=attrs)
    return route


@dataclass(slots=True)
class RequestHandler:
    """An ``on_request`` handler (see :func:`request_handler`) that counts its answers."""

    router: MetadataRouter
    agent_name: str | None = None
    metadata_from: MetadataSource = "job"
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES
    publish_route: bool = False
    stats: RequestStats = field(default_factory=RequestStats, init=False)
    """What this handler answered so far."""

    def __post_init__(self) -> None:
        if self.metadata_from not in ("job", "room") and not callable(self.metadata_from):
            raise ValueError("metadata_from must be 'job', 'room' or a callable")

    async def __call__(self, req: JobRequest) -> None:
        """Answer ``req`` (see :func:`route_job_request`)."""
        await self.answer(req)

    async def answer(self, req: JobRequest) -> Route | None:
        md = _request_metadata(req, self.metadata_from, self.max_metadata_bytes, self.stats)
        me = self.agent_name if self.agent_name is not None else req.agent_name
        return await _decide(self.router, req, md, me, self.publish_route, self.stats)


async def route_job_request(
    router: MetadataRouter,
    req: JobRequest,
    *,
    agent_name: str | None = None,
    metadata_from: MetadataSource = "job",
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    publish_route: bool = False,
    stats: RequestStats | None = None,
) -> Route | None:
    """Accept the job if its route's ``agent_name`` is ``agent_name`` (default:
    ``req.agent_name``), else reject it with ``terminate=False``; invalid metadata routes as
    ``{}`` (logged, counted). ``publish_route`` accepts with attributes ``route`` and
    ``route.rule``. Returns the route, or None (rejected, or waiting for attributes).
    """
    handler = RequestHandler(router, agent_name, metadata_from, max_metadata_bytes, publish_route)
    if stats is not None:
        handler.stats = stats
    return await handler.answer(req)


def request_handler(
    router: MetadataRouter,
    agent_name: str | None = None,
    *,
    metadata_from: MetadataSource = "job",
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    publish_route: bool = False,
) -> RequestHandler:
    """A ready ``on_request`` handler (:func:`route_job_request`), counting its answers."""
    if agent_name is not None and (not isinstance(agent_name, str) or not agent_name):
        raise ValueError("agent_name must be a non-empty string or None")
    return RequestHandler(router, agent_name, metadata_from, max_metadata_bytes, publish_route)
