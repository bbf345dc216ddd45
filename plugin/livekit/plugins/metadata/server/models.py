"""The token endpoint's wire format: what the handler validates with and ``/openapi.json``
lists. LiveKit's standard snake_case names; protobuf JSON names (``roomName``) too."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .config import MAX_NAME_LEN

__all__ = [
    "AgentDispatchRequest",
    "ErrorBody",
    "ErrorDetail",
    "Health",
    "RoomConfigRequest",
    "TokenRequest",
    "TokenResponse",
]

_REQUEST_CONFIG = ConfigDict(
    extra="forbid",
    strict=True,
    use_attribute_docstrings=True,
    frozen=True,
    alias_generator=AliasGenerator(
        validation_alias=lambda name: AliasChoices(name, to_camel(name))
    ),
)

_UInt32 = Field(default=None, ge=0, le=2**32 - 1)
_StrMap = dict[str, str]


class AgentDispatchRequest(BaseModel):
    """One ``RoomAgentDispatch``: the agent a client asks for (from the server's allowlist)."""

    model_config = _REQUEST_CONFIG

    agent_name: str | None = None
    """The agent to dispatch; only names in the server's ``allowed_agents`` are accepted."""
    metadata: str | None = Field(default=None, description="A JSON object as a string.")
    """Job metadata from the client, checked like ``participant_metadata``."""
    deployment: str | None = None
    """Needs ``agents.deployment`` in the server's ``allowed_room_config``."""
    attributes: _StrMap | None = None
    """Needs ``agents.attributes`` in the server's ``allowed_room_config``."""
    restart_policy: Literal["JRP_ON_FAILURE", "JRP_NEVER"] | None = None
    """Needs ``agents.restart_policy`` in the server's ``allowed_room_config``."""


class RoomConfigRequest(BaseModel):
    """LiveKit's ``RoomConfiguration`` as a client may send it.

    Clients may set only ``agents[0].agent_name`` (from an allowlist) and
    ``agents[0].metadata`` unless the server's ``allowed_room_config`` names
    more; any other field set is refused with 403.
    """

    model_config = _REQUEST_CONFIG

    name: str | None = None
    empty_timeout: int | None = _UInt32
    departure_timeout: int | None = _UInt32
    max_participants: int | None = _UInt32
    metadata: str | None = None
    egress: dict[str, Any] | None = Field(
        default=None, description="RoomEgress in protobuf JSON: room, participant, tracks."
    )
    min_playout_delay: int | None = _UInt32
    max_playout_delay: int | None = _UInt32
    sync_streams: bool | None = None
    tags: _StrMap | None = None
    agents: list[AgentDispatchRequest] | None = None
    """At most one dispatch (the client's agent request)."""


class TokenRequest(BaseModel):
    """LiveKit's standard token request; every field is optional.

    Unknown fields are refused with 400 and any key of this plugin's
    ``lk-metadata.`` namespace (in metadata or attributes) with 422: the token
    session id is chosen by the server, never by the client.

    ``room_name`` and ``participant_identity`` are ignored unless the caller's
    principal opts in (``client_room`` / ``client_identity``): by default the
    server generates both, fresh and unguessable, and says which in the answer.
    """

    model_config = _REQUEST_CONFIG

    room_name: str | None = Field(default=None, max_length=MAX_NAME_LEN)
    participant_identity: str | None = Field(default=None, max_length=MAX_NAME_LEN)
    participant_name: str | None = Field(default=None, max_length=MAX_NAME_LEN)
    participant_metadata: str | None = Field(
        default=None, description="A JSON object as a string (checked against the metadata policy)."
    )
    participant_attributes: _StrMap | None = Field(
        default=None,
        description=(
            "Refused with 422: keys in LiveKit's namespaces (sip., lk.) unless the server "
            "allows them by name, and keys that name a trusted, private or lk-metadata. key."
        ),
    )
    room_config: RoomConfigRequest | None = None
    rejoin_token: str | None = Field(default=None, max_length=16384)
    """This plugin's extension: the caller's previous ``participant_token`` (expired
    within the server's ``rejoin_window`` is fine). The answer is a token for that
    token's room and identity, and no other; its token session must still exist."""


class TokenResponse(BaseModel):
    """201: the token and the LiveKit URL to connect with (LiveKit's two fields), and
    the room and identity the server put in the token (extra fields SDKs ignore)."""

    server_url: str
    participant_token: str
    room_name: str
    """The room the token joins (server-chosen unless the caller may choose)."""
    participant_identity: str
    """The identity in the token (server-chosen unless the caller may choose)."""


class ErrorDetail(BaseModel):
    """What went wrong: a stable ``code`` and a message without any request value."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    error: ErrorDetail


class Health(BaseModel):
    """``GET /healthz``."""

    status: str
