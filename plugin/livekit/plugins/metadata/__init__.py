"""Metadata-driven sessions, tokens and agent routing for LiveKit Agents.

The top level holds the three front doors (agent entrypoint, token minting, routing), the
codec and the errors worth catching; the rest comes from its subpackage. Each name loads
on first use (PEP 562), so minting tokens never imports ``livekit.agents``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__ as __version__

# For type checkers only; tests/test_exports.py checks that it says what _PUBLIC says.
if TYPE_CHECKING:
    from .agent.adapter import MetadataAdapter as MetadataAdapter, SessionHandle as SessionHandle
    from .agent.selection import AgentFactoryMap as AgentFactoryMap
    from .codec import (
        parse_metadata as parse_metadata,
        serialize_metadata as serialize_metadata,
        validate_attributes as validate_attributes,
    )
    from .errors import (
        ConfigError as ConfigError,
        DispatchError as DispatchError,
        InvalidAttributes as InvalidAttributes,
        InvalidMetadataJSON as InvalidMetadataJSON,
        MetadataError as MetadataError,
        MetadataPluginError as MetadataPluginError,
        MetadataTooLarge as MetadataTooLarge,
        NoRouteMatched as NoRouteMatched,
        ReservedKey as ReservedKey,
        RoutingError as RoutingError,
        StoreError as StoreError,
        StoreFull as StoreFull,
        StoreUnavailable as StoreUnavailable,
        TokenError as TokenError,
        TokenVerificationError as TokenVerificationError,
    )
    from .routing.route import Route as Route
    from .routing.router import MetadataRouter as MetadataRouter
    from .sessions.manager import SessionManager as SessionManager
    from .sessions.memory import MemoryStore as MemoryStore
    from .sessions.redis import RedisStore as RedisStore
    from .tokens.issuer import (
        Dispatch as Dispatch,
        TokenIssuer as TokenIssuer,
        VerifiedToken as VerifiedToken,
    )

_PUBLIC: dict[str, tuple[str, ...]] = {  # the one table: defining module -> names
    # the agent entrypoint
    ".agent.adapter": ("MetadataAdapter", "SessionHandle"),
    ".agent.selection": ("AgentFactoryMap",),
    ".sessions.manager": ("SessionManager",),
    ".sessions.memory": ("MemoryStore",),
    ".sessions.redis": ("RedisStore",),
    # token minting
    ".tokens.issuer": ("Dispatch", "TokenIssuer", "VerifiedToken"),
    # routing
    ".routing.router": ("MetadataRouter",),
    ".routing.route": ("Route",),
    # the metadata itself
    ".codec": ("parse_metadata", "serialize_metadata", "validate_attributes"),
    # the root error and the errors callers catch
    ".errors": (
        "ConfigError",
        "DispatchError",
        "InvalidAttributes",
        "InvalidMetadataJSON",
        "MetadataError",
        "MetadataPluginError",
        "MetadataTooLarge",
        "NoRouteMatched",
        "ReservedKey",
        "RoutingError",
        "StoreError",
        "StoreFull",
        "StoreUnavailable",
        "TokenError",
        "TokenVerificationError",
    ),
}

_LAZY: dict[str, str] = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = sorted(["__version__", *_LAZY])


def __getattr__(name: str) -> Any:
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
