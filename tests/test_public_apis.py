"""``plugin/`` uses its dependencies' public APIs only, outside one documented list.

Two checks over the source (``ast``, nothing imported from ``plugin/``):

* every class whose base comes from another package (not this one, not ``typing``)
  is in :data:`EXTENSION_POINTS` with the reason the base is that dependency's
  documented extension point, or in :data:`KNOWN_GAPS`;
* no attribute with a single leading underscore is read or written unless this
  package defines that name itself (on a class that subclasses a dependency, a
  ``self._x`` that the dependency's class has counts as the dependency's too),
  outside :data:`KNOWN_GAPS`.

:data:`KNOWN_GAPS` is exact: an entry that is no longer needed fails the test too,
so the list shrinks as the gaps close.
"""

from __future__ import annotations

import ast
import functools
import importlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PLUGIN = Path(__file__).resolve().parents[1] / "plugin"
OWN = "livekit.plugins.metadata"

EXTENSION_POINTS: dict[tuple[str, str], str] = {
    ("agent/plugin.py", "MetadataPlugin"): "livekit.agents.Plugin: how LiveKit plugins register",
    ("_yaml.py", "_Resolver"): "PyYAML builds loaders from these mixins (yaml.Loader's own way)",
    ("_yaml.py", "_Composer"): "PyYAML builds loaders from these mixins (yaml.Loader's own way)",
    ("agent/tools.py", "CallerSessionTools"): "livekit.agents.llm.Toolset: LiveKit's documented "
    "form for a reusable set of function tools",
    ("tokens/signing.py", "_CheckedSecretHS256"): "jwt.algorithms.Algorithm: PyJWT's API "
    "reference documents it as the interface of an algorithm (PyJWS.register_algorithm)",
    ("tokens/signing.py", "_HeaderJSON"): "json.JSONEncoder: documented to be subclassed; "
    "PyJWS.encode documents its json_encoder argument",
    ("server/edge.py", "EdgeProtocol"): "asyncio.Protocol: asyncio's documented base for "
    "protocols (it wraps aiohttp's documented web.Server protocol factory)",
    ("server/run.py", "LoopFlushedHandler"): "logging.StreamHandler: logging's documented base "
    "for handlers that write to a stream",
    ("server/run.py", "CachedTimeFormatter"): "logging.Formatter: documented to be subclassed "
    "to override formatTime",
    ("server/edge.py", "_EdgeTransport"): "asyncio.Transport: asyncio's documented transport "
    "interface, implemented by delegating to the socket's transport",
}
"""(file, class) subclassing a dependency's documented extension point, and why."""

PUBLIC_UNDERSCORE = {
    "_exit": "os._exit is documented public API (leave without interpreter teardown)",
}
"""Underscored names that are their module's documented public API."""

EXEMPT_BASES = {"pydantic": "BaseModel is pydantic's documented way to declare models"}

KNOWN_GAPS: set[tuple[str, str]] = set()


@functools.cache  # parsed once per run; both tests read it, neither changes it
def _sources() -> dict[str, ast.Module]:
    root = PLUGIN / "livekit" / "plugins" / "metadata"
    return {
        str(p.relative_to(root)): ast.parse(p.read_text(encoding="utf-8"))
        for p in sorted(root.rglob("*.py"))
    }


def _own_names(trees: dict[str, ast.Module]) -> set[str]:
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[0])
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)  # a dependency's slot set on a subclass: checked below
    return names


def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name → the module it came from, for names from other packages."""
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not node.module.startswith(OWN):
                for alias in node.names:
                    found[alias.asname or alias.name] = f"{node.module}:{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if not alias.name.startswith(OWN):
                    found[(alias.asname or alias.name).split(".")[0]] = alias.name
    return found


def _resolve(spec: str, dotted: str) -> object | None:
    """The dependency object ``dotted`` names (``web.RequestHandler`` via ``aiohttp:web``)."""
    module, _, attr = spec.partition(":")
    parts = ([attr] if attr else []) + dotted.split(".")[1:]
    try:
        obj: object = importlib.import_module(module)
        for part in parts:
            try:
                obj = getattr(obj, part)
            except AttributeError:  # a submodule not imported yet
                obj = importlib.import_module(f"{getattr(obj, '__name__', '')}.{part}")
    except (ImportError, AttributeError):
        return None
    return obj


def findings() -> set[tuple[str, str]]:
    trees = _sources()
    own = _own_names(trees)
    found: set[tuple[str, str]] = set()
    for rel, tree in trees.items():
        imported = _imports(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                attr = node.attr
                if (
                    attr.startswith("_")
                    and not attr.startswith("__")
                    and attr not in own
                    and attr not in PUBLIC_UNDERSCORE
                ):
                    found.add((rel, "." + attr))
            if not isinstance(node, ast.ClassDef):
                continue
            foreign = []
            for base in node.bases:
                text = ast.unparse(base)
                head = text.split(".")[0].split("[")[0]
                spec = imported.get(head)
                if spec is None or spec.startswith("typing"):
                    continue
                if spec.split(".")[0].split(":")[0] in EXEMPT_BASES:
                    continue
                foreign.append((text, spec))
            if not foreign:
                continue
            if (rel, node.name) not in EXTENSION_POINTS:
                found.add((rel, f"class {node.name}({', '.join(t for t, _ in foreign)})"))
            # self._x on a subclass of a dependency: the dependency's private if it has it
            for sub in ast.walk(node):
                if (
                    isinstance(sub, ast.Attribute)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id == "self"
                    and sub.attr.startswith("_")
                    and not sub.attr.startswith("__")
                ):
                    for text, spec in foreign:
                        base_obj = _resolve(spec, text)
                        if base_obj is not None and hasattr(base_obj, sub.attr):
                            found.add((rel, "." + sub.attr))
    return found


def test_plugin_uses_public_apis_outside_the_documented_list() -> None:
    found = findings()
    assert sorted(found - KNOWN_GAPS) == []
    assert sorted(KNOWN_GAPS - found) == []  # a closed gap leaves the list


def test_the_check_catches_a_private_read_and_a_subclass(tmp_path: Path) -> None:
    tree = ast.parse(
        "from aiohttp import web\n"
        "class H(web.RequestHandler):\n"
        "    def f(self):\n"
        "        return self._messages\n"
        "def g(req):\n"
        "    return req._payload_writer\n"
    )
    imported = _imports(tree)
    assert imported["web"] == "aiohttp:web"
    base = _resolve(imported["web"], "web.RequestHandler")
    assert base is not None
    assert hasattr(base, "_messages")
    assert "_payload_writer" not in _own_names(_sources())
