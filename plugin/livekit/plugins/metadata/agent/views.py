"""The agent's view of each caller, and the one precedence every view obeys.

A caller's view is its token session (bound by the reference its own token
carries, after the owner record was checked), under its live metadata; its
live attributes stay a separate map. What the server decided (the keys listed
in the owner record's ``protected``, plus the adapter's ``protected_keys``)
is never replaced by anything the client sends, an attribute never becomes or
shadows a metadata key, and attributes in a namespace a LiveKit service sets
on its own participants (``sip.*`` on SIP participants, ``lk.*``) are ignored
when another kind of participant claims them. Views live in the job's memory;
the call session in the store holds the job's metadata and what the agent
writes, never a caller's keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from livekit import rtc

from ..codec import (
    PLUGIN_ATTRIBUTE_PREFIX,
    SERVICE_ATTRIBUTE_PREFIXES,
    SESSION_OWNER_KEY,
    attributes_size,
)
from ..errors import (
    InvalidAttributes,
    InvalidSessionReference,
    MetadataTooLarge,
    ProtectedKey,
    ReservedKey,
)

if TYPE_CHECKING:
    from ..sessions.manager import SessionManager

__all__ = [
    "ParticipantView",
    "RouteInput",
    "TokenSession",
    "resolve_token_session",
    "without_plugin_keys",
]

_MAX_REFERENCE = 256
_MISSING = object()

_KIND = rtc.ParticipantKind
_SERVICE_KINDS: dict[str, frozenset[int]] = {
    # LiveKit's SIP service sets the numbers, call id and headers on SIP participants.
    "sip.": frozenset({_KIND.PARTICIPANT_KIND_SIP}),
    # LiveKit and its services (agents, egress, ingress, SIP, connectors) own ``lk.``.
    "lk.": frozenset(
        {
            _KIND.PARTICIPANT_KIND_SIP,
            _KIND.PARTICIPANT_KIND_AGENT,
            _KIND.PARTICIPANT_KIND_EGRESS,
            _KIND.PARTICIPANT_KIND_INGRESS,
            _KIND.PARTICIPANT_KIND_CONNECTOR,
            _KIND.PARTICIPANT_KIND_BRIDGE,
        }
    ),
}
assert set(_SERVICE_KINDS) == set(SERVICE_ATTRIBUTE_PREFIXES)


class RouteInput(NamedTuple):
    """What the entrypoint routes on: one participant's metadata and live attributes.

    Attributes:
        metadata: The job's metadata overlaid with the participant's view (its
            token session, then its accepted live metadata). Never an attribute.
        attributes: The participant's accepted live attributes (no empty values,
            so a hidden SIP number is missing; no ``lk-metadata.*`` keys), under
            the job's attributes, which the dispatcher set.
        identity: The participant routed on, or None when no participant is tracked.
    """

    metadata: dict[str, Any]
    attributes: dict[str, str]
    identity: str | None


class TokenSession(NamedTuple):
    """A token session the agent trusts: its keys and the keys the server decided."""

    metadata: dict[str, Any]
    protected: frozenset[str]


def service_attribute(key: str, kind: int) -> bool:
    """True when ``key`` is in a LiveKit service namespace that ``kind`` may not set."""
    for prefix, kinds in _SERVICE_KINDS.items():
        if key.startswith(prefix):
            return kind not in kinds
    return False


@dataclass
class ParticipantView:
    """One tracked participant as the agent sees it (kept in the adapter's event order).

    The precedence lives here: :meth:`accept_metadata` and
    :meth:`accept_attributes` are the only ways client input reaches a view.
    """

    participant: rtc.Participant
    session: dict[str, Any] = field(default_factory=dict)
    """The participant's token session, without plugin keys (private keys included)."""
    protected: frozenset[str] = frozenset()
    """Metadata keys the client cannot write: the server's decision and ``protected_keys``."""
    live: dict[str, Any] = field(default_factory=dict)
    """Every accepted live metadata update, merged in arrival order."""
    attributes: dict[str, str] = field(default_factory=dict)
    """Accepted live attributes."""
    reported: set[str] = field(default_factory=set)
    """Refusal reasons already logged for this participant (each is logged once)."""
    agent: dict[str, Any] = field(default_factory=dict)
    """What the agent wrote to this view (a tool's writes), over the live metadata until
    the client sends a new value for the same key."""

    @property
    def identity(self) -> str:
        return self.participant.identity

    def bind(self, session: TokenSession, always_protected: frozenset[str]) -> None:
        """Start the view from the participant's own token session."""
        self.session = session.metadata
        self.protected = always_protected | session.protected

    @property
    def metadata(self) -> dict[str, Any]:
        """The token session overlaid with the live metadata, never over a protected key.

        A view bound late (its token session could not be read at first) drops the
        live keys its session then protects.
        """
        protected = self.protected
        return {
            **self.session,
            **{k: v for k, v in self.live.items() if k not in protected},
            **{k: v for k, v in self.agent.items() if k not in protected},
        }

    def check_agent_write(
        self, updates: Mapping[str, Any], remove: Iterable[str], max_bytes: int
    ) -> dict[str, Any]:
        """The agent layer after an agent-side write, checked like client metadata.

        Raises:
            ReservedKey: A key in the plugin's ``lk-metadata.`` namespace.
            ProtectedKey: A key the server decided (private, trusted, ``protected_keys``).
            MetadataTooLarge: The view would exceed ``max_bytes`` (or its token
                session's own size, if larger).
        """
        keys = [*updates, *remove]
        for key in keys:
            if key.startswith(PLUGIN_ATTRIBUTE_PREFIX):
                raise ReservedKey("key is in the plugin's reserved namespace", key=key[:64])
            if key in self.protected:
                raise ProtectedKey(
                    "key was decided by the server and is not writable", key=key[:64]
                )
        agent = {**self.agent, **updates}
        for key in remove:
            agent.pop(key, None)
        self._check_size(self.live, agent, max_bytes)
        return agent

    def _check_size(
        self, live: Mapping[str, Any], agent: Mapping[str, Any], max_bytes: int
    ) -> None:
        """Refuse a view over ``max_bytes`` (or its token session's own size, if larger)."""
        size = len(orjson.dumps({**self.session, **live, **agent}))
        limit = max(max_bytes, len(orjson.dumps(self.session)))
        if size > limit:
            raise MetadataTooLarge(
                f"participant view would be {size} bytes, over the limit of {limit} bytes",
                size=size,
                limit=limit,
            )

    def accept_metadata(self, update: Mapping[str, Any], max_bytes: int) -> list[str]:
        """Merge a live metadata update; returns the refused (protected or plugin) keys.

        A client never sends ``lk-metadata.*`` keys (the endpoint refuses them), so
        one here is refused like a protected key.

        Raises:
            MetadataTooLarge: The view would exceed ``max_bytes`` (or its token
                session's own size, if larger); the view is unchanged.
        """
        refused = [
            k for k in update if k in self.protected or k.startswith(PLUGIN_ATTRIBUTE_PREFIX)
        ]
        if refused:
            update = {k: v for k, v in update.items() if k not in refused}
        if update:
            merged = {**self.live, **update}
            self._check_size(merged, self.agent, max_bytes)
            # A new value from the client for a key the agent wrote: the newest intent wins.
            for key, value in update.items():
                if key in self.agent and self.live.get(key, _MISSING) != value:
                    del self.agent[key]
            self.live = merged
        return refused

    def accept_attributes(
        self,
        updates: Mapping[str, str],
        removed: Iterable[str],
        shielded: frozenset[str],
        max_bytes: int,
    ) -> list[str]:
        """Apply a live attribute change; returns the refused keys.

        Refused: keys in a service namespace this participant's kind may not
        set, and names of protected metadata keys or of ``shielded`` (the job's
        attributes), which a client must not shadow. The plugin's own
        ``lk-metadata.*`` keys (the session reference) are left out silently.

        Raises:
            InvalidAttributes: The attributes would total over ``max_bytes``
                (the view is unchanged).
        """
        kind = self.participant.kind
        blocked = self.protected | shielded
        refused = [k for k in updates if k in blocked or service_attribute(k, kind)]
        attributes = dict(self.attributes)
        attributes.update(
            (k, v)
            for k, v in updates.items()
            if k not in refused and not k.startswith(PLUGIN_ATTRIBUTE_PREFIX)
        )
        for key in removed:
            attributes.pop(key, None)
        total = attributes_size(attributes)
        if total > max_bytes:
            raise InvalidAttributes(
                f"participant attributes would total {total} bytes, over the limit of "
                f"{max_bytes} bytes"
            )
        self.attributes = attributes
        return refused

    def route_input(
        self, job_metadata: Mapping[str, Any], job_attributes: Mapping[str, str]
    ) -> RouteInput:
        live = {k: v for k, v in self.attributes.items() if v != ""}
        return RouteInput(
            {**job_metadata, **self.metadata}, {**live, **job_attributes}, self.identity
        )


def without_plugin_keys(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """``mapping`` without this plugin's reserved ``lk-metadata.*`` keys."""
    return {k: v for k, v in mapping.items() if not k.startswith(PLUGIN_ATTRIBUTE_PREFIX)}


async def resolve_token_session(
    sessions: SessionManager, reference: object, *, identity: str, room: str
) -> TokenSession:
    """The token session a participant's own reference names, once its owner record matches.

    Args:
        sessions: Where token sessions live (``sessions.token_sessions``).
        reference: The session id the participant's token carried.
        identity: The participant carrying it.
        room: The job's room name.

    Returns:
        The session's metadata without plugin keys, and the keys the server decided.

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
            "no such token session in this worker's store (expired, lost in a restart, or "
            "the endpoint uses another store: share one, e.g. Redis)"
        )
    owner = data.get(SESSION_OWNER_KEY)
    if not isinstance(owner, Mapping) or owner.get("room") != room:
        raise InvalidSessionReference(
            "session reference names a session of another room (or one without an owner record)"
        )
    if owner.get("identity") != identity:
        raise InvalidSessionReference(
            "session reference names a session owned by another participant"
        )
    protected = owner.get("protected", ())
    keys = (
        frozenset(k for k in protected if isinstance(k, str))
        if isinstance(protected, list)
        else frozenset()
    )
    return TokenSession(without_plugin_keys(data), keys)
