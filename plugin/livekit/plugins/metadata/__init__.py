"""Metadata-driven sessions, tokens and agent routing for LiveKit Agents.

See the README for the quick start. The public API is exactly ``__all__``.

Importing the package is instant: each public name is loaded from its
submodule on first use (PEP 562), so a web backend that only mints tokens, and
the ``lk-metadata`` command, never import ``livekit.agents``. The agent-side
names (the adapter and the entrypoint helpers) pull it in, and importing them
registers this package's LiveKit ``Plugin`` (see ``agent/plugin.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .agent.adapter import AdapterStats, MetadataAdapter, PublishResult, SessionHandle
    from .agent.selection import AgentFactoryMap, Selection, reroute, route_of
    from .agent.views import RouteInput
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
        InvalidSessionReference,
        MetadataError,
        MetadataNotAnObject,
        MetadataPluginError,
        MetadataTooLarge,
        NoRouteMatched,
        ReservedKey,
        RoutingError,
        SchemaViolation,
        StoreError,
        StoreFull,
        StoreUnavailable,
        TokenError,
        TokenVerificationError,
    )
    from .routing.dispatch import ensure_dispatch
    from .routing.formatting import format_explain, format_route
    from .routing.outbound import OutboundCall, outbound_call
    from .routing.phone import normalize_number
    from .routing.route import ConditionFailure, Route, RuleTrace
    from .routing.router import MetadataRouter
    from .server.app import create_app
    from .server.config import Principal, ServerConfig
    from .server.limits import Limits, MemoryLimits, RedisLimits
    from .sessions.manager import SessionManager
    from .sessions.memory import MemoryStore
    from .sessions.redis import RedisStore
    from .sessions.store import MergeAndGet, SessionStore
    from .sessions.tool_tokens import InsecureSecretWarning, ToolTokens
    from .tokens.issuer import Dispatch, SessionToken, TokenIssuer, VerifiedToken

_SOURCES: dict[str, tuple[str, ...]] = {
    ".agent.adapter": ("AdapterStats", "MetadataAdapter", "PublishResult", "SessionHandle"),
    ".agent.views": ("RouteInput",),
    ".codec": (
        "DEFAULT_MAX_ATTRIBUTES_BYTES",
        "DEFAULT_MAX_METADATA_BYTES",
        "MAX_DEPTH",
        "apply_attributes",
        "attributes_size",
        "parse_metadata",
        "serialize_metadata",
        "split_attribute_update",
        "validate_attributes",
        "validate_schema",
    ),
    ".errors": (
        "ConfigError",
        "DispatchError",
        "InvalidAttributes",
        "InvalidMetadataJSON",
        "InvalidSessionReference",
        "MetadataError",
        "MetadataNotAnObject",
        "MetadataPluginError",
        "MetadataTooLarge",
        "NoRouteMatched",
        "ReservedKey",
        "RoutingError",
        "SchemaViolation",
        "StoreError",
        "StoreFull",
        "StoreUnavailable",
        "TokenError",
        "TokenVerificationError",
    ),
    ".routing.dispatch": ("ensure_dispatch",),
    ".agent.selection": ("AgentFactoryMap", "Selection", "reroute", "route_of"),
    ".routing.formatting": ("format_explain", "format_route"),
    ".routing.route": ("ConditionFailure", "Route", "RuleTrace"),
    ".routing.outbound": ("OutboundCall", "outbound_call"),
    ".routing.phone": ("normalize_number",),
    ".routing.router": ("MetadataRouter",),
    ".server.app": ("create_app",),
    ".server.config": ("Principal", "ServerConfig"),
    ".server.limits": ("Limits", "MemoryLimits", "RedisLimits"),
    ".sessions.manager": ("SessionManager",),
    ".sessions.memory": ("MemoryStore",),
    ".sessions.redis": ("RedisStore",),
    ".sessions.store": ("MergeAndGet", "SessionStore"),
    ".sessions.tool_tokens": ("InsecureSecretWarning", "ToolTokens"),
    ".tokens.issuer": (
        "Dispatch",
        "SessionToken",
        "TokenIssuer",
        "VerifiedToken",
    ),
}
"""Where each public name lives; the single source of ``__getattr__``."""

_LAZY: dict[str, str] = {name: module for module, names in _SOURCES.items() for name in names}

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
    "InvalidSessionReference",
    "Limits",
    "MemoryLimits",
    "MemoryStore",
    "MergeAndGet",
    "MetadataAdapter",
    "MetadataError",
    "MetadataNotAnObject",
    "MetadataPluginError",
    "MetadataRouter",
    "MetadataTooLarge",
    "NoRouteMatched",
    "OutboundCall",
    "Principal",
    "PublishResult",
    "RedisLimits",
    "RedisStore",
    "ReservedKey",
    "Route",
    "RouteInput",
    "RoutingError",
    "RuleTrace",
    "SchemaViolation",
    "Selection",
    "ServerConfig",
    "SessionHandle",
    "SessionManager",
    "SessionStore",
    "SessionToken",
    "StoreError",
    "StoreFull",
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
    "normalize_number",
    "outbound_call",
    "parse_metadata",
    "reroute",
    "route_of",
    "serialize_metadata",
    "split_attribute_update",
    "validate_attributes",
    "validate_schema",
]


def __getattr__(name: str) -> Any:
    """Load a public name from its submodule on first use, then keep it here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# Hide everything that is not public from generated docs, as LiveKit's plugins do.
__pdoc__ = dict.fromkeys(("annotations", "importlib", "TYPE_CHECKING", "Any"), False)
