"""The error tree of ``livekit.plugins.metadata`` (drawn, with its rules, in ``docs/errors.md``).

Messages never carry a metadata value, a token or a secret.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
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
    "ProtectedKey",
    "ReservedKey",
    "RoutingError",
    "SchemaViolation",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "TokenError",
    "TokenVerificationError",
]


class MetadataPluginError(Exception):
    """Root of every error raised by ``livekit.plugins.metadata``; ``message`` is the reason."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MetadataError(MetadataPluginError, ValueError):
    """Raised when metadata is rejected (the umbrella for every metadata leaf)."""


class InvalidMetadataJSON(MetadataError):
    """Raised when metadata is not valid JSON, UTF-8, finite numbers or nests too deep.

    ``line`` and ``column`` (1-based) locate the first error when known.
    """

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


class MetadataNotAnObject(MetadataError):
    """Raised when metadata is valid JSON but not an object (``json_type``: what it is)."""

    def __init__(self, message: str, *, json_type: str) -> None:
        super().__init__(message)
        self.json_type = json_type


class MetadataTooLarge(MetadataError):
    """Raised when metadata (or a merged session) is ``size`` bytes, over ``limit`` (UTF-8)."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class SchemaViolation(MetadataError):
    """Raised when the pydantic schema rejects metadata (``fields``: dotted paths, no values)."""

    def __init__(self, message: str, *, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.fields = tuple(fields)


class InvalidAttributes(MetadataError):
    """Raised when LiveKit attributes are not a str->str map, use a reserved key or are too large."""


class _KeyRefused(MetadataError):
    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key  # cut to a readable length


class ReservedKey(_KeyRefused):
    """Raised when a caller sends a ``key`` in the plugin's own ``lk-metadata.`` namespace."""


class ProtectedKey(_KeyRefused):
    """Raised when an agent-side write names a ``key`` the server decided."""


class InvalidSessionReference(MetadataError):
    """Raised when a session reference names a missing, expired or foreign session."""


class StoreError(MetadataPluginError):
    """Raised when a session store operation fails."""


class StoreUnavailable(StoreError):
    """Raised when the store backend cannot be reached or does not answer in time."""


class StoreFull(StoreError):
    """The store holds its maximum number of sessions (nothing is evicted): retry later."""


class TokenError(MetadataPluginError):
    """Raised when an access token cannot be minted."""


class TokenVerificationError(TokenError):
    """Raised when an access token fails verification (signature, issuer, expiry, format)."""


class RoutingError(MetadataPluginError):
    """Raised when routing metadata to an agent fails."""


class NoRouteMatched(RoutingError):
    """Raised when no routing rule matched and the rule set has no default."""


class DispatchError(RoutingError):
    """Raised when the LiveKit server refuses to list or create an agent dispatch."""


class ConfigError(MetadataPluginError):
    """Raised when configuration (keys, secrets, rules, optional extras) is missing or invalid."""
