"""The agent wing's shape (issue 23): routing never imports it, its modules stay small,
the handle's reads are plain methods, and the owner-record key is said once."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from livekit.plugins.metadata import codec
from livekit.plugins.metadata.agent.adapter import MetadataAdapter
from livekit.plugins.metadata.agent.handle import SessionHandle
from livekit.plugins.metadata.agent.tools import CallerSession
from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.sessions.manager import SessionManager

pytestmark = pytest.mark.unit

PACKAGE = Path(codec.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative ones resolved against the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ["livekit", "plugins", "metadata", *path.parent.relative_to(PACKAGE).parts]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            names.add(".".join([*base, *(node.module.split(".") if node.module else [])]))
    return names


@pytest.mark.parametrize("path", sorted((PACKAGE / "routing").glob("*.py")), ids=lambda p: p.name)
def test_routing_never_imports_the_agent_wing(path: Path) -> None:
    agent = [n for n in _imports(path) if n.startswith("livekit.plugins.metadata.agent")]
    assert agent == []


def test_views_do_not_pull_the_token_issuer() -> None:
    imported = _imports(PACKAGE / "agent" / "views.py")
    assert not any(n.startswith("livekit.plugins.metadata.tokens") for n in imported)


@pytest.mark.parametrize("path", sorted((PACKAGE / "agent").glob("*.py")), ids=lambda p: p.name)
def test_agent_modules_are_small_with_short_docstrings(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 600
    doc = ast.get_docstring(ast.parse(text), clean=False) or ""
    assert len(doc.splitlines()) <= 15


def test_the_router_has_no_agent_side_methods() -> None:
    for name in ("select", "request_handler", "route_job_request"):
        assert not hasattr(MetadataRouter, name)


@pytest.mark.parametrize(
    "method",
    [
        SessionHandle.participant_metadata,
        SessionHandle.participant_attributes,
        SessionHandle.participant_route_input,
        SessionHandle.route_input,
        CallerSession.metadata,
        CallerSession.attributes,
        CallerSession.route_input,
    ],
)
def test_reads_that_await_nothing_are_plain_methods(method: object) -> None:
    assert not inspect.iscoroutinefunction(method)


def test_the_attribute_limit_has_the_issuers_name() -> None:
    adapter = MetadataAdapter(SessionManager(), max_attributes_bytes=4_000)
    assert adapter.options.max_attributes_bytes == 4_000
    with pytest.raises(ValueError, match="max_attributes_bytes"):
        MetadataAdapter(SessionManager(), max_attributes_bytes=1)
