"""Metadata-driven sessions, tokens and agent routing for LiveKit Agents.

See the README for the quick start. The public API is exactly ``__all__``.
"""

from __future__ import annotations

from livekit.agents import Plugin

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
from .version import __version__

__all__ = [
    "ConfigError",
    "DispatchError",
    "InvalidAttributes",
    "InvalidMetadataJSON",
    "MetadataError",
    "MetadataNotAnObject",
    "MetadataPluginError",
    "MetadataTooLarge",
    "NoRouteMatched",
    "RoutingError",
    "SchemaViolation",
    "StoreError",
    "StoreUnavailable",
    "TokenError",
    "TokenVerificationError",
    "__version__",
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
