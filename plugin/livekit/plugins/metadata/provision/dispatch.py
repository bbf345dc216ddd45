"""Agent dispatch into rooms that already exist (a token's ``roomConfig.agents`` only
applies when its join *creates* the room). Server errors become ``DispatchError`` with the
Twirp code, HTTP status and what to check, never the metadata or the server's free text."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, TypeVar

import aiohttp
from livekit import api
from livekit.api.agent_dispatch_service import AgentDispatchService

from ..codec import (
    DEFAULT_MAX_METADATA_BYTES,
    parse_metadata,
    serialize_metadata,
    validate_attributes,
)
from ..errors import DispatchError, RoutingError
from ..log import logger
from ..routing.route import Route

if TYPE_CHECKING:
    from pydantic import BaseModel
    from typing_extensions import Unpack

__all__ = [
    "AgentDispatchClient",
    "DispatchOptions",
    "dispatch_request",
    "ensure_dispatch",
    "server_call",
]

T = TypeVar("T")


class AgentDispatchClient(Protocol):
    """Anything with an ``agent_dispatch`` service, e.g. ``livekit.api.LiveKitAPI``."""

    @property
    def agent_dispatch(self) -> AgentDispatchService: ...


_HINTS = {
    "unauthenticated": "check LIVEKIT_API_KEY / LIVEKIT_API_SECRET match the server's keys",
    "permission_denied": "the API key needs the roomAdmin grant for this room",
    "not_found": "the room does not exist and the server does not auto-create rooms; "
    "create the room first",
    "invalid_argument": "check the agent name, the deployment and that metadata and "
    "attributes are within the server's size limits",
    "resource_exhausted": "metadata or attributes exceed the server's limits, or the "
    "server is rate limiting; shrink the payload or retry later",
    "failed_precondition": "the server refused the dispatch in the room's current state",
    "unavailable": "the server is unavailable; retry later",
    "internal": "the server failed internally; check its logs",
}
_STATUS_HINTS = {  # where the Twirp code says nothing (a bad key: 'unknown', 401)
    401: "it did not accept the API key and secret: set LIVEKIT_API_KEY and LIVEKIT_API_SECRET "
    "to a key pair from the server's `keys:` (`livekit-server --dev`: devkey / secret)",
    403: "the API key lacks a grant this call needs; use a key with the admin grants",
}


async def server_call(
    action: str, call: Awaitable[T], *, hints: Mapping[str, str] | None = None
) -> T:
    """Await a server call; failures become :class:`DispatchError` ("LiveKit refused to
    ``action``"), with ``hints`` as advice by Twirp code over the defaults."""
    try:
        return await call
    except api.TwirpError as exc:
        hint = (
            (hints or {}).get(exc.code)
            or _HINTS.get(exc.code)
            or _STATUS_HINTS.get(exc.status, "see the LiveKit server logs for details")
        )
        raise DispatchError(
            f"LiveKit refused to {action} (code {exc.code!r}, HTTP {exc.status}): {hint}"
        ) from None
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        what = "timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
        raise DispatchError(
            f"could not {action}: the request failed ({what}); check LIVEKIT_URL and that "
            "the LiveKit server is reachable"
        ) from None


def _metadata_text(metadata: Mapping[str, Any] | BaseModel | str | None, max_bytes: int) -> str:
    if isinstance(metadata, str):
        if metadata.strip():
            parse_metadata(metadata, max_bytes=max_bytes)  # a JSON object, within the limit
        return metadata
    return serialize_metadata(metadata, max_bytes=max_bytes) if metadata else ""


class DispatchOptions(TypedDict, total=False):
    """The keywords of :func:`ensure_dispatch` and :func:`dispatch_request` (documented there)."""

    metadata: Mapping[str, Any] | BaseModel | str | None
    attributes: Mapping[str, str] | None
    deployment: str | None
    max_metadata_bytes: int


def dispatch_request(
    room: str, route_or_agent: Route | str, **options: Unpack[DispatchOptions]
) -> api.CreateAgentDispatchRequest:
    """The ``CreateAgentDispatchRequest`` for a route (or an agent name) and a room;
    arguments and errors as :func:`ensure_dispatch` (without the server's)."""
    if not isinstance(room, str) or not room:
        raise ValueError("room must be a non-empty string")
    route = (
        Route(route_or_agent, route_or_agent) if isinstance(route_or_agent, str) else route_or_agent
    )
    if not isinstance(route, Route):
        raise TypeError(
            f"route_or_agent must be a Route or an agent name, not {type(route_or_agent).__name__}"
        )
    if route.rejected:
        raise RoutingError(f"the route is 'reject' ({route.label}); there is no agent to dispatch")
    if not route.agent_name:
        raise ValueError("the agent name must be a non-empty string")
    metadata = options.get("metadata")
    attributes = options.get("attributes")
    deployment = options.get("deployment")
    return api.CreateAgentDispatchRequest(
        agent_name=route.agent_name,
        room=room,
        metadata=_metadata_text(
            route.metadata if metadata is None else metadata,
            options.get("max_metadata_bytes", DEFAULT_MAX_METADATA_BYTES),
        ),
        deployment=(route.deployment if deployment is None else deployment) or "",
        attributes=validate_attributes(route.attributes if attributes is None else attributes),
    )


async def ensure_dispatch(
    lkapi: AgentDispatchClient,
    room: str,
    route_or_agent: Route | str,
    **options: Unpack[DispatchOptions],
) -> api.AgentDispatch:
    """The room's first live dispatch of the routed agent (same ``agent_name`` and
    ``deployment``), else a new one. Not race-free across concurrent callers (LiveKit has no
    conditional create): serialize per room if that matters.

    A route's metadata, attributes and deployment are the defaults of ``options``;
    ``metadata`` may be a mapping, a pydantic model or a JSON-object string (sent as is);
    ``deployment`` ``""`` is production.

    Raises:
        DispatchError: The server refused the request or could not be reached.
        RoutingError: A ``reject`` route; MetadataError, InvalidAttributes: bad inputs.
        ValueError: ``room`` or the agent name is empty.
    """
    request = dispatch_request(room, route_or_agent, **options)
    service = lkapi.agent_dispatch
    existing = await server_call(
        "list the room's agent dispatches", service.list_dispatch(room_name=room)
    )
    for dispatch in existing:
        if (
            dispatch.agent_name == request.agent_name
            and dispatch.deployment == request.deployment
            and not dispatch.state.deleted_at
        ):
            logger.debug(
                "agent %r already dispatched to room %r (dispatch %s)",
                request.agent_name,
                room,
                dispatch.id,
            )
            return dispatch
    created = await server_call("create the agent dispatch", service.create_dispatch(request))
    logger.info(
        "dispatched agent %r to room %r (dispatch %s, %d metadata bytes, attribute keys %s)",
        request.agent_name,
        room,
        created.id,
        len(request.metadata.encode("utf-8")),
        sorted(request.attributes),
    )
    return created
