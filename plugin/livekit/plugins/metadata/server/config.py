"""The token server's configuration: pydantic models read from YAML/TOML/JSON or built in code.

:class:`ServerConfig` is what ``lk-metadata serve --config`` loads; :class:`Principal`
is who a request acts as (from a bearer key in :class:`AuthConfig` or from an
``authorize`` hook). Nothing here touches the network: ``app.create_app`` turns a
config into a running application.
"""

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


# --------------------------------------------------------------------------- policy types


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
    dev: bool
    """True when these are the public ``livekit-server --dev`` keys (loopback only)."""

    def __repr__(self) -> str:
        return f"Credentials(key={self.key!r}, secret=***, dev={self.dev})"


class RateLimit(BaseModel):
    """A rate bucket: ``rate`` requests per second on average, bursts of ``burst``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(default=5.0, gt=0)
    """Sustained requests per second."""
    burst: int = Field(default=20, ge=1)
    """Largest burst (bucket size)."""


PublishSource = Literal["camera", "microphone", "screen_share", "screen_share_audio"]


class GrantPolicy(BaseModel):
    """What a token lets its participant do in the room: LiveKit's join grant, narrowed.

    The default is what a voice caller needs and what LiveKit grants by default:
    publish (the microphone), subscribe (to hear the agent) and publish data
    (text, RPC). A principal can only take rights away here; admin, recording or
    room-creation rights are never granted by the endpoint.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    publish: bool = True
    """``canPublish``: send audio/video tracks."""
    subscribe: bool = True
    """``canSubscribe``: receive the other participants' tracks (the agent's voice too)."""
    publish_data: bool = True
    """``canPublishData``: data messages, text streams and RPC."""
    publish_sources: tuple[PublishSource, ...] | None = None
    """``canPublishSources``: the only track sources allowed (None: any), e.g. ``[microphone]``."""


@dataclass(frozen=True)
class Principal:
    """Who is asking for a token, as decided by the bearer key or the ``authorize`` hook.

    Attributes:
        id: A stable, non-secret name for the caller (logged and used for rate limits).
        identity: If set, the participant identity is pinned to it; a request naming
            another identity is refused with 403.
        trusted_metadata: Keys that override whatever the client sent (e.g. the
            authenticated user id, the tenant); they skip the client key allowlist.
        allowed_agents: If set, the only agents this caller may be dispatched to,
            whether chosen by the client or by the router.
        rate_limit: Overrides the server's per-principal rate limit for this caller.
        room_prefix: If set, every generated room name starts with it, and with
            ``client_room`` the caller may only name rooms that start with it (another
            room is refused with 403): one tenant's callers never join another
            tenant's rooms.
        public_keys: The ``trusted_metadata`` keys that may appear in the token (and
            so be seen by the client and everyone in the room). Every other trusted
            key is private: it lives only in the token's session in the store.
        client_room: Honour a client-chosen ``room_name`` (within ``room_prefix``).
            Off by default: the server generates a fresh, unguessable room per
            token and ignores the client's ``room_name``, so nobody can name (and
            join) another caller's room. Turn it on for multi-party rooms.
        client_identity: Honour a client-chosen ``participant_identity``. Off by
            default (a fresh identity per token): only for callers whose own
            authentication vouches for the identity (a backend that logged the user
            in); never for a key that sits in a browser page. Prefer pinning
            ``identity`` from the ``authorize`` hook.
        grants: Narrow what the token grants (None: publish, subscribe and data).
        max_sessions: This caller's share of the live-session cap (None: the server's
            ``max_sessions_per_principal``).
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
        if self.identity is not None and (
            not isinstance(self.identity, str) or not 0 < len(self.identity) <= MAX_NAME_LEN
        ):
            raise ValueError(f"Principal identity must be a str of 1..{MAX_NAME_LEN} characters")
        if not isinstance(self.trusted_metadata, Mapping):
            raise TypeError("Principal trusted_metadata must be a mapping")
        _check_json_object(self.trusted_metadata, "Principal trusted_metadata")
        if self.room_prefix is not None and (
            not isinstance(self.room_prefix, str)
            or not 0 < len(self.room_prefix) <= _MAX_ROOM_PREFIX_LEN
        ):
            raise ValueError(
                f"Principal room_prefix must be a str of 1..{_MAX_ROOM_PREFIX_LEN} characters"
            )
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
    """Refuse a mapping that does not survive a JSON round trip unchanged (dates, NaN, sets...).

    Raises:
        ValueError: The message names ``what`` and the reason, never a value.
    """
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
    """The SHA-256 a presented key is compared against: the configured hex, or the key's."""
    if key_sha256 is not None:
        return bytes.fromhex(key_sha256)
    if key is None:
        return None
    return hashlib.sha256(key.get_secret_value().encode("utf-8")).digest()


AuthorizeHook = Callable[[Any], "Principal | Awaitable[Principal | None] | None"]
"""``authorize(request) -> Principal`` (sync or async). The request is the
framework's own (aiohttp's ``web.Request`` under ``serve``; the
:class:`~.messages.EndpointRequest` under the ASGI adapter). Return None (or
raise ``web.HTTPUnauthorized``) to refuse with 401; raise ``web.HTTPForbidden``
for 403 (any framework's HTTP exception with a 4xx ``status``/``status_code``)."""


class ApiKeyConfig(BaseModel):
    """One bearer key and the principal it stands for (the other fields: see :class:`Principal`).

    Give the key either as-is (``key``, e.g. from an environment-expanded config)
    or as the lowercase hex SHA-256 of the key (``key_sha256``), so the config file
    never holds the secret itself.
    """

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
        """The SHA-256 digest the presented key is compared against."""
        digest = _key_digest(self.key, self.key_sha256)
        assert digest is not None
        return digest

    def principal(self) -> Principal:
        """The principal a request carrying this key acts as."""
        values = {f.name: getattr(self, f.name) for f in fields(Principal)}
        return Principal(**{**values, "trusted_metadata": dict(self.trusted_metadata)})


class AuthConfig(BaseModel):
    """Authentication: bearer keys, and whether anonymous callers are allowed.

    ``allow_anonymous`` defaults to None, meaning "only when no key is configured
    and the server listens on a loopback host" (the local-development case).
    """

    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKeyConfig] = Field(default_factory=list)
    allow_anonymous: bool | None = None

    @model_validator(mode="after")
    def _tenants_apart(self) -> AuthConfig:
        """Two keys whose room prefixes overlap could join each other's rooms: refuse."""
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
    """A pydantic model as ``"package.module:Model"`` that client metadata must satisfy."""
    allowed_attribute_keys: list[str] | None = None
    """Attribute keys a client may send (None: any key outside LiveKit's and this plugin's
    namespaces)."""
    allowed_service_attribute_keys: list[str] = Field(default_factory=list)
    """Keys in LiveKit's ``sip.`` namespace that clients may nevertheless send (exact names).
    Risky: on any participant but a SIP one these are whatever the client typed (a web
    caller could claim a phone number). ``lk.`` keys cannot be allowed: LiveKit reserves them.
    A key named here need not be repeated in ``allowed_attribute_keys``."""

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
    """Configuration of the token server; load it with :meth:`from_file` or build it in code.

    Python-only fields (not read from files): ``authorize`` (a hook returning a
    :class:`Principal`), ``metadata_schema`` (a pydantic model class), ``router``
    (a ready ``MetadataRouter``), ``sessions`` (a ready ``SessionManager``) and
    ``limits`` (a ready ``Limits``; default: shared through Redis with a Redis
    store, in process memory otherwise).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    path: str = Field(default="/token", pattern=r"^/[A-Za-z0-9._~/-]*$")
    server_url: str = Field(
        default_factory=lambda: os.environ.get("LIVEKIT_URL") or "ws://127.0.0.1:7880",
        validate_default=True,
    )
    api_key: str | None = None
    """LiveKit API key; falls back to ``LIVEKIT_API_KEY``, then (loopback only) ``devkey``."""
    api_secret: SecretStr | None = None
    """LiveKit API secret; falls back to ``LIVEKIT_API_SECRET``, then (loopback only) ``secret``."""
    rules: str | None = None
    """Routing rules file; None uses the bundled example rules, ``"none"`` disables routing."""
    default_agent: str | None = None
    """Agent dispatched when routing is disabled (None: no dispatch)."""
    store: str = "memory"
    """``"memory"`` or a Redis URL: ``redis://``, ``rediss://``, ``unix://`` (one server),
    ``redis+sentinel://`` or ``redis+cluster://`` (see ``RedisStore.from_url``)."""

    @field_validator("server_url")
    @classmethod
    def _livekit_url(cls, value: str) -> str:
        """Clients get this URL: refuse one no LiveKit SDK can connect to, at start-up."""
        try:
            return check_livekit_url(value, setting="server_url (or LIVEKIT_URL)")
        except ConfigError as exc:
            raise PydanticCustomError("livekit_url", exc.message) from None

    session_grace: float = Field(default=DEFAULT_SESSION_GRACE.total_seconds(), ge=0)
    """Seconds a token session outlives its token (a join near the token's expiry). Each
    token owns a session that lives for the token's lifetime plus this, then expires on
    its own, used or not."""
    max_sessions: int = Field(default=100_000, ge=1)
    """Most live token sessions (shared by every replica on one Redis). When full, requests
    get 503 ``store_full`` with ``Retry-After``; no session is evicted before its time."""
    private_keys: list[str] = Field(default_factory=list)
    """Metadata keys (client or trusted) that never appear in the token: they live only in
    the token's session in the store, where the agent reads them."""
    auth: AuthConfig = Field(default_factory=AuthConfig)
    cors_origins: list[str] = Field(default_factory=list)
    """Exact origins (``https://app.example.com``) allowed to call from browsers."""
    rate_limit: RateLimit | None = Field(default_factory=RateLimit)
    """Per-principal limit (anonymous callers: per client address); None disables it."""
    peer_rate_limit: RateLimit | None = None
    """Per client address, whoever the principal is (None: off)."""
    auth_failure_limit: RateLimit = Field(default_factory=lambda: RateLimit(rate=0.2, burst=10))
    """Failed authentications per client address; beyond it the address gets 429
    ``auth_rate_limited`` (counted in ``/metrics``) until the bucket refills."""
    metrics_key: SecretStr | None = None
    """Bearer key for ``/metrics`` and ``/openapi.json`` (at least 16 characters, like
    bearer keys; or give ``metrics_key_sha256``). Without either they answer only
    callers on a loopback address. Wrong keys count as failed authentications."""
    metrics_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    """The lowercase hex SHA-256 of the metrics key, so the file never holds the key."""
    max_sessions_per_principal: int | None = Field(default=None, ge=1)
    """Live token sessions one principal may hold (anonymous callers: one client address),
    so one caller cannot fill ``max_sessions`` for everyone; a key's ``max_sessions``
    overrides it. None: a tenth of ``max_sessions`` (at least 1). Over it, requests get
    503 ``store_share_full`` with ``Retry-After``."""
    max_rules_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    """Largest routing rules file read (bytes); a larger one or one that is not a
    regular file is refused at start-up."""
    max_body_bytes: int = Field(default=_DEFAULT_MAX_BODY, ge=1024, le=16 * 1024 * 1024)
    metadata: MetadataPolicy = Field(default_factory=MetadataPolicy)
    allowed_agents: list[str] = Field(default_factory=list)
    """Agents a client may name in ``room_config.agents[0].agent_name``."""
    allowed_room_config: list[str] = Field(default_factory=list)
    """Other ``room_config`` fields clients may set (e.g. ``empty_timeout``,
    ``agents.deployment``); anything else is refused with 403."""
    allow_update_own_metadata: bool = False
    """Grant ``canUpdateOwnMetadata`` (clients can then rewrite their metadata)."""
    token_ttl: float | None = Field(default=None, gt=0)
    """Token lifetime in seconds (None: the issuer's default)."""
    rejoin_window: float | None = Field(default=600.0, ge=0)
    """Seconds after its expiry that a previous token still lets its caller rejoin
    (``rejoin_token``: same room, same identity, nothing else; its token session must
    still exist). None turns rejoining off; 0 accepts only unexpired tokens."""
    reference_mode: bool = False
    """The token carries no participant metadata and the job metadata only the session
    reference; the agent loads everything from the store."""
    edge: EdgeConfig = Field(default_factory=EdgeConfig)
    """HTTP edge limits: read deadlines, connections per peer, edge log budget."""
    playground: bool | None = None
    """The routing playground page at ``/playground`` (None: on when ``host`` is loopback)."""
    playground_sdk_url: str | None = Field(default=None, pattern=r"^(https?://|/)[^\s\"'<>]*$")
    """Where that page loads LiveKit's web SDK (``livekit-client.umd.js``) to join rooms;
    None: no joining from the page (routing and explain work offline)."""

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
        """The SHA-256 a presented metrics key is compared against (None: no key)."""
        return _key_digest(self.metrics_key, self.metrics_key_sha256)

    def session_share(self, principal: Principal) -> int:
        """How many live sessions ``principal`` may hold (its share of ``max_sessions``)."""
        if principal.max_sessions is not None:
            return principal.max_sessions
        if self.max_sessions_per_principal is not None:
            return self.max_sessions_per_principal
        return max(1, self.max_sessions // 10)

    def token_session_ttl(self) -> float:
        """Seconds each token session lives: the token's lifetime plus ``session_grace``."""
        token_ttl = self.token_ttl or DEFAULT_TTL.total_seconds()
        return token_ttl + self.session_grace

    def credentials(self) -> Credentials:
        """The LiveKit API key and secret: configured, from the environment, or (loopback) dev.

        Raises:
            ConfigError: Only one of key and secret is set, or none on a non-loopback host.
        """
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
        """Whether callers without credentials get tokens (see :attr:`AuthConfig.allow_anonymous`).

        Raises:
            ConfigError: No way to authenticate callers is configured and anonymous
                access is off.
        """
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
        """Load a config from YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON (``.json``).

        The file goes through the package's one loader (``loader.load_file``): YAML 1.2
        scalars (``language: no`` is the string ``"no"``), and duplicate keys or values
        JSON cannot hold (an unquoted date) are refused with the file, line and field.

        Raises:
            ConfigError: The file cannot be read or parsed, or a field is invalid
                (the message names the file and the field, never a secret value).
        """
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
    """Warnings for bearer keys that let clients choose rooms without a ``room_prefix``.

    Such a key's callers can name (and join, listen to, disconnect) each other's rooms,
    and any room of a key without a prefix: say so at load.
    """
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
