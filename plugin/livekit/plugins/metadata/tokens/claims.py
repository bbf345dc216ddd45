"""JWT claims of a LiveKit access token, built from livekit-api's own grant types.

:data:`GRANT_CLAIMS` is read from ``livekit.api.access_token.Claims`` at import, so
every grant the installed livekit-api knows can be put into a token, written as
``Claims.asdict()`` writes it (camelCase keys, ``None`` and ``""`` left out). Pure.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from livekit import api
from livekit.api.access_token import Claims

from .._util import key_label
from ..codec import json_type_name, validate_attributes
from ..errors import MetadataError, TokenVerificationError

__all__ = [
    "GRANT_CLAIMS",
    "MAX_IDENTITY_BYTES",
    "PARTICIPANT_KINDS",
    "Grant",
    "GrantsInput",
    "check_name",
    "claims_grants",
    "grant_claim",
    "grants_claims",
    "join_problem",
    "participant_claims",
    "read_claims",
    "room_config_claim",
    "ttl_seconds",
]

MAX_IDENTITY_BYTES = 256
"""LiveKit's limit for identities, room names and participant names (UTF-8 bytes)."""

PARTICIPANT_KINDS = frozenset(
    {"standard", "egress", "ingress", "sip", "agent", "connector", "bridge"}
)
"""Participant kinds the LiveKit server accepts in the ``kind`` claim."""


Grant = (
    api.VideoGrants
    | api.SIPGrants
    | api.InferenceGrants
    | api.ObservabilityGrants
    | api.AgentGrants
    | api.AgentEndpointGrants
    | api.AgentThreadGrants
)
"""The grant types livekit-api 1.2 has (for type checkers; any type in :data:`GRANT_CLAIMS` works)."""

GrantsInput = Grant | Iterable[Grant]
"""One grant object or several of distinct types."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


_GRANT_FIELDS: dict[str, tuple[type, str]] = {}
"""Claim name -> (grant type, ``Claims`` attribute), e.g. ``"agentEndpoint"``."""
_HINTS = typing.get_type_hints(Claims)
for _field in dataclasses.fields(Claims):
    for _cls in typing.get_args(_HINTS[_field.name]) or (_HINTS[_field.name],):
        if isinstance(_cls, type) and dataclasses.is_dataclass(_cls):
            _GRANT_FIELDS[_camel(_field.name)] = (_cls, _field.name)

GRANT_CLAIMS: Mapping[type, str] = {cls: claim for claim, (cls, _) in _GRANT_FIELDS.items()}
"""Every grant type of the installed livekit-api and the claim it is written to."""

_FIELDS: dict[type, tuple[tuple[str, str], ...]] = {
    cls: tuple((f.name, _camel(f.name)) for f in dataclasses.fields(cls)) for cls in GRANT_CLAIMS
}


def grant_claim(grant: object) -> dict[str, Any]:
    """One grant object as ``Claims.asdict()`` writes it: camelCase, no ``None`` or ``""``."""
    fields = _FIELDS.get(type(grant))
    if fields is None:
        if not dataclasses.is_dataclass(grant) or isinstance(grant, type):
            raise TypeError(f"not a livekit-api grant: {type(grant).__name__}")
        fields = tuple((f.name, _camel(f.name)) for f in dataclasses.fields(grant))
    out: dict[str, Any] = {}
    for attr, key in fields:
        value = getattr(grant, attr)
        if value is None or (isinstance(value, str) and value == ""):
            continue
        out[key] = list(value) if isinstance(value, list) else value
    return out


def _claim_name(grant: object) -> str:
    name = GRANT_CLAIMS.get(type(grant))
    if name is None:
        for cls, claim in GRANT_CLAIMS.items():  # a subclass of a grant type
            if isinstance(grant, cls):
                return claim
        known = ", ".join(sorted(cls.__name__ for cls in GRANT_CLAIMS))
        raise TypeError(
            f"grants must be livekit.api grant objects ({known}), not {type(grant).__name__}"
        )
    return name


_DEFAULT_VIDEO = {"canPublish": True, "canSubscribe": True, "canPublishData": True}
"""``VideoGrants(room_join=True, room=room)``'s claim without ``roomJoin`` and ``room``."""


def grants_claims(
    room: str, grants: GrantsInput | None, *, can_update_own_metadata: bool
) -> dict[str, dict[str, Any]]:
    """The grant claims of a join token for ``room`` (see ``MintOptions.grants``).

    Raises:
        TypeError: Something that is not a livekit-api grant.
        ValueError: Two grants of one type, or a video grant for another room.
    """
    out: dict[str, dict[str, Any]] = {}
    if grants is not None:
        if isinstance(grants, (str, bytes, Mapping)) or not isinstance(grants, Iterable):
            items: Iterable[object] = (grants,)
        else:
            items = grants
        for grant in items:
            name = _claim_name(grant)
            if name in out:
                raise ValueError(f"grants has more than one {type(grant).__name__}")
            out[name] = grant_claim(grant)
    video = out.get("video")
    if video is None:
        video = out["video"] = {"roomJoin": True, "room": room, **_DEFAULT_VIDEO}
    elif video.get("room", room) != room:
        raise ValueError("grants.room must be empty or equal to room")
    else:
        video["room"] = room
    if can_update_own_metadata:
        video["canUpdateOwnMetadata"] = True
    return out


def check_name(value: object, what: str, *, required: bool) -> str:
    """A str of at most :data:`MAX_IDENTITY_BYTES` UTF-8 bytes (non-empty if ``required``)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        if required:
            raise ValueError(f"{what} must not be empty")
        return value
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid UTF-8 (lone surrogate)") from None
    if size > MAX_IDENTITY_BYTES:
        raise ValueError(
            f"{what} is {size} bytes (UTF-8), over LiveKit's limit of {MAX_IDENTITY_BYTES}"
        )
    return value


def ttl_seconds(ttl: timedelta | float, what: str = "ttl") -> int:
    """Whole seconds of a timedelta or a number of seconds, at least one (not NaN)."""
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise TypeError(f"{what} must be a timedelta or seconds, not {type(ttl).__name__}")
    if not seconds >= 1:  # also rejects NaN
        raise ValueError(f"{what} must be at least one second")
    return int(seconds)


def participant_claims(name: str | None, kind: str | None) -> dict[str, Any]:
    """The ``name`` and ``kind`` claims (left out when empty)."""
    claims: dict[str, Any] = {}
    if name is not None and check_name(name, "name", required=False):
        claims["name"] = name
    if kind is not None and kind != "":
        if kind not in PARTICIPANT_KINDS:
            raise ValueError(f"kind must be one of {sorted(PARTICIPANT_KINDS)}")
        claims["kind"] = kind
    return claims


def room_config_claim(room_config: api.RoomConfiguration | None) -> dict[str, Any] | None:
    """``roomConfig`` as ``MessageToDict`` writes it; its agents come from the dispatches."""
    if room_config is None:
        return None
    if not isinstance(room_config, api.RoomConfiguration):
        raise TypeError(
            f"room_config must be livekit.api.RoomConfiguration, not {type(room_config).__name__}"
        )
    if len(room_config.agents):
        raise ValueError("room_config.agents must be empty: pass agents as dispatch=")
    return MessageToDict(room_config)


def _value_kind(annotation: Any) -> tuple[type, bool]:
    """A grant field's JSON shape (bool, str, list or object: any) and whether null is allowed."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        annotation = next(a for a in args if a is not type(None))
    if typing.get_origin(annotation) is list:
        return list, optional
    return (annotation if annotation in (bool, str) else object), optional


_READERS: dict[type, dict[str, tuple[str, type, bool]]] = {
    cls: {
        _camel(f.name): (f.name, *_value_kind(typing.get_type_hints(cls)[f.name]))
        for f in dataclasses.fields(cls)
    }
    for cls in GRANT_CLAIMS
}


def _bad(claim: str, problem: str) -> TokenVerificationError:
    return TokenVerificationError(f"{claim!r} claim {problem}")


def _json_kind(value: object) -> str:
    return f"a JSON {json_type_name(value)}"


def _read_grant(claim: str, value: object) -> tuple[str, object]:
    cls, attr = _GRANT_FIELDS[claim]
    if not isinstance(value, dict):
        raise _bad(claim, f"must be an object, not {_json_kind(value)}")
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        reader = _READERS[cls].get(key)
        if reader is None:
            continue  # a field of a later LiveKit: ignored, as TokenVerifier does
        name, shape, optional = reader
        if item is None and optional:
            continue
        if shape is list:
            ok = isinstance(item, list) and all(isinstance(x, str) for x in item)
        else:
            ok = shape is object or type(item) is shape
        if not ok:
            expected = "an array of strings" if shape is list else f"a {shape.__name__}"
            raise _bad(claim, f"field {key_label(key)} must be {expected}")
        kwargs[name] = list(item) if shape is list else item
    return attr, cls(**kwargs)


def _read_text(payload: Mapping[str, Any], claim: str) -> str:
    value = payload.get(claim)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(claim, f"must be a string, not {_json_kind(value)}")
    return value


def _read_room_config(value: object) -> api.RoomConfiguration:
    if not isinstance(value, dict):
        raise _bad("roomConfig", f"must be an object, not {_json_kind(value)}")
    try:
        return ParseDict(value, api.RoomConfiguration(), ignore_unknown_fields=True)
    except (ParseError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        # protobuf's messages may quote the offending value: keep only the field name.
        match = _PARSE_FIELD.search(str(exc))
        where = f" (field {key_label(match.group(1))})" if match else ""
        raise _bad("roomConfig", f"is not a valid RoomConfiguration{where}") from None


_PARSE_FIELD = re.compile(r"Failed to parse (\w+) field")


def read_claims(payload: Mapping[str, Any]) -> Claims:
    """``livekit.api.Claims`` from a verified JWT payload, every claim's shape checked.

    Grant fields of a later livekit-api are ignored (as ``TokenVerifier`` does).
    Raises ``TokenVerificationError`` naming the claim (never its value).
    """
    claims = Claims(
        identity=_checked(_read_text(payload, "sub"), "sub"),
        name=_checked(_read_text(payload, "name"), "name"),
        kind=_read_text(payload, "kind"),
        metadata=_read_text(payload, "metadata"),
        sha256=_read_text(payload, "sha256") or None,
        room_preset=_read_text(payload, "roomPreset") or None,
    )
    if claims.kind and claims.kind not in PARTICIPANT_KINDS:
        raise _bad("kind", f"must be one of {sorted(PARTICIPANT_KINDS)}")
    for claim in _GRANT_FIELDS:
        if payload.get(claim) is not None:
            attr, grant = _read_grant(claim, payload[claim])
            setattr(claims, attr, grant)
    attributes = payload.get("attributes")
    if attributes is not None:
        try:
            claims.attributes = validate_attributes(attributes, allow_reserved=True)
        except MetadataError as exc:
            raise _bad("attributes", f"is not a LiveKit attribute map: {exc}") from None
    if payload.get("roomConfig") is not None:
        claims.room_config = _read_room_config(payload["roomConfig"])
    return claims


def _checked(value: str, claim: str) -> str:
    try:
        return check_name(value, claim, required=False)
    except ValueError as exc:
        raise _bad(claim, str(exc).removeprefix(f"{claim} ")) from None


def join_problem(claims: Claims) -> str | None:
    """Why LiveKit (``AccessToken.to_jwt`` and the server) would refuse to let these
    claims join a room, or ``None``."""
    if not claims.identity:
        return "token has no participant identity ('sub' claim): LiveKit refuses to join with it"
    video = claims.video
    if video is None:
        return "token has no video grant ('video' claim): LiveKit refuses to join with it"
    if not video.room_join:
        return "video grant has no roomJoin: LiveKit refuses to join with it"
    if not video.room:
        return "video grant names no room: LiveKit refuses to join with it"
    return None


def claims_grants(claims: Claims) -> dict[str, dict[str, Any]]:
    """The grants present in ``claims``, as claims (``{"video": {...}, "sip": {...}}``)."""
    out: dict[str, dict[str, Any]] = {}
    for claim, (_cls, attr) in _GRANT_FIELDS.items():
        grant = getattr(claims, attr)
        if grant is not None:
            out[claim] = grant_claim(grant)
    return out
