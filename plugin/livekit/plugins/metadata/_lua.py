"""Lua sources shipped as package data (``*.lua`` next to the module that runs them)."""

from __future__ import annotations

from importlib import resources

__all__ = ["lua_source"]


def lua_source(*paths: str) -> str:
    """The script made of the files ``paths`` (relative to this package), in order.

    A script is one or more library files of ``local function`` definitions
    followed by a body file that calls them; files are joined whole, never spliced.
    """
    root = resources.files(__package__)
    return "\n".join(root.joinpath(path).read_text(encoding="utf-8") for path in paths)
