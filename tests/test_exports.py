"""The public API is exactly ``__all__``: any change to it shows up in review."""

from __future__ import annotations

import pytest
from livekit.agents import Plugin

import livekit.plugins.metadata as md

pytestmark = pytest.mark.unit

EXPECTED = {
    "DEFAULT_MAX_ATTRIBUTES_BYTES", "DEFAULT_MAX_METADATA_BYTES", "MAX_DEPTH", "AdapterStats",
    "AgentFactoryMap", "ConditionFailure", "ConfigError", "Dispatch", "DispatchError",
    "InsecureSecretWarning", "InvalidAttributes", "InvalidMetadataJSON", "MemoryStore", "MergeAndGet",
    "MetadataAdapter", "MetadataError", "MetadataNotAnObject", "MetadataPluginError",
    "MetadataRouter", "MetadataTooLarge", "NoRouteMatched", "Principal", "PublishResult",
    "RedisStore", "ReferenceToken", "Route", "RoutingError", "RuleTrace", "SchemaViolation",
    "Selection", "ServerConfig", "SessionHandle", "SessionManager", "SessionStore", "StoreError",
    "StoreUnavailable", "TokenError", "TokenIssuer", "TokenVerificationError", "ToolTokens",
    "VerifiedToken", "__version__", "apply_attributes", "attributes_size", "create_app",
    "ensure_dispatch", "format_explain", "format_route", "parse_metadata", "reroute", "route_of",
    "serialize_metadata", "split_attribute_update", "validate_attributes", "validate_schema",
}  # fmt: skip


def test_all_is_exactly_the_public_api() -> None:
    """__all__ lists exactly the expected names, sorted, and each one resolves."""
    assert set(md.__all__) == EXPECTED
    for name in md.__all__:
        assert getattr(md, name) is not None


def test_every_error_derives_from_the_one_root() -> None:
    """Every exported error class is a MetadataPluginError."""
    errors = [
        getattr(md, n)
        for n in md.__all__
        if isinstance(getattr(md, n), type)
        and issubclass(getattr(md, n), Exception)
        and not issubclass(getattr(md, n), Warning)
    ]
    assert len(errors) == 15
    assert all(issubclass(e, md.MetadataPluginError) for e in errors)


def test_the_plugin_is_registered_on_import() -> None:
    """Importing the package registers exactly one LiveKit Plugin for it."""
    mine = [p for p in Plugin.registered_plugins if p.package == "livekit.plugins.metadata"]
    assert len(mine) == 1
    assert mine[0].version == md.__version__
