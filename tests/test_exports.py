"""The public API is exactly ``__all__``, the package imports without the agents framework,
and the agent wing registers the LiveKit Plugin."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import livekit.plugins.metadata as md

pytestmark = pytest.mark.unit

AGENT_SIDE = {"MetadataAdapter", "SessionHandle", "AgentFactoryMap"}
"""Names whose modules import ``livekit.agents`` (the agent wing)."""

INIT = Path(md.__file__)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (sys.modules and Plugin registry start empty)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_all_is_derived_from_the_one_table() -> None:
    """__all__ is sorted, unique, about 30 names, and exactly the table plus __version__."""
    table = [name for names in md._PUBLIC.values() for name in names]
    assert md.__all__ == sorted(md.__all__)
    assert len(table) == len(set(table))
    assert set(md.__all__) == {"__version__", *table}
    assert len(md.__all__) <= 30


def _type_checking_imports() -> dict[str, set[str]]:
    """What the ``if TYPE_CHECKING:`` block of ``__init__.py`` imports: module -> names."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    )
    found: dict[str, set[str]] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom), ast.dump(node)
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name} must be re-exported as itself"
            found.setdefault("." * node.level + (node.module or ""), set()).add(alias.name)
    return found


def test_the_type_checking_block_says_what_the_table_says() -> None:
    """A name added for type checkers (or to the table) alone fails here."""
    assert _type_checking_imports() == {m: set(n) for m, n in md._PUBLIC.items()}


def test_no_other_public_name_at_the_top_level() -> None:
    """Nothing public is defined or imported at the top level outside the table."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    top: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            top |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            top.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            top |= {t.id for t in targets if isinstance(t, ast.Name)}
    public = {n for n in top if not n.startswith("_") and n not in md.__pdoc__}
    assert public <= set(md.__all__), public - set(md.__all__)


def test_every_public_name_is_defined_by_this_package() -> None:
    """Each name resolves from its table module to an object of this package."""
    for module, names in md._PUBLIC.items():
        for name in names:
            value = getattr(md, name)
            assert value is getattr(importlib.import_module(module, md.__name__), name)
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
    assert len(errors) == len(md._PUBLIC[".errors"])
    assert all(issubclass(e, md.MetadataPluginError) for e in errors)


CORE = sorted(set(md.__all__) - AGENT_SIDE)
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
