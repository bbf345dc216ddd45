"""The YAML half of :mod:`.loader` (its rules), imported only for YAML: PyYAML is slow to load."""

from __future__ import annotations

import math
import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ._util import Refused, child_path

__all__ = ["load_yaml"]

_TAG = "tag:yaml.org,2002:"
_TIMESTAMP_RE = re.compile(
    r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
    r"(?:(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?"
    r"(?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?)?$"
)


class _Composer(yaml.BaseLoader):
    """Composes nodes (:class:`_Builder` makes the values) with the YAML 1.2 core schema,
    plus the YAML 1.1 forms we refuse (timestamps, merge)."""


for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("timestamp", _TIMESTAMP_RE.pattern, "0123456789"),
    ("merge", r"^<<$", "<"),
):
    _Composer.add_implicit_resolver(_TAG + _tag, re.compile(_pattern), list(_first))


def _at(node: Node, path: str, reason: str) -> Refused:
    return Refused(node.start_mark.line + 1, path, reason)


def _scalar(node: ScalarNode, path: str) -> Any:
    tag = node.tag.removeprefix(_TAG)
    text: str = node.value
    line = node.start_mark.line + 1
    if tag == "str":
        return text
    if tag == "null":
        if text not in ("", "~", "null", "Null", "NULL"):
            raise Refused(line, path, "!!null takes no value")
        return None
    if tag == "bool":
        if text.lower() not in ("true", "false"):
            raise Refused(line, path, "!!bool takes only true or false")
        return text.lower() == "true"
    if tag == "int":
        try:
            if text.startswith(("0o", "0x")):
                return int(text[2:], 8 if text[1] == "o" else 16)
            return int(text)
        except ValueError:
            raise Refused(line, path, "not an integer") from None
    if tag == "float":
        if text.lstrip("+-").lower() in (".inf", ".nan"):
            raise Refused(line, path, "NaN and infinities are not JSON numbers")
        try:
            number = float(text)
        except ValueError:
            raise Refused(line, path, "not a number") from None
        if not math.isfinite(number):  # e.g. 1e999
            raise Refused(line, path, "NaN and infinities are not JSON numbers")
        return number
    if tag == "timestamp":
        raise Refused(
            line, path, "a date or timestamp is not a JSON value; quote it to mean the text"
        )
    if tag == "merge":
        raise Refused(line, path, "merge keys (<<) are not YAML 1.2; repeat the fields instead")
    raise Refused(line, path, f"the tag {node.tag!r} has no JSON value; use plain values")


class _Builder:
    """Turns a composed node graph into JSON data, with a budget for alias expansion."""

    def __init__(self, max_values: int) -> None:
        self.max_values = max_values
        self.budget = max_values
        self.active: set[int] = set()

    def build(self, node: Node, path: str) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _at(
                node,
                path,
                f"the document expands to more than {self.max_values:,} values (aliases)",
            )
        if isinstance(node, ScalarNode):
            return _scalar(node, path)
        if id(node) in self.active:
            raise _at(node, path, "an alias refers to itself")
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self._sequence(node, path)
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
        finally:
            self.active.discard(id(node))
        raise _at(node, path, "unsupported YAML node")  # pragma: no cover

    def _sequence(self, node: SequenceNode, path: str) -> list[Any]:
        if node.tag != _TAG + "seq":
            raise _at(node, path, f"the tag {node.tag!r} has no JSON value")
        return [self.build(item, child_path(path, i)) for i, item in enumerate(node.value)]

    def _mapping(self, node: MappingNode, path: str) -> dict[str, Any]:
        if node.tag != _TAG + "map":
            what = "a set" if node.tag == _TAG + "set" else f"the tag {node.tag!r}"
            raise _at(node, path, f"{what} has no JSON value")
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                raise Refused(line, path, "mapping keys must be strings")
            key = _scalar(key_node, path)
            if not isinstance(key, str):
                raise Refused(line, path, "mapping keys must be strings (quote it)")
            if key in out:
                raise Refused(line, child_path(path, key), "duplicate key")
            out[key] = self.build(value_node, child_path(path, key))
        return out


def load_yaml(text: str, *, max_values: int) -> Any:
    """``text`` as JSON data, expanding to at most ``max_values`` values; else Refused."""
    try:
        node = yaml.compose(text, Loader=_Composer)
    except yaml.YAMLError as exc:  # the reader's too: a control character
        raise _syntax(exc) from None
    return None if node is None else _Builder(max_values).build(node, "")


def _syntax(exc: yaml.YAMLError) -> Refused:
    # str(exc) quotes the document, which may hold a secret: keep the problem and position.
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or type(exc).__name__
    if mark is None:
        return Refused(None, "", f"invalid YAML: {problem}")
    return Refused(mark.line + 1, "", f"invalid YAML at column {mark.column + 1}: {problem}")
