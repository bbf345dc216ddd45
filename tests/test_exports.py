"""The public API is exactly ``__all__``, the package imports without the agents framework,
and the agent wing registers the LiveKit Plugin."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import livekit.plugins.metadata as md

pytestmark = pytest.mark.unit

INIT = Path(md.__file__)


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
