"""Building the token endpoint's state from a :class:`ServerConfig`, once, for every adapter
(aiohttp, ASGI): the compiled policy, router, sessions, issuer, limits and metrics."""

from __future__ import annotations

import importlib
import secrets
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from livekit import api
from pydantic import BaseModel

from ..errors import ConfigError
from ..log import logger
from ..routing.router import MetadataRouter
from ..sessions.manager import SessionManager
from ..tokens.issuer import DEFAULT_TTL, TokenIssuer
from ..tokens.keys import ApiKeys, key_warning, short_secret_warning
from .config import ServerConfig, open_room_warnings
from .limits import Limits, MemoryLimits, RedisLimits
from .metrics import Metrics
from .openapi import openapi_document
from .state import AppState, Policy

__all__ = ["build_state"]

_DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")
_OWNER_RECORD_ROOM = 1024  # a session holds the metadata plus amint's owner record
_ROOM_CONFIG_FIELDS = frozenset(
    f.name for f in api.RoomConfiguration.DESCRIPTOR.fields if f.name != "agents"
)
_AGENT_FIELDS = frozenset({"deployment", "attributes", "restart_policy"})


def build_state(config: ServerConfig | None = None, *, warn_dev_keys: bool = True) -> AppState:
    """Everything a token request reads, built once from ``config`` (None: all defaults).
    ConfigError: no credentials off loopback, no way to authenticate callers, or an
    invalid rules file, schema or store URL."""
    config = config or ServerConfig()
    config.credentials()  # a missing key or secret is the first thing to say
    anonymous = config.anonymous_allowed()
    policy = _build_policy(config)
    for warning in open_room_warnings(config):
        logger.warning(warning)
    router = _build_router(config)
    sessions, owns = _build_sessions(config)
    issuer = _build_issuer(config, sessions, warn_dev_keys)
    limits, owns_limits = _build_limits(config, sessions)
    state = AppState(
        config=config,
        issuer=issuer,
        router=router,
        sessions=sessions,
        owns_sessions=owns,
        limits=limits,
        owns_limits=owns_limits,
        authorize=config.authorize,
        keys=[(k.digest(), k.principal()) for k in config.auth.keys],
        anonymous=anonymous,
        policy=policy,
        metrics=Metrics(),
        openapi=orjson.dumps(openapi_document(config.path), option=orjson.OPT_INDENT_2),
        operator_digest=config.metrics_digest(),
    )
    state.metrics.limits_corrupt = lambda: int(getattr(limits, "corrupt_values", 0))
    return state


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
        return config.router
    if config.rules == "none":
        return None
    return MetadataRouter.from_file(
        Path(config.rules) if config.rules else _DEFAULT_RULES, max_bytes=config.max_rules_bytes
    )


def _build_sessions(config: ServerConfig) -> tuple[SessionManager, bool]:
    if config.sessions is not None:
        return config.sessions, False
    store = None
    if config.store != "memory":
        from ..sessions.redis import RedisStore
        from ..sessions.redis_url import SCHEMES, SCHEMES_TEXT

        if config.store.partition("://")[0].lower() not in SCHEMES or "://" not in config.store:
            raise ConfigError(f"store must be 'memory' or a {SCHEMES_TEXT} URL")

        store = RedisStore.from_url(config.store)
    # The token server never signs tool tokens; a throwaway key avoids a
    # misleading "random per-process secret" warning.
    manager = SessionManager(
        store,
        session_ttl=config.token_session_ttl(),
        max_session_bytes=config.metadata.max_bytes + _OWNER_RECORD_ROOM,
        secret_key=secrets.token_bytes(32),
    )
    return manager, True


def _build_policy(config: ServerConfig) -> Policy:
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
    md = config.metadata
    return Policy(
        schema=schema,
        allowed_keys=None if md.allowed_keys is None else frozenset(md.allowed_keys),
        allowed_attr_keys=None
        if md.allowed_attribute_keys is None
        else frozenset(md.allowed_attribute_keys),
        allowed_agents=frozenset(config.allowed_agents),
        allowed_room_config=frozenset(config.allowed_room_config),
        cors_origins=frozenset(o.rstrip("/") for o in config.cors_origins),
        private_keys=frozenset(config.private_keys),
        service_attr_keys=frozenset(md.allowed_service_attribute_keys),
    )


def _build_limits(config: ServerConfig, sessions: SessionManager) -> tuple[Limits, bool]:
    if config.limits is not None:
        return config.limits, False
    try:
        from ..sessions.redis import RedisStore
    except ImportError:  # the redis extra is not installed: the store cannot be Redis
        return MemoryLimits(), True
    if isinstance(sessions.store, RedisStore):
        return RedisLimits.from_store(sessions.store), True
    return MemoryLimits(), True


def _build_issuer(
    config: ServerConfig, sessions: SessionManager, warn_dev_keys: bool
) -> TokenIssuer:
    key, secret, dev = config.credentials()
    note = key_warning(ApiKeys(key, secret, dev))
    if note is not None and (warn_dev_keys or not dev):
        logger.warning(note)  # once, cleanly, instead of PyJWT's warning with a file path
    if short_secret_warning(secret) is not None:  # said above, without PyJWT's file path
        from jwt.warnings import InsecureKeyLengthWarning

        warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)
    return TokenIssuer(
        key,
        secret,
        ttl=DEFAULT_TTL if config.token_ttl is None else timedelta(seconds=config.token_ttl),
        max_metadata_bytes=config.metadata.max_bytes,
        sessions=sessions,
        session_grace=config.session_grace,
    )
