"""The token server's configuration (:class:`ServerConfig`, read from YAML/TOML/JSON or built
in code) and :class:`Principal`, who a request acts as (a bearer key or ``authorize`` hook)."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SkipValidation,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .._util import positive_int
from ..codec import (
    DEFAULT_MAX_METADATA_BYTES,
    RESERVED_ATTRIBUTE_PREFIX,
    SERVICE_ATTRIBUTE_PREFIXES,
    parse_metadata,
    serialize_metadata,
)
from ..errors import ConfigError, MetadataError
from ..loader import load_file
from ..routing.router import MetadataRouter
from ..sessions.manager import SessionManager
from ..tokens.issuer import DEFAULT_TTL
from ..tokens.keys import DEV_API_KEY, DEV_API_SECRET, check_livekit_url
from ..tokens.session_token import DEFAULT_SESSION_GRACE
from .edge import EdgeConfig
from .limits import Limits

__all__ = [
    "DEFAULT_PORT",
    "DEV_API_KEY",
    "DEV_API_SECRET",
    "MAX_NAME_LEN",
    "ApiKeyConfig",
    "AuthConfig",
    "AuthorizeHook",
    "Credentials",
    "GrantPolicy",
    "MetadataPolicy",
    "Principal",
    "RateLimit",
    "ServerConfig",
    "is_loopback",
    "open_room_warnings",
]

DEFAULT_PORT = 8080
"""Default listening port (LiveKit itself uses 7880-7882 and agent workers 8081)."""

MAX_NAME_LEN = 256
"""LiveKit's limit for an identity, a participant name and a room name."""

_DEFAULT_MAX_BODY = 128 * 1024
_MAX_ROOM_PREFIX_LEN = 128  # leaves room for the generated suffix


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any address in 127.0.0.0/8 or ``::1``."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Credentials(NamedTuple):
    """The LiveKit API key and secret tokens are signed with."""

    key: str
    secret: str
    dev: bool  # the public ``livekit-server --dev`` keys (loopback only)

    def __repr__(self) -> str:
        return f"Credentials(key={self.key!r}, secret=***, dev={self.dev})"


class RateLimit(BaseModel):
    """A rate bucket: ``rate`` requests per second on average, bursts of ``burst``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(default=5.0, gt=0)
    burst: int = Field(default=20, ge=1)


PublishSource = Literal["camera", "microphone", "screen_share", "screen_share_audio"]


class GrantPolicy(BaseModel):
    """LiveKit's join grant, narrowed: a principal can only take rights away (the default,
    LiveKit's, is what a voice caller needs); admin, recording or room creation never."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    publish: bool = True  # canPublish
    subscribe: bool = True  # canSubscribe (the agent's voice too)
    publish_data: bool = True  # canPublishData: data messages, text streams, RPC
    publish_sources: tuple[PublishSource, ...] | None = None
    """``canPublishSources``: the only track sources allowed (None: any)."""


@dataclass(frozen=True)
class Principal:
    """Who is asking for a token, as decided by the bearer key or the ``authorize`` hook.

    ``id`` is logged and keys the rate limit; ``identity`` pins the participant identity;
    ``trusted_metadata`` overrides the client's (only ``public_keys`` go in the token);
    every room starts with ``room_prefix``; ``client_room``/``client_identity`` honour
    the client's choice (the latter only for a backend that authenticated the user).
    """

    id: str
    identity: str | None = None
    trusted_metadata: Mapping[str, Any] = field(default_factory=dict)
    allowed_agents: frozenset[str] | None = None
    rate_limit: RateLimit | None = None
    room_prefix: str | None = None
    public_keys: frozenset[str] = frozenset()
    client_room: bool = False
    client_identity: bool = False
    grants: GrantPolicy | None = None
    max_sessions: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("Principal id must be a non-empty str")
        for name, limit in (("identity", MAX_NAME_LEN), ("room_prefix", _MAX_ROOM_PREFIX_LEN)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not 0 < len(value) <= limit):
                raise ValueError(f"Principal {name} must be a str of 1..{limit} characters")
        if not isinstance(self.trusted_metadata, Mapping):
            raise TypeError("Principal trusted_metadata must be a mapping")
        _check_json_object(self.trusted_metadata, "Principal trusted_metadata")
        if self.allowed_agents is not None and not isinstance(self.allowed_agents, frozenset):
            object.__setattr__(self, "allowed_agents", frozenset(self.allowed_agents))
        if not isinstance(self.public_keys, frozenset):
            object.__setattr__(self, "public_keys", frozenset(self.public_keys))
        if self.grants is not None and not isinstance(self.grants, GrantPolicy):
            raise TypeError("Principal grants must be a GrantPolicy")
        if self.max_sessions is not None:
            positive_int(self.max_sessions, "Principal max_sessions")

    def private_keys(self) -> frozenset[str]:
        """The trusted keys that stay in the store (all but :attr:`public_keys`)."""
        return frozenset(self.trusted_metadata).difference(self.public_keys)


def _check_json_object(value: Mapping[str, Any], what: str) -> None:
    """ValueError (naming ``what``, never a value) unless ``value`` survives a JSON round trip."""
    try:
        same = parse_metadata(serialize_metadata(value, max_bytes=1 << 30)) == value
    except (TypeError, ValueError, MetadataError) as exc:
        reason = exc.message if isinstance(exc, MetadataError) else str(exc)
        raise ValueError(f"{what} must be plain JSON data: {reason}") from None
    if not same:
        raise ValueError(
            f"{what} must be plain JSON data (strings, numbers, booleans, null, lists, "
            "objects); a value such as a date or a tuple would change on the way"
        )


def _check_key_strength(key: SecretStr | None, what: str) -> None:
    if key is not None and len(key.get_secret_value()) < 16:
        raise ValueError(f"{what} must be at least 16 characters")


def _key_digest(key: SecretStr | None, key_sha256: str | None) -> bytes | None:
    if key_sha256 is not None:
        return bytes.fromhex(key_sha256)
    if key is None:
        return None
    return hashlib.sha256(key.get_secret_value().encode("utf-8")).digest()


AuthorizeHook = Callable[[Any], "Principal | Awaitable[Principal | None] | None"]
"""``authorize(request) -> Principal`` (sync or async) on the framework's own request (the
``EndpointRequest`` under ASGI). None: 401; an HTTP exception with a 4xx status: that status."""


class ApiKeyConfig(BaseModel):
    """One bearer key (``key``, or its hex SHA-256 ``key_sha256`` so the file never holds
    it) and the principal it stands for (the other fields: see :class:`Principal`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128)
    key: SecretStr | None = None
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    identity: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LEN)
    trusted_metadata: dict[str, Any] = Field(default_factory=dict)
    allowed_agents: list[str] | None = None
    rate_limit: RateLimit | None = None
    room_prefix: str | None = Field(default=None, min_length=1, max_length=_MAX_ROOM_PREFIX_LEN)
    public_keys: list[str] = Field(default_factory=list)
    client_room: bool = False
    client_identity: bool = False
    grants: GrantPolicy | None = None
    max_sessions: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_key(self) -> ApiKeyConfig:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of 'key' or 'key_sha256'")
        _check_key_strength(self.key, "bearer keys")
        _check_json_object(self.trusted_metadata, "trusted_metadata")
        return self

    def digest(self) -> bytes:
        digest = _key_digest(self.key, self.key_sha256)
        assert digest is not None
        return digest

    def principal(self) -> Principal:
        values = {f.name: getattr(self, f.name) for f in fields(Principal)}
        return Principal(**{**values, "trusted_metadata": dict(self.trusted_metadata)})


class AuthConfig(BaseModel):
    """Bearer keys, and whether anonymous callers are allowed (None: only with no key and
    no hook on a loopback host, the local-development case)."""

    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKeyConfig] = Field(default_factory=list)
    allow_anonymous: bool | None = None

    @model_validator(mode="after")
    def _tenants_apart(self) -> AuthConfig:
        ids = [k.id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError("every key needs its own id")
        prefixed = [(k.id, k.room_prefix) for k in self.keys if k.room_prefix is not None]
        for i, (a, pa) in enumerate(prefixed):
            for b, pb in prefixed[i + 1 :]:
                if pa.startswith(pb) or pb.startswith(pa):
                    raise ValueError(
                        f"room_prefix of key {a!r} ({pa!r}) and of key {b!r} ({pb!r}) overlap: "
                        "one tenant's callers could join the other's rooms; make neither a "
                        "prefix of the other (e.g. end both with '-')"
                    )
        return self


class MetadataPolicy(BaseModel):
    """What clients may put in participant metadata and attributes."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    max_bytes: int = Field(default=DEFAULT_MAX_METADATA_BYTES, ge=2, le=512 * 1024)
    """Largest metadata in UTF-8 bytes (client and merged)."""
    allowed_keys: list[str] | None = None
    """Top-level metadata keys a client may send (None: any key)."""
    model: str | None = Field(default=None, alias="schema")
    """A pydantic model, ``"package.module:Model"``, that client metadata must satisfy."""
    allowed_attribute_keys: list[str] | None = None
    """Attribute keys a client may send (None: any outside LiveKit's and this plugin's)."""
    allowed_service_attribute_keys: list[str] = Field(default_factory=list)
    """``sip.`` keys clients may send anyway (risky: a web caller could claim a phone
    number); ``lk.`` keys never."""

    @model_validator(mode="after")
    def _service_keys(self) -> MetadataPolicy:
        for key in self.allowed_service_attribute_keys:
            if key.startswith(RESERVED_ATTRIBUTE_PREFIX):
                raise ValueError(
                    f"allowed_service_attribute_keys: {key!r} is in LiveKit's reserved 'lk.' "
                    "namespace, which no token may carry"
                )
            if not key.startswith(SERVICE_ATTRIBUTE_PREFIXES):
                raise ValueError(
                    f"allowed_service_attribute_keys: {key!r} is not in a LiveKit namespace "
                    f"({', '.join(SERVICE_ATTRIBUTE_PREFIXES)}); clients may send it already"
                )
        return self


class ServerConfig(BaseModel):
    """The token server's configuration: :meth:`from_file`, or in code (then also the
    ``authorize`` hook, a ``metadata_schema`` class, a ready router, sessions or limits)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    path: str = Field(default="/token", pattern=r"^/[A-Za-z0-9._~/-]*$")
    server_url: str = Field(
        default_factory=lambda: os.environ.get("LIVEKIT_URL") or "ws://127.0.0.1:7880",
        validate_default=True,
    )
    api_key: str | None = None
    """Else ``LIVEKIT_API_KEY``, else (loopback only) the dev key; see :meth:`credentials`."""
    api_secret: SecretStr | None = None
    rules: str | None = None
    """Routing rules file (None: the bundled example rules; ``"none"``: no routing)."""
    default_agent: str | None = None
    """Agent dispatched when routing is disabled (None: no dispatch)."""
    store: str = "memory"
    """``"memory"`` or a Redis URL (see ``RedisStore.from_url``)."""

    @field_validator("server_url")
    @classmethod
    def _livekit_url(cls, value: str) -> str:
        try:
            return check_livekit_url(value, setting="server_url (or LIVEKIT_URL)")
        except ConfigError as exc:
            raise PydanticCustomError("livekit_url", exc.message) from None

    session_grace: float = Field(default=DEFAULT_SESSION_GRACE.total_seconds(), ge=0)
    """Seconds a token's session outlives the token, then expires on its own, used or not."""
    max_sessions: int = Field(default=100_000, ge=1)
    """Most live token sessions (all replicas on one Redis); full: 503 ``store_full``."""
    private_keys: list[str] = Field(default_factory=list)
    """Metadata keys never put in the token: only in its session in the store."""
    auth: AuthConfig = Field(default_factory=AuthConfig)
    cors_origins: list[str] = Field(default_factory=list)
    """Exact origins (``https://app.example.com``) allowed to call from browsers."""
    rate_limit: RateLimit | None = Field(default_factory=RateLimit)
    """Per principal (anonymous callers: per client address); None: off."""
    peer_rate_limit: RateLimit | None = None
    """Per client address, whoever the principal is (None: off)."""
    auth_failure_limit: RateLimit = Field(default_factory=lambda: RateLimit(rate=0.2, burst=10))
    """Failed authentications per client address; beyond it 429 ``auth_rate_limited``."""
    metrics_key: SecretStr | None = None
    """Bearer key (16+ characters) for ``/metrics``, ``/openapi.json`` and the playground's
    calls; without it (or ``metrics_key_sha256``) they answer loopback callers only."""
    metrics_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    max_sessions_per_principal: int | None = Field(default=None, ge=1)
    """One principal's share of ``max_sessions`` (None: a tenth); over it 503
    ``store_share_full``. A key's ``max_sessions`` overrides it."""
    max_rules_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_body_bytes: int = Field(default=_DEFAULT_MAX_BODY, ge=1024, le=16 * 1024 * 1024)
    metadata: MetadataPolicy = Field(default_factory=MetadataPolicy)
    allowed_agents: list[str] = Field(default_factory=list)
    allowed_room_config: list[str] = Field(default_factory=list)
    """Other ``room_config`` fields clients may set (e.g. ``agents.deployment``); else 403."""
    allow_update_own_metadata: bool = False  # canUpdateOwnMetadata
    token_ttl: float | None = Field(default=None, gt=0)
    """Token lifetime in seconds (None: the issuer's default)."""
    rejoin_window: float | None = Field(default=600.0, ge=0)
    """Seconds after its expiry that a token still lets its caller rejoin its room as
    itself (``rejoin_token``); None: no rejoining."""
    reference_mode: bool = False  # tokens carry only the session reference
    edge: EdgeConfig = Field(default_factory=EdgeConfig)
    playground: bool | None = None
    """The routing playground page at ``/playground`` (None: on when ``host`` is loopback)."""
    playground_sdk_url: str | None = Field(default=None, pattern=r"^(https?://|/)[^\s\"'<>]*$")
    """Where that page loads LiveKit's web SDK to join rooms (None: no joining)."""

    authorize: AuthorizeHook | None = Field(default=None, exclude=True)
    metadata_schema: type[BaseModel] | None = Field(default=None, exclude=True)
    router: MetadataRouter | None = Field(default=None, exclude=True)
    sessions: SessionManager | None = Field(default=None, exclude=True)
    limits: SkipValidation[Limits | None] = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _metrics_key_strength(self) -> ServerConfig:
        if self.metrics_key is not None and self.metrics_key_sha256 is not None:
            raise ValueError("give at most one of 'metrics_key' or 'metrics_key_sha256'")
        _check_key_strength(self.metrics_key, "metrics_key")
        return self

    def metrics_digest(self) -> bytes | None:
        return _key_digest(self.metrics_key, self.metrics_key_sha256)

    def session_share(self, principal: Principal) -> int:
        share = principal.max_sessions or self.max_sessions_per_principal
        return share or max(1, self.max_sessions // 10)

    def token_session_ttl(self) -> float:
        """Seconds each token session lives: the token's lifetime plus ``session_grace``."""
        return (self.token_ttl or DEFAULT_TTL.total_seconds()) + self.session_grace

    def credentials(self) -> Credentials:
        """The LiveKit key and secret: configured, from the environment, or (loopback) dev
        (ConfigError: only one of them set, or none on a non-loopback host)."""
        key = self.api_key or os.environ.get("LIVEKIT_API_KEY") or ""
        secret = (
            self.api_secret.get_secret_value() if self.api_secret is not None else ""
        ) or os.environ.get("LIVEKIT_API_SECRET", "")
        if key and secret:
            return Credentials(key, secret, dev=False)
        if key or secret:
            raise ConfigError(
                "set both the LiveKit API key and secret (api_key/api_secret or "
                "LIVEKIT_API_KEY/LIVEKIT_API_SECRET), not just one"
            )
        if not is_loopback(self.host):
            raise ConfigError(
                "no LiveKit API key/secret configured: set LIVEKIT_API_KEY and LIVEKIT_API_SECRET "
                "(dev-server keys are only used when listening on a loopback host)"
            )
        return Credentials(DEV_API_KEY, DEV_API_SECRET, dev=True)

    def anonymous_allowed(self) -> bool:
        """Whether callers without credentials get tokens (ConfigError: no way to
        authenticate callers and anonymous access off)."""
        anonymous = self.auth.allow_anonymous
        if anonymous is None:
            anonymous = not self.auth.keys and self.authorize is None and is_loopback(self.host)
        if not self.auth.keys and self.authorize is None and not anonymous:
            raise ConfigError(
                "no way to authenticate callers: configure auth.keys or an authorize hook, or set "
                "auth.allow_anonymous: true explicitly"
            )
        return anonymous

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> ServerConfig:
        """Load a YAML, TOML or JSON config (ConfigError names the file and the field, never
        a secret value)."""
        p = Path(path)
        data = load_file(p)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"server config {str(p)!r} must be a mapping at the top level")
        if data.get("rules") and data["rules"] != "none":
            rules = Path(str(data["rules"]))
            if not rules.is_absolute():
                data["rules"] = str(p.parent / rules)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(data, source=str(p))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "config") -> ServerConfig:
        """Validate a mapping; invalid fields raise ``ConfigError`` naming the field."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = [
                f"{'.'.join(str(x) for x in err['loc']) or '<root>'}: {err['msg']}"
                for err in exc.errors(include_input=False, include_url=False)
            ]
            raise ConfigError(
                f"invalid server config in {source}: " + "; ".join(problems)
            ) from None


def open_room_warnings(config: ServerConfig) -> list[str]:
    """Warnings for bearer keys that let clients choose rooms without a ``room_prefix``
    (its callers can join each other's rooms) or choose their identity."""
    out = []
    for key in config.auth.keys:
        if key.client_room and key.room_prefix is None:
            out.append(
                f"auth key {key.id!r} lets clients choose their room (client_room: true) without "
                "a room_prefix: its callers can join any room by name, other callers' calls "
                "included; give it a room_prefix"
            )
        if key.client_identity and key.identity is None:
            out.append(
                f"auth key {key.id!r} lets clients choose their identity (client_identity: "
                "true): only safe for a key held by a backend that authenticates its users"
            )
    return out
