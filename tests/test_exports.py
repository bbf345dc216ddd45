"""The public API is exactly ``__all__``, the package imports without the agents framework,
and the agent wing registers the LiveKit Plugin."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import livekit.plugins.metadata as md

pytestmark = pytest.mark.unit

EXPECTED = {
    "DEFAULT_MAX_ATTRIBUTES_BYTES", "DEFAULT_MAX_METADATA_BYTES", "MAX_DEPTH", "AdapterStats",
    "AgentFactoryMap", "ConditionFailure", "ConfigError", "Dispatch", "DispatchError",
    "InsecureSecretWarning", "InvalidAttributes", "InvalidMetadataJSON", "InvalidSessionReference", "MemoryStore", "MergeAndGet",
    "MetadataAdapter", "MetadataError", "MetadataNotAnObject", "MetadataPluginError",
    "MetadataRouter", "MetadataTooLarge", "NoRouteMatched", "Principal", "PublishResult",
    "RedisStore", "ReservedKey", "Route", "RouteInput", "RoutingError", "RuleTrace", "SchemaViolation",
    "Selection", "ServerConfig", "SessionHandle", "SessionManager", "SessionStore", "StoreError",
    "StoreFull", "StoreUnavailable", "TokenError", "TokenIssuer", "TokenVerificationError", "ToolTokens",
    "VerifiedToken", "__version__", "SessionToken", "OutboundCall", "outbound_call",
    "normalize_number", "Limits", "MemoryLimits", "RedisLimits", "apply_attributes", "attributes_size", "create_app",
    "ensure_dispatch", "format_explain", "format_route", "parse_metadata", "reroute", "route_of",
    "serialize_metadata", "split_attribute_update", "validate_attributes", "validate_schema",
}  # fmt: skip

AGENT_SIDE = {
    "AdapterStats", "MetadataAdapter", "PublishResult", "RouteInput", "SessionHandle",
    "AgentFactoryMap", "Selection", "reroute", "route_of",
}  # fmt: skip
"""Names whose modules import ``livekit.agents`` (the agent wing)."""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (sys.modules and Plugin registry start empty)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


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


CORE = sorted(EXPECTED - AGENT_SIDE)
IMPORTS = {
    # what is imported -> the LiveKit modules it must not load
    "the bare package": ("import livekit.plugins.metadata", ("livekit.a", "livekit.rtc")),
    "the core names and the CLI": (
        "import livekit.plugins.metadata as md, livekit.plugins.metadata.cli\n"
        f"for name in {CORE!r}: getattr(md, name)",
        ("livekit.agents", "livekit.rtc"),
    ),
}


@pytest.mark.parametrize("case", sorted(IMPORTS))
def test_imports_without_the_agents_framework(case: str) -> None:
    """The package loads no SDK; the core and the CLI never load livekit.agents or rtc."""
    code, forbidden = IMPORTS[case]
    result = _python(
        f"import sys\n{code}\nprint(sorted(m for m in sys.modules if m.startswith({forbidden!r})))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_importing_the_adapter_registers_the_plugin_once() -> None:
    """In a fresh worker-like process, the agent wing registers exactly one Plugin record."""
    result = _python(
        "from livekit.agents import Plugin\n"
        "before = [p.package for p in Plugin.registered_plugins]\n"
        "from livekit.plugins.metadata import MetadataAdapter\n"
        "from livekit.plugins.metadata.agent.plugin import register\n"
        "again = register()\n"
        "mine = [p for p in Plugin.registered_plugins if p.package == 'livekit.plugins.metadata']\n"
        "import livekit.plugins.metadata as md\n"
        "print(before.count('livekit.plugins.metadata'), len(mine), again,"
        " mine[0].version == md.__version__, mine[0].title)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "1", "False", "True", "livekit.plugins.metadata"]


def test_registration_off_the_main_thread_does_not_raise() -> None:
    """LiveKit refuses registrations off the main thread: the record waits, the job goes on."""
    result = _python(
        "import threading\n"
        "from livekit.agents import Plugin\n"
        "from livekit.plugins.metadata.agent import plugin\n"
        "Plugin.registered_plugins.clear()\n"
        "out = []\n"
        "t = threading.Thread(target=lambda: out.append(plugin.register()))\n"
        "t.start(); t.join()\n"
        "print(out, len(Plugin.registered_plugins), plugin.register(), len(Plugin.registered_plugins))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[False] 0 True 1"
