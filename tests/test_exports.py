"""The public API is exactly ``__all__``. In fresh interpreters (test_processes.py): the
package imports without the agents framework, and the agent wing registers the Plugin."""

from __future__ import annotations

import inspect

import pytest

import livekit.plugins.metadata as md

pytestmark = pytest.mark.unit

EXPECTED = {
    "DEFAULT_MAX_ATTRIBUTES_BYTES", "DEFAULT_MAX_METADATA_BYTES", "MAX_DEPTH", "AdapterStats",
    "AgentFactoryMap", "ConditionFailure", "ConfigError", "Dispatch", "DispatchError",
    "InsecureSecretWarning", "InvalidAttributes", "InvalidMetadataJSON", "InvalidSessionReference", "MemoryStore", "MergeAndGet",
    "MetadataAdapter", "MetadataError", "MetadataNotAnObject", "MetadataPluginError",
    "MetadataRouter", "MetadataTooLarge", "NoRouteMatched", "Principal", "PublishResult",
    "RedisStore", "ReferenceToken", "ReservedKey", "Route", "RouteInput", "RoutingError", "RuleTrace", "SchemaViolation",
    "Selection", "ServerConfig", "SessionHandle", "SessionManager", "SessionStore", "StoreError",
    "StoreFull", "StoreUnavailable", "TokenError", "TokenIssuer", "TokenVerificationError", "ToolTokens",
    "VerifiedToken", "__version__", "SessionToken", "OutboundCall", "outbound_call",
    "normalize_number", "Limits", "MemoryLimits", "RedisLimits", "apply_attributes", "attributes_size", "create_app",
    "ensure_dispatch", "format_explain", "format_route", "parse_metadata", "reroute", "route_of",
    "serialize_metadata", "split_attribute_update", "validate_attributes", "validate_schema",
}  # fmt: skip


def test_all_is_exactly_the_public_api() -> None:
    """__all__ is sorted, has no duplicates and lists exactly the expected names."""
    assert md.__all__ == sorted(md.__all__, key=lambda n: (not n.isupper(), n))
    assert len(md.__all__) == len(set(md.__all__))
    assert set(md.__all__) == EXPECTED


def test_every_public_name_is_defined_by_this_package() -> None:
    """Each name resolves to an object of this package (not a stand-in or a re-export)."""
    for name in md.__all__:
        value = getattr(md, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.startswith("livekit.plugins.metadata."), name
            assert value.__name__ == name
    assert isinstance(md.__version__, str)
    assert md.__version__.count(".") >= 2


def test_an_unknown_name_is_an_attribute_error() -> None:
    """The lazy loader raises AttributeError for names it does not export."""
    with pytest.raises(AttributeError, match="no attribute 'NotAName'"):
        _ = md.NotAName  # type: ignore[attr-defined]
    assert not hasattr(md, "logger_")


def test_every_error_derives_from_the_one_root() -> None:
    """Every exported error class is a MetadataPluginError."""
    errors = [
        getattr(md, n)
        for n in md.__all__
        if isinstance(getattr(md, n), type)
        and issubclass(getattr(md, n), Exception)
        and not issubclass(getattr(md, n), Warning)
    ]
    assert len(errors) == 18
    assert all(issubclass(e, md.MetadataPluginError) for e in errors)
