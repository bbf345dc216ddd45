"""The claims of a join token from :class:`MintOptions`: every input checked, each
metadata serialized once. Pure: no clock, no store (docs/tokens.md)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Union

import orjson
from google.protobuf.json_format import MessageToDict
from livekit import api

from .._util import key_label
from ..codec import (
    PLUGIN_ATTRIBUTE_PREFIX,
    SESSION_KEY,
    attributes_size,
    parse_metadata,
    refuse_reserved,
    serialize_metadata,
    validate_attributes,
)
from ..errors import InvalidAttributes, MetadataError, MetadataTooLarge, RoutingError
from .claims import GrantsInput, check_name, grants_claims, participant_claims, room_config_claim

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "MINT_OPTIONS",
    "Built",
    "ClaimsBuilder",
    "Dispatch",
    "DispatchSpec",
    "MetadataClaim",
    "MetadataInput",
    "MintOptions",
]

_RESERVED_IN_JSON = '"' + PLUGIN_ATTRIBUTE_PREFIX
_SEAL = object()


class MetadataClaim:
    """Metadata checked and serialized once (:meth:`TokenIssuer.metadata_claim`), used as is
    wherever mint takes metadata; a dispatch whose metadata is ``data`` or ``text`` reuses it.
    ``text``: the compact JSON claim (``""``: none); ``data``: its mapping (not copied);
    ``size``: UTF-8 bytes. Made only by an issuer; treat it as read-only."""

    __slots__ = ("_seal", "data", "size", "text")

    def __init__(self, text: str, data: dict[str, Any], _seal: object = None) -> None:
        self.text = text
        self.data = data
        self.size = len(text) if text.isascii() else len(text.encode("utf-8"))
        self._seal = _seal

    def __repr__(self) -> str:
        return f"MetadataClaim(<{self.size} bytes, keys {sorted(self.data)}>)"


MetadataInput = Union[Mapping[str, Any], "BaseModel", str, MetadataClaim]
"""Metadata as ``mint`` accepts it."""


@dataclasses.dataclass(frozen=True, repr=False)
class Dispatch:
    """One agent dispatch for a token's ``roomConfig.agents``: the worker's ``agent_name``,
    its job metadata (as ``metadata``), a deployment (``None``/empty: production) and
    attributes set on the dispatched agent participant."""

    agent_name: str
    metadata: MetadataInput | None = None
    deployment: str | None = None
    attributes: Mapping[str, str] | None = None

    def __repr__(self) -> str:
        parts = [f"agent_name={self.agent_name!r}"]
        if self.metadata is not None:
            parts.append(f"metadata=<{_describe(self.metadata)}>")
        if self.deployment:
            parts.append(f"deployment={self.deployment!r}")
        if self.attributes:
            parts.append(f"attributes=<keys {sorted(self.attributes)}>")
        return f"Dispatch({', '.join(parts)})"


DispatchSpec = Dispatch | api.RoomAgentDispatch | str
"""One dispatch: a :class:`Dispatch`, a ``livekit.api.RoomAgentDispatch`` or an agent name."""


class MintOptions(TypedDict, total=False):
    """The keywords of ``TokenIssuer.mint`` and ``amint``, each optional.

    Attributes:
        metadata: Participant metadata; the claim is its compact JSON string.
        dispatch: One dispatch or several. Absent or ``None``: the configured router
            chooses; ``[]``: explicitly none.
        job_metadata: Job metadata for every dispatch without its own (with its own:
            an error); replaces a routed rule's job metadata.
        can_update_own_metadata: Off by default: metadata a client can rewrite is
            untrusted input.
        ttl: This token's lifetime (timedelta or seconds); default the issuer's.
        grants: livekit-api grant objects of distinct types; a ``VideoGrants`` replaces
            the default room join, its ``room`` empty or equal to ``room``.
        room_config: Other settings of the room this join creates; no ``agents``.
    """

    name: str | None
    metadata: MetadataInput | None
    attributes: Mapping[str, str] | None
    dispatch: DispatchSpec | Iterable[DispatchSpec] | None
    job_metadata: MetadataInput | None
    can_update_own_metadata: bool
    ttl: timedelta | float | None
    grants: GrantsInput | None
    kind: str | None
    room_config: api.RoomConfiguration | None


MINT_OPTIONS: frozenset[str] = MintOptions.__optional_keys__


Built = tuple[dict[str, Any], "dict[str, Any] | None", dict[str, Any]]
"""What :meth:`ClaimsBuilder.build` returns: the claims (no ``sub``/``iss``/``nbf``/``exp``),
the checked public metadata and the private keys."""


class _Router(Protocol):
    def route(self, metadata: Mapping[str, Any], /) -> Any: ...


_Claim = tuple[str, "dict[str, Any] | None"]


@dataclasses.dataclass(slots=True, eq=False)
class ClaimsBuilder:
    """Checks mint options and builds the claims, with the issuer's limits and router."""

    max_metadata_bytes: int
    max_attributes_bytes: int
    router: _Router | None

    def metadata_claim(self, value: MetadataInput) -> MetadataClaim:
        if isinstance(value, MetadataClaim):
            return value
        text, data = self._serialize(value, "metadata", want_dict=True)
        assert data is not None  # want_dict
        refuse_reserved(data, "metadata")
        return MetadataClaim(text, data, _SEAL)

    def build(
        self,
        identity: str,
        room: str,
        options: MintOptions,
        *,
        session_id: str | None = None,
        private_metadata: MetadataInput | None = None,
    ) -> Built:
        """Check everything and build the claims; ``session_id`` links the token to that
        session (:data:`SESSION_KEY`), private keys go into no claim."""
        if not MINT_OPTIONS.issuperset(options):
            unknown = sorted(set(options) - MINT_OPTIONS)[0]
            raise TypeError(f"unexpected keyword argument {unknown!r}")
        check_name(identity, "identity", required=True)
        check_name(room, "room", required=True)
        linked = session_id is not None
        dispatch = options.get("dispatch")
        router = self.router if dispatch is None else None
        want_dict = linked or router is not None

        name, kind = options.get("name"), options.get("kind")
        claims = {} if name is None and kind is None else participant_claims(name, kind)
        metadata = options.get("metadata")
        md: _Claim = ("", None)
        if metadata is not None:
            md = self._metadata(metadata, "metadata", want_dict=want_dict)
        private: dict[str, Any] = {}
        if private_metadata is not None:
            private = self._private(private_metadata, md[1] or {})
        if md[0]:
            claims["metadata"] = md[0]
        claims.update(
            grants_claims(
                room,
                options.get("grants"),
                can_update_own_metadata=options.get("can_update_own_metadata", False),
            )
        )
        attributes = options.get("attributes")
        if attributes is not None or linked:
            claims["attributes"] = self._attributes(attributes, session_id)

        room_config = options.get("room_config")
        room_claim = None if room_config is None else room_config_claim(room_config)
        md_dict = md[1]
        route_on = {**md_dict, **private} if private and md_dict else (private or md_dict)
        job_metadata = options.get("job_metadata")
        specs = _resolve_dispatch(dispatch, router, route_on, job_metadata is not None)
        if specs:
            agents, jobs = self._agents(specs, job_metadata, metadata, md, want_dict=linked)
            if session_id is not None:
                self._link(agents, jobs, session_id, private)
            room_claim = room_claim or {}
            room_claim["agents"] = agents
        elif job_metadata is not None:
            raise ValueError("job_metadata needs a dispatch (pass dispatch= or configure a router)")
        if room_claim is not None:
            claims["roomConfig"] = room_claim
        return claims, md_dict, private

    def _metadata(self, value: object, what: str, *, want_dict: bool) -> _Claim:
        """Compact JSON string (``""`` for none) and, when asked, the dict; keys checked."""
        if isinstance(value, MetadataClaim):
            return self._claimed(value, what)
        try:
            text, parsed = self._serialize(value, what, want_dict=want_dict)
        except MetadataError as exc:
            raise _prefix(exc, what) from None
        if parsed is not None:
            refuse_reserved(parsed, what)
        elif _RESERVED_IN_JSON in text:  # orjson's output: no escapes to hide a key behind
            refuse_reserved(orjson.loads(text), what)
        return text, parsed

    def _claimed(self, value: MetadataClaim, what: str) -> _Claim:
        if value._seal is not _SEAL:
            raise TypeError(f"{what}: make a MetadataClaim with TokenIssuer.metadata_claim()")
        if value.size > self.max_metadata_bytes:
            raise _prefix(_too_large(value.size, self.max_metadata_bytes), what)
        return value.text, value.data

    def _serialize(self, value: object, what: str, *, want_dict: bool) -> _Claim:
        limit = self.max_metadata_bytes
        if isinstance(value, str):
            parsed = parse_metadata(value, max_bytes=limit)
            if not parsed:
                return "", ({} if want_dict else None)
            if _is_compact(value):
                # Valid, an object, within the limit and without any whitespace:
                # already compact, so the caller's text is the claim (no re-encode).
                return value, parsed
            return serialize_metadata(parsed, max_bytes=limit), parsed
        if isinstance(value, (dict, Mapping)) or hasattr(value, "model_dump"):
            text = serialize_metadata(value, max_bytes=limit)  # type: ignore[arg-type]
            if text == "{}":
                return "", ({} if want_dict else None)
            if not want_dict:
                return text, None
            if isinstance(value, dict):
                return text, value
            return text, orjson.loads(text)
        raise TypeError(
            f"{what} must be a mapping, a pydantic model or a JSON string, "
            f"not {type(value).__name__}"
        )

    def _private(self, value: MetadataInput, public: dict[str, Any]) -> dict[str, Any]:
        private = self._metadata(value, "private_metadata", want_dict=True)[1] or {}
        for key in private:
            if key in public:
                raise ValueError(
                    f"key {key_label(key)} is in both metadata and private_metadata: "
                    "a key is either public (in the token) or private (only in the store)"
                )
        return private

    def _attributes(
        self, attributes: Mapping[str, str] | None, session_id: str | None
    ) -> dict[str, str]:
        limit = self.max_attributes_bytes
        checked = validate_attributes(attributes, max_bytes=limit)
        refuse_reserved(checked, "attributes")
        if session_id is not None:
            checked[SESSION_KEY] = session_id
            total = attributes_size(checked)
            if total > limit:
                raise InvalidAttributes(
                    f"attributes total {total} bytes with the session reference, "
                    f"over the limit of {limit} bytes"
                )
        return checked

    def _agents(
        self,
        specs: list[DispatchSpec],
        job_metadata: MetadataInput | None,
        metadata: MetadataInput | None,
        md: _Claim,
        *,
        want_dict: bool,
    ) -> tuple[list[dict[str, Any]], list[_Claim]]:
        """The ``roomConfig.agents`` list and each one's job metadata (text, dict)."""
        job: _Claim = ("", None)
        if job_metadata is not None:
            job = self._job(job_metadata, metadata, md, want_dict, None)
        agents: list[dict[str, Any]] = []
        jobs: list[_Claim] = []
        for spec in specs:
            entry, agent_name, own, deployment, attrs = _dispatch_parts(spec)
            entry["agentName"] = agent_name
            this = job
            if own is not None:
                if job_metadata is not None:
                    raise ValueError(
                        f"dispatch {agent_name!r} has its own metadata; do not also pass job_metadata"
                    )
                this = self._job(own, metadata, md, want_dict, agent_name)
            if this[0]:
                entry["metadata"] = this[0]
            else:
                entry.pop("metadata", None)
            jobs.append(this)
            if deployment is not None:
                if not isinstance(deployment, str):
                    raise TypeError(f"deployment must be a str, not {type(deployment).__name__}")
                if deployment:
                    entry["deployment"] = deployment
            if attrs is not None:
                try:
                    checked = validate_attributes(attrs, max_bytes=self.max_attributes_bytes)
                    refuse_reserved(checked, "attributes")
                except MetadataError as exc:
                    raise _prefix(exc, f"dispatch {agent_name!r}") from None
                if checked:
                    entry["attributes"] = checked
            agents.append(entry)
        return agents, jobs

    def _job(
        self, value: object, metadata: object, md: _Claim, want_dict: bool, agent: str | None
    ) -> _Claim:
        """Job metadata (of dispatch ``agent``); the participant's (``md``) reused if the same."""
        if value is metadata or _same(value, metadata):
            text, parsed = md
            if want_dict and parsed is None:
                parsed = orjson.loads(text) if text else {}
            return text, parsed
        what = "job_metadata" if agent is None else f"dispatch {agent!r} metadata"
        return self._metadata(value, what, want_dict=want_dict)

    def _link(
        self,
        agents: list[dict[str, Any]],
        jobs: list[_Claim],
        session_id: str,
        private: Mapping[str, Any],
    ) -> None:
        """Put the session id into each dispatch's job metadata, private keys left out."""
        limit = self.max_metadata_bytes
        member = f'"{SESSION_KEY}":{orjson.dumps(session_id).decode()}}}'
        for agent, (text, job) in zip(agents, jobs, strict=True):
            if job and private and not private.keys().isdisjoint(job):
                public = {k: v for k, v in job.items() if k not in private}
                public[SESSION_KEY] = session_id
                try:
                    agent["metadata"] = serialize_metadata(public, max_bytes=limit)
                except MetadataError as exc:
                    raise _prefix(exc, f"dispatch {agent['agentName']!r} metadata") from None
                continue
            # The checked compact text with the session key appended: no re-encode.
            linked = text[:-1] + "," + member if job else "{" + member
            size = _utf8_size(linked)
            if size > limit:
                raise _prefix(_too_large(size, limit), f"dispatch {agent['agentName']!r} metadata")
            agent["metadata"] = linked


def _describe(value: object) -> str:
    if isinstance(value, str):
        return f"{len(value)} chars"
    if isinstance(value, MetadataClaim):
        value = value.data
    if isinstance(value, Mapping):
        return f"keys {sorted(map(str, value))}"
    return type(value).__name__


def _is_compact(text: str) -> bool:
    """True if ``text`` has no JSON whitespace at all (so none between tokens)."""
    return " " not in text and "\n" not in text and "\r" not in text and "\t" not in text


def _prefix(exc: MetadataError, what: str) -> MetadataError:
    """Say which metadata was rejected, in place (not the participant's: that is the default)."""
    if what == "metadata":
        return exc
    exc.message = f"{what}: {exc.message}"
    exc.args = (exc.message,)
    return exc


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))  # isascii: O(1)


def _too_large(size: int, limit: int) -> MetadataTooLarge:
    return MetadataTooLarge(
        f"serialized metadata is {size} bytes, over the limit of {limit} bytes",
        size=size,
        limit=limit,
    )


def _same(value: object, metadata: object) -> bool:
    """``value`` is the source of the participant's :class:`MetadataClaim`, or its text."""
    if isinstance(metadata, MetadataClaim):
        return value is metadata.data or (isinstance(value, str) and value == metadata.text)
    return False


def _dispatch_parts(
    spec: DispatchSpec,
) -> tuple[dict[str, Any], str, object, str | None, Mapping[str, str] | None]:
    """A dispatch's extra claim fields, agent name, own metadata, deployment and attributes."""
    if isinstance(spec, str):
        spec = Dispatch(spec)
    if isinstance(spec, Dispatch):
        extra: dict[str, Any] = {}
        agent_name, own, deployment = spec.agent_name, spec.metadata, spec.deployment
        attrs = spec.attributes
    elif isinstance(spec, api.RoomAgentDispatch):
        extra = MessageToDict(spec)
        agent_name, own, deployment = spec.agent_name, spec.metadata or None, spec.deployment
        attrs = dict(spec.attributes) if spec.attributes else None
    else:
        raise TypeError(
            "each dispatch must be a Dispatch, a RoomAgentDispatch or an agent name, "
            f"not {type(spec).__name__}"
        )
    if not isinstance(agent_name, str):
        raise TypeError(f"agent_name must be a str, not {type(agent_name).__name__}")
    if not agent_name or not agent_name.strip():
        raise ValueError("agent_name must be a non-empty string")
    return extra, agent_name, own, deployment, attrs


def _resolve_dispatch(
    dispatch: DispatchSpec | Iterable[DispatchSpec] | None,
    router: _Router | None,
    metadata: dict[str, Any] | None,
    has_job_metadata: bool,
) -> list[DispatchSpec]:
    if dispatch is None:
        if router is None:
            return []
        return _route(router, metadata or {}, use_rule_metadata=not has_job_metadata)
    if isinstance(dispatch, (Dispatch, api.RoomAgentDispatch, str)):
        return [dispatch]
    if isinstance(dispatch, Mapping) or not isinstance(dispatch, Iterable):
        raise TypeError(
            "dispatch must be a Dispatch, a RoomAgentDispatch, an agent name or an iterable of those"
        )
    return list(dispatch)


def _route(
    router: _Router, metadata: dict[str, Any], *, use_rule_metadata: bool
) -> list[DispatchSpec]:
    route = router.route(metadata)
    if getattr(route, "rejected", False):
        rule = getattr(route, "label", None) or getattr(route, "rule", None)
        raise RoutingError(
            f"the metadata was rejected by routing rule {rule!r}; no token was minted"
            if rule
            else "the metadata was rejected by the routing rules; no token was minted"
        )
    # ``agent_name`` is the LiveKit worker to dispatch to; ``agent`` the logical
    # agent, which is the same unless the rules name a shared worker.
    agent = getattr(route, "agent_name", None) or getattr(route, "agent", None)
    if not agent:
        return []
    job = getattr(route, "metadata", None) if use_rule_metadata else None
    return [
        Dispatch(
            agent,
            metadata=job or None,
            deployment=getattr(route, "deployment", None) or None,
            attributes=getattr(route, "attributes", None) or None,
        )
    ]
