"""The token endpoint: a small, hardened aiohttp service behind ``lk-metadata serve``.

It speaks LiveKit's standard token-endpoint format, so ``TokenSource.endpoint(url)``
in every LiveKit client SDK works against it unchanged::

    POST /token   {"room_name", "participant_identity", "participant_name",
                   "participant_metadata", "participant_attributes", "room_config"}
    201           {"server_url", "participant_token"}

The handler is a thin edge over the pure core, in this order: check the
request's framing (size, content type) → authorize (bearer keys or a user hook)
→ rate-limit the principal → parse and validate the body (metadata through the
codec, schema or key allowlist, attributes, ``room_config`` with LiveKit's own
protobuf parser) → apply the principal's pinned identity and trusted metadata →
route (a client-chosen agent only from an allowlist, otherwise the router) →
store the merged metadata in the SessionManager under the room name → mint.

Safe defaults: listens on 127.0.0.1; anonymous access only on a loopback host
(unless ``auth.allow_anonymous`` says otherwise); no ``room_config`` field other
than the agent name may be set by clients; ``canUpdateOwnMetadata`` off; a
per-principal token-bucket rate limit; a 128 KiB body limit; no CORS origin.
Every error is JSON ``{"error": {"code", "message"}}`` and no message carries a
metadata value, a token or a secret; one log line per request carries the
principal, room, routed agent, status and latency only.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import hmac
import importlib
import inspect
import ipaddress
import logging
import math
import os
import re
import secrets
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from .._util import key_label, redact_url
from ..codec import DEFAULT_MAX_METADATA_BYTES, parse_metadata, validate_attributes
from ..errors import (
    ConfigError,
    InvalidAttributes,
    MetadataError,
    MetadataTooLarge,
    NoRouteMatched,
    SchemaViolation,
    StoreError,
)
from ..log import logger

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ..routing.router import MetadataRouter, Route

__all__ = [
    "DEFAULT_PORT",
    "DEV_API_KEY",
    "DEV_API_SECRET",
    "ApiKeyConfig",
    "AuthConfig",
    "AuthorizeHook",
    "MetadataPolicy",
    "Principal",
    "RateLimit",
    "ServerConfig",
    "create_app",
    "openapi_document",
    "prepare_process",
    "run",
]

DEFAULT_PORT = 8080
"""Default listening port (LiveKit itself uses 7880-7882 and agent workers 8081)."""

DEV_API_KEY = "devkey"
"""The API key of ``livekit-server --dev``; used only on a loopback host when none is set."""

DEV_API_SECRET = "secret"  # noqa: S105 - the public, documented dev-server secret
"""The API secret of ``livekit-server --dev`` (public; never use it in production)."""

_DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")
_DEFAULT_MAX_BODY = 128 * 1024
_MAX_NAME_LEN = 256  # LiveKit's identity / name / room name limits
_MAX_ROOM_PREFIX_LEN = 128  # leaves room for the generated suffix
_MAX_RATE_BUCKETS = 100_000
_REQUEST_FIELDS = frozenset(
    {
        "room_name",
        "participant_identity",
        "participant_name",
        "participant_metadata",
        "participant_attributes",
        "room_config",
    }
)
_CAMEL_FIELDS = {
    "".join(w.capitalize() if i else w for i, w in enumerate(n.split("_"))): n
    for n in _REQUEST_FIELDS
}
_ROOM_CONFIG_FIELDS = frozenset(
    {
        "name",
        "empty_timeout",
        "departure_timeout",
        "max_participants",
        "metadata",
        "egress",
        "min_playout_delay",
        "max_playout_delay",
        "sync_streams",
        "tags",
    }
)
_AGENT_FIELDS = frozenset({"deployment", "attributes", "restart_policy"})


# --------------------------------------------------------------------------- policy types


class RateLimit(BaseModel):
    """A token bucket: ``rate`` requests per second on average, bursts of ``burst``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(default=5.0, gt=0)
    """Sustained requests per second."""
    burst: int = Field(default=20, ge=1)
    """Largest burst (bucket size)."""


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
        room_prefix: If set, the caller may only name rooms that start with it (a
            request for another room is refused with 403, and a generated room name
            starts with it). The session store is keyed by room name, so this keeps
            one tenant's callers from writing into another tenant's room sessions.
    """

    id: str
    identity: str | None = None
    trusted_metadata: Mapping[str, Any] = field(default_factory=dict)
    allowed_agents: frozenset[str] | None = None
    rate_limit: RateLimit | None = None
    room_prefix: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("Principal id must be a non-empty str")
        if self.identity is not None and (
            not isinstance(self.identity, str) or not 0 < len(self.identity) <= _MAX_NAME_LEN
        ):
            raise ValueError(f"Principal identity must be a str of 1..{_MAX_NAME_LEN} characters")
        if not isinstance(self.trusted_metadata, Mapping):
            raise TypeError("Principal trusted_metadata must be a mapping")
        if self.room_prefix is not None and (
            not isinstance(self.room_prefix, str)
            or not 0 < len(self.room_prefix) <= _MAX_ROOM_PREFIX_LEN
        ):
            raise ValueError(
                f"Principal room_prefix must be a str of 1..{_MAX_ROOM_PREFIX_LEN} characters"
            )
        if self.allowed_agents is not None and not isinstance(self.allowed_agents, frozenset):
            object.__setattr__(self, "allowed_agents", frozenset(self.allowed_agents))


AuthorizeHook = Callable[[web.Request], "Principal | Awaitable[Principal | None] | None"]
"""``authorize(request) -> Principal`` (sync or async). Return None (or raise
``web.HTTPUnauthorized``) to refuse with 401; raise ``web.HTTPForbidden`` for 403."""


class ApiKeyConfig(BaseModel):
    """One bearer key and the principal it stands for.

    Give the key either as-is (``key``, e.g. from an environment-expanded config)
    or as the lowercase hex SHA-256 of the key (``key_sha256``), so the config file
    never holds the secret itself.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128)
    key: SecretStr | None = None
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    identity: str | None = Field(default=None, min_length=1, max_length=_MAX_NAME_LEN)
    trusted_metadata: dict[str, Any] = Field(default_factory=dict)
    allowed_agents: list[str] | None = None
    rate_limit: RateLimit | None = None
    room_prefix: str | None = Field(default=None, min_length=1, max_length=_MAX_ROOM_PREFIX_LEN)

    @model_validator(mode="after")
    def _one_key(self) -> ApiKeyConfig:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of 'key' or 'key_sha256'")
        if self.key is not None and len(self.key.get_secret_value()) < 16:
            raise ValueError("bearer keys must be at least 16 characters")
        return self

    def digest(self) -> bytes:
        """The SHA-256 digest the presented key is compared against."""
        if self.key_sha256 is not None:
            return bytes.fromhex(self.key_sha256)
        assert self.key is not None
        return hashlib.sha256(self.key.get_secret_value().encode("utf-8")).digest()

    def principal(self) -> Principal:
        """The principal a request carrying this key acts as."""
        return Principal(
            id=self.id,
            identity=self.identity,
            trusted_metadata=dict(self.trusted_metadata),
            allowed_agents=None if self.allowed_agents is None else frozenset(self.allowed_agents),
            rate_limit=self.rate_limit,
            room_prefix=self.room_prefix,
        )


class AuthConfig(BaseModel):
    """Authentication: bearer keys, and whether anonymous callers are allowed.

    ``allow_anonymous`` defaults to None, meaning "only when no key is configured
    and the server listens on a loopback host" (the local-development case).
    """

    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKeyConfig] = Field(default_factory=list)
    allow_anonymous: bool | None = None


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
    """Attribute keys a client may send (None: any key without the ``lk.`` prefix)."""


class ServerConfig(BaseModel):
    """Configuration of the token server; load it with :meth:`from_file` or build it in code.

    Python-only fields (not read from files): ``authorize`` (a hook returning a
    :class:`Principal`), ``metadata_schema`` (a pydantic model class), ``router``
    (a ready ``MetadataRouter``) and ``sessions`` (a ready ``SessionManager``).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    path: str = Field(default="/token", pattern=r"^/[A-Za-z0-9._~/-]*$")
    server_url: str = Field(
        default_factory=lambda: os.environ.get("LIVEKIT_URL") or "ws://127.0.0.1:7880"
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
    """``"memory"`` or a ``redis://`` / ``rediss://`` / ``unix://`` URL."""
    session_ttl: float = Field(default=3600.0, gt=0)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    cors_origins: list[str] = Field(default_factory=list)
    """Exact origins (``https://app.example.com``) allowed to call from browsers."""
    rate_limit: RateLimit | None = Field(default_factory=RateLimit)
    """Per-principal limit (anonymous callers: per client address); None disables it."""
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
    reference_mode: bool = False
    """Job metadata carries only ``{"session": room}``; the agent loads the rest from the store."""

    authorize: Callable[..., Any] | None = Field(default=None, exclude=True)
    metadata_schema: type[BaseModel] | None = Field(default=None, exclude=True)
    router: Any = Field(default=None, exclude=True)
    sessions: Any = Field(default=None, exclude=True)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> ServerConfig:
        """Load a config from YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON (``.json``).

        Raises:
            ConfigError: The file cannot be read or parsed, or a field is invalid
                (the message names the field, never a secret value).
        """
        p = Path(path)
        try:
            text = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read server config {str(p)!r}: {exc.strerror}") from None
        suffix = p.suffix.lower()
        try:
            if suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            elif suffix == ".toml":
                try:
                    toml = importlib.import_module("tomllib")
                except ImportError:  # Python 3.10: the declared tomli backport
                    toml = importlib.import_module("tomli")
                data = toml.loads(text.decode("utf-8"))
            elif suffix == ".json":
                data = orjson.loads(text)
            else:
                raise ConfigError(
                    f"unknown config format {suffix!r} for {str(p)!r}: use .yaml, .toml or .json"
                )
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"cannot parse server config {str(p)!r} ({type(exc).__name__})"
            ) from None
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


# --------------------------------------------------------------------------- errors


class _HTTPError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


_AIOHTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


# --------------------------------------------------------------------------- rate limiting


class _RateLimiter:
    """In-memory token buckets keyed by principal; bounded in size."""

    __slots__ = ("_buckets", "_clock")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._clock = clock

    def check(self, key: str, limit: RateLimit) -> float:
        """Take one token; 0.0 if allowed, else the seconds until one is available."""
        now = self._clock()
        entry = self._buckets.get(key)
        if entry is None:
            tokens = float(limit.burst)
            if len(self._buckets) >= _MAX_RATE_BUCKETS:
                self._buckets.pop(next(iter(self._buckets)))
        else:
            tokens = min(float(limit.burst), entry[0] + (now - entry[1]) * limit.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / limit.rate


# --------------------------------------------------------------------------- metrics


_MINT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


class _Metrics:
    """Prometheus metrics in a private registry (one per app).

    The request path only bumps plain ints (the event loop is single-threaded);
    a custom collector turns them into Prometheus families at scrape time, which
    keeps label lookups and prometheus_client's per-value locks off the hot path.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry

        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=False)
        self.requests: dict[tuple[str, int], int] = {}
        self.routes: dict[tuple[str, str], int] = {}
        self.mint_buckets = [0] * (len(_MINT_BUCKETS) + 1)
        self.mint_sum = 0.0
        self.registry.register(self)

    def count(self, endpoint: str, status: int) -> None:
        key = (endpoint, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def route(self, agent: str, source: str) -> None:
        key = (agent, source)
        self.routes[key] = self.routes.get(key, 0) + 1

    def observe_mint(self, seconds: float) -> None:
        self.mint_buckets[bisect.bisect_left(_MINT_BUCKETS, seconds)] += 1
        self.mint_sum += seconds

    def collect(self) -> Iterator[Any]:
        """Called by prometheus_client at scrape time."""
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        requests = CounterMetricFamily(
            "lk_metadata_http_requests",
            "HTTP requests by endpoint and status code.",
            labels=["endpoint", "status"],
        )
        for (endpoint, status), n in sorted(self.requests.items()):
            requests.add_metric([endpoint, str(status)], n)
        yield requests
        mint = HistogramMetricFamily(
            "lk_metadata_mint_seconds", "Time spent minting one access token."
        )
        cumulative, buckets = 0, []
        for bound, n in zip((*map(repr, _MINT_BUCKETS), "+Inf"), self.mint_buckets, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        mint.add_metric([], buckets, self.mint_sum)
        yield mint
        routes = CounterMetricFamily(
            "lk_metadata_routes",
            "Tokens minted, by dispatched agent ('' = no dispatch) and how it was chosen.",
            labels=["agent", "source"],
        )
        for (agent, source), n in sorted(self.routes.items()):
            routes.add_metric([agent, source], n)
        yield routes

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# --------------------------------------------------------------------------- app state


@dataclass
class _State:
    config: ServerConfig
    issuer: Any
    router: MetadataRouter | None
    sessions: Any
    owns_sessions: bool
    authorize: Callable[[web.Request], Any] | None
    keys: list[tuple[bytes, Principal]]
    anonymous: bool
    schema: type[BaseModel] | None
    allowed_keys: frozenset[str] | None
    allowed_attr_keys: frozenset[str] | None
    allowed_agents: frozenset[str]
    allowed_room_config: frozenset[str]
    cors_origins: frozenset[str]
    limiter: _RateLimiter
    metrics: _Metrics
    dispatch_cls: Any
    openapi: bytes
    ttl: Any


_STATE = web.AppKey("lk_metadata_state", _State)
_LOG = web.RequestKey("lk_metadata_log", dict)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _resolve_credentials(config: ServerConfig) -> tuple[str, str, bool]:
    key = config.api_key or os.environ.get("LIVEKIT_API_KEY") or ""
    secret = (
        config.api_secret.get_secret_value() if config.api_secret is not None else ""
    ) or os.environ.get("LIVEKIT_API_SECRET", "")
    if key and secret:
        return key, secret, False
    if key or secret:
        raise ConfigError(
            "set both the LiveKit API key and secret (api_key/api_secret or "
            "LIVEKIT_API_KEY/LIVEKIT_API_SECRET), not just one"
        )
    if not _is_loopback(config.host):
        raise ConfigError(
            "no LiveKit API key/secret configured: set LIVEKIT_API_KEY and LIVEKIT_API_SECRET "
            "(dev-server keys are only used when listening on a loopback host)"
        )
    return DEV_API_KEY, DEV_API_SECRET, True


def _import_model(spec: str) -> type[BaseModel]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"metadata schema must look like 'package.module:Model', got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import metadata schema {spec!r}: {type(exc).__name__}") from None
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise ConfigError(f"metadata schema {spec!r} is not a pydantic model class")
    return obj


def _build_router(config: ServerConfig) -> MetadataRouter | None:
    if config.router is not None:
        return config.router  # type: ignore[no-any-return]
    if config.rules == "none":
        return None
    from ..routing.router import MetadataRouter

    path = Path(config.rules) if config.rules else _DEFAULT_RULES
    return MetadataRouter.from_file(path)


def _build_sessions(config: ServerConfig) -> tuple[Any, bool]:
    if config.sessions is not None:
        return config.sessions, False
    from ..sessions.manager import SessionManager

    store: Any = None
    if config.store != "memory":
        if not config.store.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("store must be 'memory' or a redis://, rediss:// or unix:// URL")
        from ..sessions.redis import RedisStore

        store = RedisStore.from_url(config.store)
    kwargs: dict[str, Any] = {"session_ttl": config.session_ttl}
    params = inspect.signature(SessionManager).parameters
    if "max_session_bytes" in params:
        kwargs["max_session_bytes"] = config.metadata.max_bytes
    if "secret_key" in params and not os.environ.get("LIVEKIT_METADATA_SECRET"):
        # The token server never signs tool tokens; a throwaway key avoids a
        # misleading "random per-process secret" warning.
        kwargs["secret_key"] = secrets.token_bytes(32)
    return SessionManager(store, **kwargs), True


def create_app(config: ServerConfig | None = None) -> web.Application:
    """Build the token-endpoint application.

    Args:
        config: The server configuration; None means all defaults (loopback,
            in-memory store, bundled example rules, dev keys if none are set).

    Returns:
        An ``aiohttp.web.Application`` serving ``POST <path>``, ``GET /healthz``,
        ``GET /metrics`` and ``GET /openapi.json``.

    Raises:
        ConfigError: Missing credentials on a non-loopback host, no way to
            authenticate callers, or an invalid rules file / schema / store URL.
    """
    return _build_app(config or ServerConfig(), announce=True)


def _build_app(config: ServerConfig, *, announce: bool) -> web.Application:
    key, secret, dev = _resolve_credentials(config)
    if dev and announce:
        _warn_dev_keys()

    keys = [(k.digest(), k.principal()) for k in config.auth.keys]
    anonymous = config.auth.allow_anonymous
    if anonymous is None:
        anonymous = not keys and config.authorize is None and _is_loopback(config.host)
    if not keys and config.authorize is None and not anonymous:
        raise ConfigError(
            "no way to authenticate callers: configure auth.keys or an authorize hook, or set "
            "auth.allow_anonymous: true explicitly"
        )

    schema = config.metadata_schema
    if schema is None and config.metadata.model:
        schema = _import_model(config.metadata.model)

    for name in config.allowed_room_config:
        base = name.removeprefix("agents.")
        if name not in _ROOM_CONFIG_FIELDS and not (
            name.startswith("agents.") and base in _AGENT_FIELDS
        ):
            raise ConfigError(
                f"allowed_room_config: unknown field {name!r}; use RoomConfiguration field names "
                f"({', '.join(sorted(_ROOM_CONFIG_FIELDS))}) or agents.<"
                f"{'|'.join(sorted(_AGENT_FIELDS))}>"
            )

    from ..tokens.issuer import Dispatch, TokenIssuer

    issuer_kwargs: dict[str, Any] = {"max_metadata_bytes": config.metadata.max_bytes}
    import datetime as _dt

    ttl = None if config.token_ttl is None else _dt.timedelta(seconds=config.token_ttl)
    if ttl is not None:
        issuer_kwargs["ttl"] = ttl
    with warnings.catch_warnings():
        if dev:
            _silence_short_key_warning()
        issuer = TokenIssuer(key, secret, **issuer_kwargs)
    room_fields = [n for n in config.allowed_room_config if not n.startswith("agents.")]
    if room_fields and "room_config" not in inspect.signature(issuer.mint).parameters:
        raise ConfigError(
            "allowed_room_config: passing room fields other than agents.* through to the token "
            f"is not supported by this TokenIssuer ({', '.join(room_fields)})"
        )
    router = _build_router(config)
    sessions, owns = _build_sessions(config)

    state = _State(
        config=config,
        issuer=issuer,
        router=router,
        sessions=sessions,
        owns_sessions=owns,
        authorize=config.authorize,
        keys=keys,
        anonymous=bool(anonymous),
        schema=schema,
        allowed_keys=None
        if config.metadata.allowed_keys is None
        else frozenset(config.metadata.allowed_keys),
        allowed_attr_keys=None
        if config.metadata.allowed_attribute_keys is None
        else frozenset(config.metadata.allowed_attribute_keys),
        allowed_agents=frozenset(config.allowed_agents),
        allowed_room_config=frozenset(config.allowed_room_config),
        cors_origins=frozenset(o.rstrip("/") for o in config.cors_origins),
        limiter=_RateLimiter(),
        metrics=_Metrics(),
        dispatch_cls=Dispatch,
        openapi=orjson.dumps(openapi_document(config), option=orjson.OPT_INDENT_2),
        ttl=ttl,
    )
    if dev:
        _silence_short_key_warning()

    app = web.Application(
        client_max_size=config.max_body_bytes, middlewares=[_edge_middleware], handler_args=None
    )
    app[_STATE] = state
    app.router.add_post(config.path, _handle_token, name="token")
    app.router.add_route("OPTIONS", config.path, _handle_preflight)
    app.router.add_get("/healthz", _handle_healthz, name="healthz")
    app.router.add_get("/metrics", _handle_metrics, name="metrics")
    app.router.add_get("/openapi.json", _handle_openapi, name="openapi")
    app.on_cleanup.append(_on_cleanup)
    return app


def _warn_dev_keys() -> None:
    msg = (
        "LIVEKIT_API_KEY/LIVEKIT_API_SECRET are not set; using the LiveKit dev-server "
        "keys (devkey/secret). Tokens only work with `livekit-server --dev`. Never use this "
        "outside local development."
    )
    logger.warning(msg)


def _silence_short_key_warning() -> None:
    """Dev mode only: the dev secret is 6 bytes, which PyJWT warns about on every token."""
    try:
        from jwt.warnings import InsecureKeyLengthWarning
    except ImportError:  # pragma: no cover - older PyJWT has no such warning
        return
    warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)


async def _on_cleanup(app: web.Application) -> None:
    state = app[_STATE]
    if state.owns_sessions:
        closer = getattr(state.sessions, "aclose", None)
        if closer is not None:
            await closer()


# --------------------------------------------------------------------------- middleware


def _endpoint(request: web.Request) -> str:
    route = request.match_info.route
    name = getattr(route, "name", None)
    if name:
        return str(name)
    if request.method == "OPTIONS" and request.path == request.app[_STATE].config.path:
        return "token"
    return "other"


@web.middleware
async def _edge_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[_STATE]
    t0 = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except _HTTPError as err:
        response = _json_error(err.status, err.code, err.message, err.headers)
    except web.HTTPException as exc:
        response = _from_http_exception(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # The exception's type and where it was raised; never its message, which
        # third-party code may have filled with request data.
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb else "?"
        logger.error(
            "internal error in %s %s: %s at %s",
            request.method,
            request.path[:128],
            type(exc).__name__,
            where,
            extra={"error_type": type(exc).__name__, "where": where},
        )
        response = _json_error(500, "internal", "internal error")

    origin = request.headers.get("Origin")
    if origin is not None and origin in state.cors_origins:
        headers = response.headers
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = "Retry-After"
        headers["Vary"] = "Origin"

    status = response.status
    endpoint = _endpoint(request)
    state.metrics.count(endpoint, status)
    if endpoint == "token" and logger.isEnabledFor(logging.INFO):
        info = request.get(_LOG) or {}
        latency_ms = (time.perf_counter() - t0) * 1000.0
        principal = info.get("principal")
        room = info.get("room")
        agent = info.get("agent")
        logger.info(
            "token request principal=%s room=%s agent=%s status=%d latency_ms=%.2f",
            _log_safe(principal),
            _log_safe(room),
            _log_safe(agent),
            status,
            latency_ms,
            extra={
                "principal": principal,
                "room": room,
                "agent": agent,
                "status": status,
                "latency_ms": round(latency_ms, 3),
            },
        )
    return response


def _log_safe(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return repr(text[:128]) if not text.isprintable() or " " in text else text[:128]


def _json_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    resp = web.Response(
        status=status, body=_error_body(code, message), content_type="application/json"
    )
    resp.headers["Cache-Control"] = "no-store"
    if headers:
        resp.headers.update(headers)
    return resp


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    status = exc.status
    if status < 400:  # redirects etc. are passed through untouched
        return web.Response(status=status, headers=exc.headers)
    headers: dict[str, str] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        message = f"method {exc.method} is not allowed here"
    elif status == 404:
        message = "no such endpoint"
    elif status == 413:
        message = "request body is over the size limit"
    else:
        message = exc.reason or "request refused"
    for name in ("WWW-Authenticate", "Retry-After"):
        if name in exc.headers:
            headers[name] = exc.headers[name]
    code = _AIOHTTP_CODES.get(status, "internal" if status >= 500 else "error")
    if status >= 500:
        message = "internal error"
    return _json_error(status, code, message, headers)


# --------------------------------------------------------------------------- small handlers


async def _handle_healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def _handle_metrics(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    resp = web.Response(body=request.app[_STATE].metrics.render())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def _handle_openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_STATE].openapi, content_type="application/json")


async def _handle_preflight(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    origin = request.headers.get("Origin")
    if origin is None:
        return web.Response(status=204, headers={"Allow": "OPTIONS, POST"})
    if origin not in state.cors_origins:
        raise _HTTPError(403, "origin_not_allowed", "this origin may not call the token endpoint")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "600",
        },
    )


# --------------------------------------------------------------------------- the token handler


async def _authorize(request: web.Request, state: _State) -> tuple[Principal, str]:
    """The principal and its rate-limit key, or a 401/403."""
    if state.authorize is not None:
        try:
            result = state.authorize(request)
            if inspect.isawaitable(result):
                result = await result
        except web.HTTPException as exc:
            if exc.status == 403:
                raise _HTTPError(403, "forbidden", exc.reason or "forbidden") from None
            if exc.status == 401:
                raise _HTTPError(
                    401,
                    "unauthorized",
                    exc.reason or "authentication required",
                    {"WWW-Authenticate": "Bearer"},
                ) from None
            raise
        if result is not None:
            if not isinstance(result, Principal):
                raise TypeError("authorize hook must return a Principal or None")
            return result, result.id
        if not state.keys and not state.anonymous:
            raise _HTTPError(
                401, "unauthorized", "authentication required", {"WWW-Authenticate": "Bearer"}
            )
    header = request.headers.get("Authorization")
    if header is None:
        if state.anonymous:
            return _ANONYMOUS, f"anonymous@{request.remote or '-'}"
        raise _HTTPError(
            401, "unauthorized", "a bearer key is required", {"WWW-Authenticate": "Bearer"}
        )
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise _HTTPError(
            401,
            "unauthorized",
            "use 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
    found: Principal | None = None
    for stored, principal in state.keys:  # no early exit: every key is compared
        if hmac.compare_digest(digest, stored) and found is None:
            found = principal
    if found is None:
        raise _HTTPError(
            401,
            "unauthorized",
            "invalid bearer key",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return found, found.id


_ANONYMOUS = Principal(id="anonymous")
_TOKEN_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}


def _normalize_field_names(body: dict[str, Any]) -> dict[str, Any]:
    """Accept protobuf JSON names (``roomName``) for the request fields, as protojson does."""
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in body.items():
        name = _CAMEL_FIELDS.get(key, key)
        if name not in _REQUEST_FIELDS:
            unknown.append(key)
        elif name in out:
            raise _HTTPError(400, "invalid_request", f"field {name!r} is given twice")
        else:
            out[name] = value
    if unknown:
        shown = ", ".join(key_label(k) for k in unknown[:5])
        raise _HTTPError(400, "invalid_request", f"unknown request fields: {shown}")
    return out


def _str_field(body: Mapping[str, Any], name: str, *, limit: int | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _HTTPError(400, "invalid_request", f"{name} must be a string")
    if limit is not None and len(value) > limit:
        raise _HTTPError(400, "invalid_request", f"{name} is longer than {limit} characters")
    return value or None


def _parse_client_metadata(raw: str | None, state: _State, what: str) -> dict[str, Any]:
    try:
        return parse_metadata(raw, max_bytes=state.config.metadata.max_bytes)
    except MetadataTooLarge as exc:
        raise _HTTPError(413, "metadata_too_large", f"{what}: {exc.message}") from None
    except MetadataError as exc:
        raise _HTTPError(400, "invalid_metadata", f"{what}: {exc.message}") from None


def _check_metadata_policy(client: dict[str, Any], merged: dict[str, Any], state: _State) -> None:
    """The client's keys against the allowlist; the merged metadata against the schema."""
    if state.allowed_keys is not None:
        extra = [k for k in client if k not in state.allowed_keys]
        if extra:
            shown = ", ".join(key_label(k) for k in extra[:10])
            raise _HTTPError(422, "metadata_key_not_allowed", f"metadata keys not allowed: {shown}")
    if state.schema is not None:
        try:
            state.schema.model_validate(merged)
        except ValidationError as exc:
            fields = [
                ".".join(str(p) for p in err["loc"]) or "<root>"
                for err in exc.errors(include_input=False, include_url=False)
            ]
            shown = ", ".join(key_label(f) for f in fields[:10])
            raise _HTTPError(
                422,
                "schema_violation",
                f"metadata does not match {state.schema.__name__}: {shown}",
            ) from None


def _parse_room_config(raw: Any) -> Any:
    from google.protobuf import json_format
    from livekit import api

    if not isinstance(raw, dict):
        raise _HTTPError(400, "invalid_room_config", "room_config must be a JSON object")
    try:
        return json_format.ParseDict(raw, api.RoomConfiguration())
    except Exception as exc:
        text = str(exc)
        m = re.search(r'no field named "([^"]{1,64})"', text)
        hint = ""
        if m:
            hint = f": unknown field {m.group(1)!r}"
        else:
            m = re.match(r"Failed to parse (\w{1,64}) field", text)
            if m:
                hint = f": bad value for {m.group(1)!r}"
        raise _HTTPError(
            400, "invalid_room_config", f"room_config is not a valid RoomConfiguration{hint}"
        ) from None


async def _handle_token(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    config = state.config
    log: dict[str, Any] = {}
    request[_LOG] = log

    length = request.content_length
    if length is not None and length > config.max_body_bytes:
        raise _HTTPError(
            413,
            "body_too_large",
            f"request body is over the limit of {config.max_body_bytes} bytes",
        )
    if request.content_type != "application/json":
        raise _HTTPError(
            415, "unsupported_media_type", "send the request as Content-Type: application/json"
        )

    principal, rate_key = await _authorize(request, state)
    log["principal"] = principal.id
    limit = principal.rate_limit or config.rate_limit
    if limit is not None:
        wait = state.limiter.check(rate_key, limit)
        if wait > 0.0:
            raise _HTTPError(
                429,
                "rate_limited",
                "too many token requests; retry later",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )

    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise _HTTPError(
            400,
            "invalid_json",
            f"request body is not valid JSON (line {exc.lineno}, column {exc.colno})",
        ) from None
    if not isinstance(body, dict):
        raise _HTTPError(400, "invalid_request", "request body must be a JSON object")
    unknown = [k for k in body if k not in _REQUEST_FIELDS]
    if unknown:
        body = _normalize_field_names(body)

    room = _str_field(body, "room_name", limit=_MAX_NAME_LEN)
    identity = _str_field(body, "participant_identity", limit=_MAX_NAME_LEN)
    name = _str_field(body, "participant_name", limit=_MAX_NAME_LEN)
    raw_md = _str_field(body, "participant_metadata")

    # Metadata: the client's, checked, then the principal's trusted keys on top.
    client_md = _parse_client_metadata(raw_md, state, "participant_metadata")

    raw_attrs = body.get("participant_attributes")
    try:
        attributes = validate_attributes(raw_attrs)
    except InvalidAttributes as exc:
        raise _HTTPError(400, "invalid_attributes", exc.message) from None
    if state.allowed_attr_keys is not None:
        extra_attrs = [k for k in attributes if k not in state.allowed_attr_keys]
        if extra_attrs:
            shown = ", ".join(key_label(k) for k in extra_attrs[:10])
            raise _HTTPError(
                422, "attribute_key_not_allowed", f"attribute keys not allowed: {shown}"
            )

    # room_config: agents[0] is the client's agent request; the rest needs an allowlist.
    client_agent: str | None = None
    agent_request: Any = None
    room_config = None
    raw_rc = body.get("room_config")
    if raw_rc is not None:
        room_config = _parse_room_config(raw_rc)
        for fd, _ in room_config.ListFields():
            if fd.name != "agents" and fd.name not in state.allowed_room_config:
                raise _HTTPError(
                    403,
                    "room_config_not_allowed",
                    f"room_config.{fd.name} may not be set by clients",
                )
        agents = list(room_config.agents)
        if len(agents) > 1:
            raise _HTTPError(403, "room_config_not_allowed", "at most one agent may be requested")
        if agents:
            req = agents[0]
            for fd, _ in req.ListFields():
                if (
                    fd.name in _AGENT_FIELDS
                    and f"agents.{fd.name}" not in state.allowed_room_config
                ):
                    raise _HTTPError(
                        403,
                        "room_config_not_allowed",
                        f"room_config.agents[0].{fd.name} may not be set by clients",
                    )
            if req.metadata:
                agent_md = _parse_client_metadata(
                    req.metadata, state, "room_config.agents[0].metadata"
                )
                client_md.update(agent_md)
            client_agent = req.agent_name or None
            agent_request = req
            if req.attributes:
                try:
                    validate_attributes(dict(req.attributes))
                except InvalidAttributes as exc:
                    raise _HTTPError(400, "invalid_attributes", exc.message) from None

    if principal.trusted_metadata:
        merged = {**client_md, **principal.trusted_metadata}
    else:
        merged = client_md
    _check_metadata_policy(client_md, merged, state)

    if principal.identity is not None:
        if identity is not None and identity != principal.identity:
            raise _HTTPError(
                403, "identity_mismatch", "participant_identity is fixed for this caller"
            )
        identity = principal.identity
    if identity is None:
        identity = "user-" + secrets.token_urlsafe(16)
    prefix = principal.room_prefix
    if room is None:
        room = (prefix if prefix is not None else "room-") + secrets.token_urlsafe(16)
    elif prefix is not None and not room.startswith(prefix):
        raise _HTTPError(
            403, "room_not_allowed", "room_name must start with this caller's room prefix"
        )
    log["room"] = room

    # Dispatch: a client-chosen agent only from an allowlist; otherwise the router.
    allowed_for_principal = principal.allowed_agents
    dispatch: Any = None
    agent = ""
    source = "none"
    if client_agent is not None:
        allowed = (
            allowed_for_principal if allowed_for_principal is not None else state.allowed_agents
        )
        if client_agent not in allowed:
            raise _HTTPError(403, "agent_not_allowed", "this agent may not be requested")
        agent, source = client_agent, "client"
        dispatch = _client_dispatch(agent_request, merged)
    elif state.router is not None:
        try:
            route = state.router.route(merged)
        except NoRouteMatched:
            raise _HTTPError(422, "no_route", "no routing rule matches this metadata") from None
        if getattr(route, "rejected", False):
            raise _HTTPError(403, "route_rejected", "the routing rules refuse this request")
        agent = route.agent or ""
        source = "router"
        if route.agent_name:
            if allowed_for_principal is not None and not (
                route.agent in allowed_for_principal or route.agent_name in allowed_for_principal
            ):
                raise _HTTPError(
                    403, "agent_not_allowed", "this caller may not use the routed agent"
                )
            dispatch = _dispatch_from_route(state, route)
    elif config.default_agent:
        agent, source = config.default_agent, "default"
        if allowed_for_principal is not None and agent not in allowed_for_principal:
            raise _HTTPError(403, "agent_not_allowed", "this caller may not use this agent")
        dispatch = state.dispatch_cls(agent_name=agent, metadata=merged or None)
    log["agent"] = agent or None

    # Mint (pure: validates everything), then store, then answer: the token is
    # never handed out before the session it may refer to has been written.
    t_mint = time.perf_counter()
    try:
        mint_kwargs: dict[str, Any] = {
            "name": name,
            "metadata": merged or None,
            "attributes": attributes or None,
            "dispatch": dispatch if dispatch is not None else [],
            "can_update_own_metadata": config.allow_update_own_metadata,
            **_room_config_kwargs(room_config, state),
        }
        if config.reference_mode:
            ref = state.issuer.mint_reference(identity, room, **mint_kwargs)
            token, stored = ref.token, ref.metadata
        else:
            token = state.issuer.mint(identity, room, **mint_kwargs)
            stored = merged
    except MetadataTooLarge as exc:
        raise _HTTPError(413, "metadata_too_large", exc.message) from None
    except SchemaViolation as exc:
        raise _HTTPError(422, "schema_violation", exc.message) from None
    except (MetadataError, ValueError) as exc:
        raise _HTTPError(400, "invalid_request", _safe_message(exc)) from None
    state.metrics.observe_mint(time.perf_counter() - t_mint)

    try:
        await state.sessions.set_session_metadata(room, stored)
    except MetadataTooLarge as exc:
        raise _HTTPError(413, "metadata_too_large", exc.message) from None
    except StoreError:
        raise _HTTPError(
            503, "store_unavailable", "the session store is unavailable; retry later"
        ) from None
    state.metrics.route(agent, source)
    return web.Response(
        status=201,
        body=orjson.dumps({"server_url": config.server_url, "participant_token": token}),
        headers=_TOKEN_HEADERS,
    )


def _safe_message(exc: Exception) -> str:
    if isinstance(exc, MetadataError):
        return exc.message
    # ValueErrors from our own validation name arguments and limits, never values.
    return str(exc).splitlines()[0][:200] if str(exc) else "invalid request"


def _client_dispatch(request: Any, merged: dict[str, Any]) -> Any:
    """The client's own ``RoomAgentDispatch`` with the checked, merged metadata as job metadata."""
    from livekit import api

    rad = api.RoomAgentDispatch()
    rad.CopyFrom(request)
    rad.metadata = orjson.dumps(merged).decode("utf-8") if merged else ""
    return rad


def _dispatch_from_route(state: _State, route: Route) -> Any:
    return state.dispatch_cls(
        agent_name=route.agent_name,
        metadata=route.metadata or None,
        deployment=route.deployment or None,
        attributes=route.attributes or None,
    )


def _room_config_kwargs(room_config: Any, state: _State) -> dict[str, Any]:
    """Extra mint() arguments for client room_config fields the config allows."""
    if room_config is None or not state.allowed_room_config:
        return {}
    extra = [fd.name for fd, _ in room_config.ListFields() if fd.name != "agents"]
    if not extra:
        return {}
    from livekit import api

    rc = api.RoomConfiguration()
    rc.CopyFrom(room_config)
    del rc.agents[:]
    return {"room_config": rc}


# --------------------------------------------------------------------------- OpenAPI


def openapi_document(config: ServerConfig | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 description of the token endpoint and its companions."""
    config = config or ServerConfig.model_construct()
    path = getattr(config, "path", "/token")

    def err(description: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }

    str_map = {"type": "object", "additionalProperties": {"type": "string"}}
    dispatch = {
        "type": "object",
        "description": "RoomAgentDispatch (snake_case or camelCase field names).",
        "properties": {
            "agent_name": {"type": "string"},
            "metadata": {"type": "string", "description": "A JSON object as a string."},
            "deployment": {"type": "string"},
            "attributes": str_map,
            "restart_policy": {"type": "string", "enum": ["JRP_ON_FAILURE", "JRP_NEVER"]},
        },
    }
    room_config = {
        "type": "object",
        "description": (
            "LiveKit RoomConfiguration, parsed with protobuf's JSON parser (snake_case or "
            "camelCase); unknown fields are refused with 400. Clients may set only "
            "agents[0].agent_name (from an allowlist) and agents[0].metadata unless the "
            "server configuration allows more; other fields are refused with 403."
        ),
        "properties": {
            "name": {"type": "string"},
            "empty_timeout": {"type": "integer", "minimum": 0},
            "departure_timeout": {"type": "integer", "minimum": 0},
            "max_participants": {"type": "integer", "minimum": 0},
            "metadata": {"type": "string"},
            "min_playout_delay": {"type": "integer", "minimum": 0},
            "max_playout_delay": {"type": "integer", "minimum": 0},
            "sync_streams": {"type": "boolean"},
            "tags": str_map,
            "agents": {"type": "array", "items": dispatch},
        },
    }
    request_schema = {
        "type": "object",
        "additionalProperties": False,
        "description": (
            "LiveKit's standard token request; every field is optional. Protobuf JSON "
            "names (roomName, participantMetadata, ...) are accepted as well; any other "
            "field is refused with 400."
        ),
        "properties": {
            "room_name": {"type": "string", "maxLength": _MAX_NAME_LEN},
            "participant_identity": {"type": "string", "maxLength": _MAX_NAME_LEN},
            "participant_name": {"type": "string", "maxLength": _MAX_NAME_LEN},
            "participant_metadata": {
                "type": "string",
                "description": "A JSON object as a string (checked against the metadata policy).",
            },
            "participant_attributes": str_map,
            "room_config": room_config,
        },
    }
    token_errors = {
        "400": err("Malformed JSON, fields, metadata, attributes or room_config."),
        "401": err("Missing or invalid credentials."),
        "403": err("Not allowed: agent, identity, room, room_config field, route or origin."),
        "413": err("Request body or metadata over the size limit."),
        "415": err("Content-Type is not application/json."),
        "422": err("Metadata violates the schema or key allowlist, or no route matched."),
        "429": {
            **err("Rate limit exceeded for this principal."),
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        },
        "500": err("Internal error (no details are disclosed)."),
        "503": err("The session store is unavailable."),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "livekit-plugins-metadata token endpoint",
            "version": _version(),
            "description": (
                "Mints LiveKit access tokens carrying participant metadata and the routed "
                "agent dispatch, in LiveKit's standard token-endpoint format."
            ),
        },
        "paths": {
            path: {
                "post": {
                    "operationId": "createToken",
                    "summary": "Mint a participant token (LiveKit standard token endpoint).",
                    "security": [{"bearer": []}, {}],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/TokenRequest"}
                            }
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "The token and the LiveKit URL to connect to.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/TokenResponse"}
                                }
                            },
                        },
                        **token_errors,
                    },
                },
                "options": {
                    "operationId": "tokenPreflight",
                    "summary": "CORS preflight.",
                    "responses": {
                        "204": {"description": "Allowed (or no Origin given)."},
                        "403": err("The origin is not allowed."),
                    },
                },
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness check.",
                    "responses": {
                        "200": {
                            "description": "The server is up.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status"],
                                        "properties": {"status": {"type": "string"}},
                                    }
                                }
                            },
                        }
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (text exposition format).",
                    "responses": {
                        "200": {
                            "description": "Metrics.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "TokenRequest": request_schema,
                "TokenResponse": {
                    "type": "object",
                    "required": ["server_url", "participant_token"],
                    "properties": {
                        "server_url": {"type": "string"},
                        "participant_token": {"type": "string"},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
            },
        },
    }


def _version() -> str:
    from ..version import __version__

    return __version__


# --------------------------------------------------------------------------- run


def run(
    *, config_path: str | None = None, host: str | None = None, port: int | None = None
) -> None:
    """Run the token server until interrupted (what ``lk-metadata serve`` calls).

    Args:
        config_path: A YAML/TOML/JSON config file (None: all defaults).
        host: Overrides the configured host.
        port: Overrides the configured port.

    Raises:
        ConfigError: The configuration is invalid or incomplete.
    """
    overrides = {"host": host, "port": port}
    if config_path is not None:
        config = ServerConfig.from_file(config_path, **overrides)
    else:
        config = ServerConfig.from_mapping({k: v for k, v in overrides.items() if v is not None})
    if not logging.getLogger().handlers and not logger.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)

    _, _, dev = _resolve_credentials(config)
    if dev:
        print(
            "WARNING: LIVEKIT_API_KEY / LIVEKIT_API_SECRET are not set. Using the LiveKit "
            "dev-server keys (devkey / secret):\n"
            "         tokens are only accepted by `livekit-server --dev`. Do not use this in "
            "production.",
            file=sys.stderr,
            flush=True,
        )
    app = _build_app(config, announce=False)  # the dev-key warning was printed above
    state = app[_STATE]
    display_host = f"[{config.host}]" if ":" in config.host else config.host
    base = f"http://{display_host}:{config.port}"
    auth_hint = "" if state.anonymous else ' -H "Authorization: Bearer $TOKEN_SERVER_KEY"'
    print(
        f"lk-metadata token server listening on {base}{config.path}\n"
        f"  LiveKit URL handed to clients: {config.server_url}\n"
        f"  routing: {'off' if state.router is None else (config.rules or 'bundled example rules')}"
        f"; store: {redact_url(config.store)}\n"
        "Try it:\n"
        f"  curl -s -X POST {base}{config.path}{auth_hint} -H 'Content-Type: application/json' "
        '-d \'{"participant_metadata": "{\\"department\\": \\"support\\"}"}\'',
        flush=True,
    )
    prepare_process()
    web.run_app(
        app,
        host=config.host,
        port=config.port,
        print=None,
        access_log=None,
        handle_signals=True,
    )


def prepare_process() -> None:
    """Move everything loaded at start-up out of the garbage collector's sight.

    Importing ``livekit.agents`` leaves ~150,000 long-lived objects that every
    full collection would scan again while serving; ``gc.freeze()`` (what
    :func:`run` calls just before serving) keeps them out of all future
    collections. Call it yourself when you serve :func:`create_app` by other means.
    """
    import gc

    gc.collect()
    gc.freeze()
