"""A token request's framing and body, checked: what the client asked for, before any policy."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format
from livekit import api
from pydantic import ValidationError

from .._util import key_label
from ..codec import (
    PLUGIN_ATTRIBUTE_PREFIX,
    SESSION_KEY,
    parse_metadata,
    refuse_reserved,
    validate_attributes,
)
from ..errors import InvalidAttributes, MetadataError, MetadataTooLarge, ReservedKey
from .config import ServerConfig
from .messages import EndpointRequest
from .models import TokenRequest
from .placement import refuse_service_attributes
from .state import AppState, Refusal

__all__ = ["ParsedRequest", "check_framing", "check_reserved", "parse"]

_SESSION_FIELDS = frozenset({"session", "session_id", "sessionid", SESSION_KEY.lower()})
_AGENT_FIELDS = frozenset({"deployment", "attributes", "restart_policy"})
_CAMEL_NAMES = {
    "".join(w.capitalize() if i else w for i, w in enumerate(n.split("_"))): n
    for n in TokenRequest.model_fields
}


@dataclass
class ParsedRequest:
    """A request that passed the request model and the metadata/attribute checks."""

    room: str | None
    identity: str | None
    name: str | None
    metadata: dict[str, Any]
    attributes: dict[str, str]
    room_config: api.RoomConfiguration | None
    agent_request: api.RoomAgentDispatch | None
    rejoin_token: str | None = None


def check_framing(request: EndpointRequest, config: ServerConfig) -> None:
    headers = request.headers
    try:
        too_large = int(headers.get("content-length") or 0) > config.max_body_bytes
    except ValueError:  # not a number: the body read enforces the limit
        too_large = False
    if too_large:
        raise Refusal(
            413,
            "body_too_large",
            f"request body is over the limit of {config.max_body_bytes} bytes",
        )
    content_type, charset = _media_type(headers.get("content-type"))
    if content_type != "application/json":
        raise Refusal(
            415, "unsupported_media_type", "send the request as Content-Type: application/json"
        )
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise Refusal(
            415, "unsupported_media_type", "the request body must be UTF-8 (charset=utf-8 or none)"
        )


def parse(raw: bytes, state: AppState) -> ParsedRequest:
    """The body through :class:`TokenRequest`, then metadata, attributes and room_config."""
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise Refusal(
            400,
            "invalid_json",
            f"request body is not valid JSON (line {exc.lineno}, column {exc.colno})",
        ) from None
    if not isinstance(body, dict):
        raise Refusal(400, "invalid_request", "request body must be a JSON object")
    try:
        req = TokenRequest.model_validate(body)
    except ValidationError as exc:
        raise _request_refusal(exc) from None
    metadata = _client_metadata(req.participant_metadata, state, "participant_metadata")
    attributes = _client_attributes(req.participant_attributes, state)
    room_config, agent_request = _room_config(body, req, state)
    if agent_request is not None and agent_request.metadata:
        metadata.update(
            _client_metadata(agent_request.metadata, state, "room_config.agents[0].metadata")
        )
    return ParsedRequest(
        room=req.room_name or None,
        identity=req.participant_identity or None,
        name=req.participant_name or None,
        metadata=metadata,
        attributes=attributes,
        room_config=room_config,
        agent_request=agent_request,
        rejoin_token=req.rejoin_token or None,
    )


def _request_refusal(exc: ValidationError) -> Refusal:
    """The first validation error as a 400 naming the field (never its value)."""
    err = exc.errors(include_input=False, include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    head = _CAMEL_NAMES.get(loc[0], loc[0]) if loc else "<root>"
    if head == "room_config":
        where = ".".join(loc[1:]) or "room_config"
        return Refusal(
            400,
            "invalid_room_config",
            f"room_config is not a valid RoomConfiguration: bad value for {key_label(where)}",
        )
    if head == "participant_attributes":
        return Refusal(400, "invalid_attributes", "participant_attributes must map str to str")
    if err["type"] == "extra_forbidden":
        if head in TokenRequest.model_fields:
            return Refusal(400, "invalid_request", f"field {head!r} is given twice")
        if head.lower() in _SESSION_FIELDS or head.startswith(PLUGIN_ATTRIBUTE_PREFIX):
            return Refusal(
                403,
                "session_id_not_allowed",
                "the token session is chosen by the server; a request cannot name one",
            )
        return Refusal(400, "invalid_request", f"unknown request fields: {key_label(loc[0])}")
    if err["type"] == "string_too_long":
        limit = (err.get("ctx") or {}).get("max_length")
        return Refusal(400, "invalid_request", f"{head} is longer than {limit} characters")
    return Refusal(400, "invalid_request", f"{head} must be a string")


def check_reserved(keys: Iterable[str], what: str) -> None:
    """codec's :func:`refuse_reserved` (no client key in the plugin's namespace), as a 422."""
    try:
        refuse_reserved(keys, what)
    except ReservedKey as exc:
        raise Refusal(422, "reserved_key", exc.message) from None


def _client_metadata(raw: str | None, state: AppState, what: str) -> dict[str, Any]:
    try:
        metadata = parse_metadata(raw, max_bytes=state.config.metadata.max_bytes)
    except MetadataTooLarge as exc:
        raise Refusal(413, "metadata_too_large", f"{what}: {exc.message}") from None
    except MetadataError as exc:
        raise Refusal(400, "invalid_metadata", f"{what}: {exc.message}") from None
    check_reserved(metadata, what)
    return metadata


def _client_attributes(raw: Mapping[str, str] | None, state: AppState) -> dict[str, str]:
    try:
        attributes = validate_attributes(raw, allow_reserved=True)  # lk.: a 422 of its own
    except InvalidAttributes as exc:
        raise Refusal(400, "invalid_attributes", exc.message) from None
    check_reserved(attributes, "participant_attributes")
    service = state.policy.service_attr_keys
    refuse_service_attributes(attributes, service)
    allowed = state.policy.allowed_attr_keys
    if allowed is not None:
        extra = [k for k in attributes if k not in allowed and k not in service]
        if extra:
            shown = ", ".join(key_label(k) for k in extra[:10])
            raise Refusal(422, "attribute_key_not_allowed", f"attribute keys not allowed: {shown}")
    return attributes


def _room_config(
    body: Mapping[str, Any], req: TokenRequest, state: AppState
) -> tuple[api.RoomConfiguration | None, api.RoomAgentDispatch | None]:
    """LiveKit's own parse of room_config, then the allowlist of client-settable fields."""
    if req.room_config is None:
        return None, None
    raw = body.get("room_config", body.get("roomConfig"))
    try:
        room_config = json_format.ParseDict(raw, api.RoomConfiguration())
    except Exception as exc:
        m = re.search(r'no field named "([^"]{1,64})"', str(exc))
        hint = f": unknown field {m.group(1)!r}" if m else ""
        raise Refusal(
            400, "invalid_room_config", f"room_config is not a valid RoomConfiguration{hint}"
        ) from None
    allowed = state.policy.allowed_room_config
    for fd, _ in room_config.ListFields():
        if fd.name != "agents" and fd.name not in allowed:
            raise Refusal(
                403, "room_config_not_allowed", f"room_config.{fd.name} may not be set by clients"
            )
    agents = list(room_config.agents)
    if len(agents) > 1:
        raise Refusal(403, "room_config_not_allowed", "at most one agent may be requested")
    if not agents:
        return room_config, None
    for fd, _ in agents[0].ListFields():
        if fd.name in _AGENT_FIELDS and f"agents.{fd.name}" not in allowed:
            raise Refusal(
                403,
                "room_config_not_allowed",
                f"room_config.agents[0].{fd.name} may not be set by clients",
            )
    try:
        validate_attributes(dict(agents[0].attributes))
    except InvalidAttributes as exc:
        raise Refusal(400, "invalid_attributes", exc.message) from None
    check_reserved(agents[0].attributes, "room_config.agents[0].attributes")
    return room_config, agents[0]


def _media_type(value: str | None) -> tuple[str, str | None]:
    """``Content-Type`` as (lower-case media type, charset or None); none: octet-stream."""
    if not value:
        return "application/octet-stream", None
    media, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, val = param.partition("=")
        if name.strip().lower() == "charset":
            charset = val.strip().strip('"')
    return media.strip().lower(), charset
