"""The agent's view of each caller, and the one precedence every view obeys.

A view is the caller's token session (bound by its own token's reference, owner record
checked) under its live metadata; attributes stay apart. What the server decided is never
replaced by the client, and a LiveKit service namespace (``sip.*``, ``lk.*``) claimed by
another kind of participant is ignored.
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
from ..errors import InvalidSessionReference, MetadataTooLarge, ProtectedKey, ReservedKey

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
    """What the entrypoint routes on: the job's metadata under one participant's view, its
    accepted non-empty attributes under the job's, and its ``identity`` (None: nobody)."""

    metadata: dict[str, Any]
    attributes: dict[str, str]
    identity: str | None


class TokenSession(NamedTuple):
    """A token session the agent trusts: its keys, and those the server decided."""

    metadata: dict[str, Any]
    protected: frozenset[str]


def service_attribute(key: str, kind: int) -> bool:
    """True when ``key`` is in a LiveKit service namespace that ``kind`` may not set."""
    return any(key.startswith(p) and kind not in kinds for p, kinds in _SERVICE_KINDS.items())


@dataclass
class ParticipantView:
    """One tracked participant as the agent sees it; client input reaches it only through
    :meth:`accept_metadata` and :meth:`accept_attributes`."""

    participant: rtc.Participant
    session: dict[str, Any] = field(default_factory=dict)
    """The participant's token session, without plugin keys (private keys included)."""
    protected: frozenset[str] = frozenset()
    """Metadata keys the client cannot write: the server's decision and ``protected_keys``."""
    live: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)
    """Refusal reasons already logged for this participant (each is logged once)."""
    agent: dict[str, Any] = field(default_factory=dict)
    """A tool's writes, over ``live`` until the client sends a new value for the key."""

    @property
    def identity(self) -> str:
        return self.participant.identity

    def bind(self, session: TokenSession, always_protected: frozenset[str]) -> None:
        self.session = session.metadata
        self.protected = always_protected | session.protected

    @property
    def metadata(self) -> dict[str, Any]:
        """The token session under the live metadata and tool writes, never over a protected key."""
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

        Raises ReservedKey (``lk-metadata.``), ProtectedKey or MetadataTooLarge.
        """
        for key in [*updates, *remove]:
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
        Raises MetadataTooLarge, the view unchanged."""
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
        """Apply a live attribute change; returns the refused keys (a service namespace this
        kind may not set, protected keys, ``shielded`` job attributes; ``lk-metadata.*`` keys
        are left out silently). Raises InvalidAttributes over ``max_bytes``."""
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
        attributes_size(attributes, max_bytes)
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

    Raises InvalidSessionReference: not a session id, no such (or an expired) session, or
    another participant's or room's. Never names the id (a capability).
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
