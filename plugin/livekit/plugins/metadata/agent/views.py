"""The agent's view of each caller: token sessions, owner checks, and what to route on.

A token minted in session mode (``TokenIssuer`` given a ``SessionManager``, or
the token endpoint) owns a session in the store. The participant carries its id
in the attribute :data:`~livekit.plugins.metadata.codec.SESSION_ATTRIBUTE`, the
dispatch in the job-metadata key :data:`~livekit.plugins.metadata.codec.SESSION_KEY`.
The session holds the checked metadata, private keys included, and an owner
record (:data:`OWNER_KEY`: ``{"identity": ..., "room": ...}``) written by the
issuer. A reference is trusted only when that record names the participant that
carries it (and the job's room): an attribute copied from another participant
opens nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ..codec import PLUGIN_ATTRIBUTE_PREFIX
from ..errors import InvalidSessionReference
from ..tokens.issuer import SESSION_OWNER_KEY

if TYPE_CHECKING:
    from livekit import rtc

    from ..sessions.manager import SessionManager

__all__ = [
    "OWNER_KEY",
    "ParticipantView",
    "RouteInput",
    "resolve_token_session",
    "without_plugin_keys",
]

OWNER_KEY = SESSION_OWNER_KEY
"""Session key of the owner record ``{"identity": ..., "room": ...}`` the issuer writes
(the same string as :data:`~livekit.plugins.metadata.tokens.issuer.SESSION_OWNER_KEY`)."""

_MAX_REFERENCE = 256


class RouteInput(NamedTuple):
    """What the entrypoint routes on: one participant's metadata and live attributes.

    Attributes:
        metadata: The job's view (job metadata, job attributes, the job's token
            session) overlaid with the participant's view (token session,
            live metadata, live attributes).
        attributes: The participant's live attributes, without empty values
            (a hidden SIP number is a missing attribute) and without this
            plugin's ``lk-metadata.*`` keys.
        identity: The participant routed on, or None when no participant is tracked.
    """

    metadata: dict[str, Any]
    attributes: dict[str, str]
    identity: str | None


@dataclass
class ParticipantView:
    """One tracked participant as the agent sees it (kept in the adapter's event order)."""

    participant: rtc.Participant
    session: dict[str, Any] = field(default_factory=dict)
    """The participant's token session, without plugin keys (private keys included)."""
    private: frozenset[str] = frozenset()
    """Keys only the token session holds: live metadata and attributes cannot override them."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Token session overlaid with every accepted live metadata update."""
    attributes: dict[str, str] = field(default_factory=dict)
    """Live attributes (without plugin keys)."""

    @property
    def identity(self) -> str:
        return self.participant.identity

    def route_input(self, job_view: Mapping[str, Any]) -> RouteInput:
        live = {k: v for k, v in self.attributes.items() if v != ""}
        return RouteInput({**job_view, **self.metadata, **live}, live, self.identity)


def without_plugin_keys(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """``mapping`` without this plugin's reserved ``lk-metadata.*`` keys."""
    return {k: v for k, v in mapping.items() if not k.startswith(PLUGIN_ATTRIBUTE_PREFIX)}


async def resolve_token_session(
    sessions: SessionManager, reference: object, *, identity: str | None, room: str
) -> dict[str, Any]:
    """The token session a reference names, once its owner record matches.

    Args:
        sessions: Where token sessions live.
        reference: The session id found in an attribute or job metadata.
        identity: The participant carrying it; None for the job's own reference
            (then only the room is checked: job metadata comes from the dispatcher).
        room: The job's room name.

    Returns:
        The session's metadata without plugin keys.

    Raises:
        InvalidSessionReference: Not a session id, no such (or an expired)
            session, or one whose owner is another participant or room. The
            message never contains the id (it is a capability) nor a value.
    """
    if not isinstance(reference, str) or not 0 < len(reference) <= _MAX_REFERENCE:
        raise InvalidSessionReference("session reference is not a session id string")
    data = await sessions.token_sessions.get(reference)
    if not data:
        raise InvalidSessionReference(
            "session reference names no live session in this worker's store (unknown or "
            "expired): the token endpoint and the workers must share one store (e.g. Redis) "
            "for token sessions to reach the agent; otherwise mint a new token or extend "
            "the session TTL"
        )
    owner = data.get(OWNER_KEY)
    if not isinstance(owner, Mapping) or owner.get("room") != room:
        raise InvalidSessionReference(
            "session reference names a session of another room (or one without an owner record)"
        )
    if identity is not None and owner.get("identity") != identity:
        raise InvalidSessionReference(
            "session reference names a session owned by another participant"
        )
    return without_plugin_keys(data)
