"""The error tree of ``livekit.plugins.metadata`` (drawn in ``docs/errors.md``).

Every error raised on purpose derives from :class:`MetadataPluginError`. Messages say what
was wrong and what to do, never a metadata value, a token or a secret. Bad arguments raise
the builtin ``TypeError``/``ValueError``; :class:`MetadataError` is also a ``ValueError``.
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
    """Root of every error raised by ``livekit.plugins.metadata``.

    Example::

        try:
            md = parse_metadata(ctx.job.metadata)
        except MetadataPluginError as exc:
            logger.warning("bad job metadata: %s", exc)
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        """The human-readable reason; never contains a metadata value or a secret."""

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class MetadataError(MetadataPluginError, ValueError):
    """Raised when metadata is rejected (the umbrella for every metadata leaf)."""


class InvalidMetadataJSON(MetadataError):
    """Raised when metadata is not valid JSON, UTF-8, finite numbers or nests too deep."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        """1-based line of the first error, when known."""
        self.column = column
        """1-based column of the first error, when known."""


class MetadataNotAnObject(MetadataError):
    """Raised when metadata is valid JSON but not a JSON object."""

    def __init__(self, message: str, *, json_type: str) -> None:
        super().__init__(message)
        self.json_type = json_type
        """The JSON type found instead: ``array``, ``string``, ``number``, ``boolean`` or ``null``."""


class MetadataTooLarge(MetadataError):
    """Raised when metadata (or a session after a merge) exceeds its byte limit."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        """The size in UTF-8 bytes that was rejected."""
        self.limit = limit
        """The configured limit in bytes."""


class SchemaViolation(MetadataError):
    """Raised when metadata does not satisfy the pydantic schema it was checked against."""

    def __init__(self, message: str, *, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.fields = tuple(fields)
        """Dotted paths of the offending fields (never their values)."""


class InvalidAttributes(MetadataError):
    """Raised when LiveKit attributes are not a str->str map, use a reserved key or are too large."""


class _KeyRefused(MetadataError):
    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key
        """The offending key (a key, never a value; cut to a readable length)."""


class ReservedKey(_KeyRefused):
    """Raised when a caller sends a key in the plugin's ``lk-metadata.`` namespace, which
    only the plugin writes (the token endpoint answers 403)."""


class ProtectedKey(_KeyRefused):
    """Raised when an agent-side write names a key the server decided (private, trusted
    or ``protected_keys``): only the token endpoint sets those."""


class InvalidSessionReference(MetadataError):
    """Raised when a token-session reference names a missing, expired or foreign session
    (whose owner record names another participant or room)."""


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
