"""Metadata-driven sessions, tokens and agent routing for LiveKit Agents.

See the README for the quick start. The public API is exactly ``__all__``.
"""

from __future__ import annotations

from livekit.agents import Plugin

from .agent.adapter import AdapterStats, MetadataAdapter, PublishResult, SessionHandle
from .agent.selection import AgentFactoryMap, Selection, reroute, route_of
from .codec import (
    DEFAULT_MAX_ATTRIBUTES_BYTES,
    DEFAULT_MAX_METADATA_BYTES,
    MAX_DEPTH,
    apply_attributes,
    attributes_size,
    parse_metadata,
    serialize_metadata,
    split_attribute_update,
    validate_attributes,
    validate_schema,
)
from .errors import (
    ConfigError,
    DispatchError,
    InvalidAttributes,
    InvalidMetadataJSON,
    MetadataError,
    MetadataNotAnObject,
    MetadataPluginError,
    MetadataTooLarge,
    NoRouteMatched,
    RoutingError,
    SchemaViolation,
    StoreError,
    StoreUnavailable,
    TokenError,
    TokenVerificationError,
)
from .log import logger
from .routing.dispatch import ensure_dispatch
from .routing.formatting import format_explain, format_route
from .routing.route import ConditionFailure, Route, RuleTrace
from .routing.router import MetadataRouter
from .server.app import Principal, ServerConfig, create_app
from .sessions.manager import SessionManager
from .sessions.memory import MemoryStore
from .sessions.redis import RedisStore
from .sessions.store import MergeAndGet, SessionStore
from .sessions.tool_tokens import InsecureSecretWarning, ToolTokens
from .tokens.issuer import Dispatch, ReferenceToken, TokenIssuer, VerifiedToken
from .version import __version__

__all__ = [
    "DEFAULT_MAX_ATTRIBUTES_BYTES",
    "DEFAULT_MAX_METADATA_BYTES",
    "MAX_DEPTH",
    "AdapterStats",
    "AgentFactoryMap",
    "ConditionFailure",
    "ConfigError",
    "Dispatch",
    "DispatchError",
    "InsecureSecretWarning",
    "InvalidAttributes",
    "InvalidMetadataJSON",
    "MemoryStore",
    "MergeAndGet",
    "MetadataAdapter",
    "MetadataError",
    "MetadataNotAnObject",
    "MetadataPluginError",
    "MetadataRouter",
    "MetadataTooLarge",
    "NoRouteMatched",
    "Principal",
    "PublishResult",
    "RedisStore",
    "ReferenceToken",
    "Route",
    "RoutingError",
    "RuleTrace",
    "SchemaViolation",
    "Selection",
    "ServerConfig",
    "SessionHandle",
    "SessionManager",
    "SessionStore",
    "StoreError",
    "StoreUnavailable",
    "TokenError",
    "TokenIssuer",
    "TokenVerificationError",
    "ToolTokens",
    "VerifiedToken",
    "__version__",
    "apply_attributes",
    "attributes_size",
    "create_app",
    "ensure_dispatch",
    "format_explain",
    "format_route",
    "parse_metadata",
    "reroute",
    "route_of",
    "serialize_metadata",
    "split_attribute_update",
    "validate_attributes",
    "validate_schema",
]


class MetadataPlugin(Plugin):
    """The LiveKit plugin record for ``livekit-plugins-metadata``."""

    def __init__(self) -> None:
        super().__init__(__name__, __version__, __package__ or __name__, logger)


Plugin.register_plugin(MetadataPlugin())

# Hide everything that is not public from generated docs, as LiveKit's plugins do.
_module = dir()
NOT_IN_ALL = [m for m in _module if m not in __all__]

__pdoc__ = {}

for n in NOT_IN_ALL:
    __pdoc__[n] = False
