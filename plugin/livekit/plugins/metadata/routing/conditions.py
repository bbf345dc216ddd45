"""Rule conditions (semantics: ``docs/rules.md``), compiled once into predicates: ``pred``
(the reference ``explain()`` runs), ``check`` (``pred(lookup(mapping))`` for the hot path)
and, for ``eq``/``in``/``phone``/``phone_prefix``, the keys the rule index files it under."""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Literal, NamedTuple

from ..codec import json_type_name
from .phone import normalize_number, rule_number, rule_prefix

__all__ = [
    "MISSING",
    "OPERATORS",
    "Cond",
    "IndexKind",
    "Problem",
    "compile_when",
    "index_key",
    "lookup",
    "split_path",
]

MISSING: Any = object()  # what a lookup finds for an absent field

NO_KEY: Any = object()  # index key of an unhashable / non-scalar value: in no bucket
_NULL_KEY = ("\x00null",)
_SCALARS = (str, int, float, bool, type(None))

IndexKind = Literal["eq", "phone", "phone_prefix"]
Source = Literal["metadata", "attributes"]
Pred = Callable[[Any], bool]
Index = tuple[IndexKind, frozenset[Any]]
Compiled = tuple[Pred, str, str, Index | None]  # predicate, symbol, expected JSON, index


class Problem(Exception):
    """A rule-level config problem: the field (``where``) and what is wrong."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


class Cond(NamedTuple):
    """One compiled condition of a rule."""

    source: Source
    path: str  # dotted metadata path, or the attribute name verbatim
    parts: tuple[str, ...]  # the path split for lookups (attributes: one part)
    op: str
    expected: str
    pred: Pred
    check: Pred  # pred(lookup(mapping)), one call
    indexed: Index | None  # (kind, keys) the rule can be filed by


def index_key(value: Any) -> Any:
    """A hashable key with JSON equality semantics (bool never equals a number)."""
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return ("\x00bool", value)
    if isinstance(value, (int, float)):
        return ("\x00num", value)
    if isinstance(value, str):
        return str(value)
    return _NULL_KEY if value is None else NO_KEY


def _render(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def lookup(mapping: Any, parts: tuple[str, ...]) -> Any:
    """The value at ``parts`` in nested mappings, or :data:`MISSING`."""
    value = mapping
    for seg in parts:
        if type(value) is not dict and not isinstance(value, Mapping):
            return MISSING
        value = value.get(seg, MISSING)
    return value


def split_path(path: str) -> tuple[str, ...]:
    """A dotted metadata path split into keys (``ValueError`` if a key is empty)."""
    parts = tuple(path.split("."))
    if not path or any(not p for p in parts):
        raise ValueError(f"invalid field path {path!r}: use dot-separated, non-empty key names")
    return parts


def _check_scalar(where: str, arg: Any, what: str) -> None:
    if not isinstance(arg, _SCALARS):
        raise Problem(where, what + f", got {json_type_name(arg)}")
    if isinstance(arg, float) and not math.isfinite(arg):
        raise Problem(where, "numbers must be finite")


def _string_list(where: str, arg: Any, what: str) -> list[Any]:
    items = arg if isinstance(arg, list) else [arg]
    if not items:
        raise Problem(where, f"expected {what} or a non-empty list of them")
    return items


def _eq(where: str, op: str, arg: Any, region: str | None) -> Compiled:
    hint = "; for a list of alternatives write {in: [...]}" if isinstance(arg, list) else ""
    _check_scalar(where, arg, "expected a string, number, boolean or null" + hint)
    key = index_key(arg)
    return (lambda v: bool(index_key(v) == key)), "==", _render(arg), ("eq", frozenset({key}))


def _in(where: str, op: str, arg: Any, region: str | None) -> Compiled:
    if not isinstance(arg, list) or not arg:
        raise Problem(where, "expected a non-empty list of strings, numbers, booleans or nulls")
    for item in arg:
        _check_scalar(where, item, "list items must be scalars")
    keys = frozenset(index_key(item) for item in arg)
    return (lambda v: index_key(v) in keys), "in", _render(arg), ("eq", keys)


def _phone(where: str, op: str, arg: Any, region: str | None) -> Compiled:
    """``phone`` and ``phone_prefix``: the rule's numbers (or prefixes) in E.164, read once."""
    exact = op == "phone"
    what = "a phone number" if exact else "a phone prefix"
    try:
        keys = frozenset(
            rule_number(n, region) if exact else rule_prefix(n)
            for n in _string_list(where, arg, what)
        )
    except ValueError as exc:
        raise Problem(where, str(exc)) from None
    ordered = tuple(sorted(keys))

    def pred(v: Any) -> bool:
        number = normalize_number(v, region) if type(v) is str else None
        return number in keys if exact else number is not None and number.startswith(ordered)

    return pred, op, _render(list(ordered)), ("phone" if exact else "phone_prefix", keys)


def _exists(where: str, op: str, arg: Any, region: str | None) -> Compiled:
    if not isinstance(arg, bool):
        raise Problem(where, "expected true or false")
    return (lambda v: (v is not MISSING) is arg), "exists", _render(arg), None


def _prefix(where: str, op: str, arg: Any, region: str | None) -> Compiled:
    prefixes = tuple(_string_list(where, arg, "a non-empty string"))
    if not all(isinstance(p, str) and p for p in prefixes):
        raise Problem(where, "expected a non-empty string or a list of non-empty strings")
    return (lambda v: isinstance(v, str) and v.startswith(prefixes)), "prefix", _render(arg), None


def _regex(where: str, op: str, arg: Any, region: str | None) -> Compiled:
    if not isinstance(arg, str) or not arg:
        raise Problem(where, "expected a non-empty regular expression string")
    try:
        search = re.compile(arg).search
    except re.error as exc:
        raise Problem(where, f"invalid regular expression: {exc}") from None
    return (lambda v: isinstance(v, str) and search(v) is not None), "regex", _render(arg), None


def _numeric(
    sym: str, cmp: Callable[[Any, Any], bool], where: str, op: str, arg: Any, region: str | None
) -> Compiled:
    if not _is_number(arg) or not math.isfinite(arg):
        kinds = {bool: "true/false", str: "text", list: "a list", dict: "a mapping"}
        what = "infinity or NaN" if isinstance(arg, float) else kinds.get(type(arg), "nothing")
        raise Problem(where, f"expected a number to compare with, e.g. {op}: 10 (found {what})")
    return (lambda v: _is_number(v) and cmp(v, arg)), sym, _render(arg), None


def _not(where: str, op: str, arg: Any, region: str | None) -> Compiled:
    if not isinstance(arg, Mapping):
        pred, sym, exp, _ = _eq(where, "eq", arg, region)
        return (lambda v: not pred(v)), "not", f"({sym} {exp})", None
    inner = [_compile_op(f"{where}.{o}", o, a, region) for o, a in _ops(where, arg)]
    preds = tuple(p for p, _, _, _ in inner)
    text = " and ".join(f"{s} {e}" for _, s, e, _ in inner)
    return (lambda v: any(not p(v) for p in preds)), "not", f"({text})", None


_COMPILERS: dict[str, Callable[[str, str, Any, str | None], Compiled]] = {
    "eq": _eq,
    "in": _in,
    "exists": _exists,
    "not": _not,
    "prefix": _prefix,
    "regex": _regex,
    "gt": partial(_numeric, ">", operator.gt),
    "gte": partial(_numeric, ">=", operator.ge),
    "lt": partial(_numeric, "<", operator.lt),
    "lte": partial(_numeric, "<=", operator.le),
    "phone": _phone,
    "phone_prefix": _phone,
}
OPERATORS = tuple(_COMPILERS)


def _compile_op(where: str, op: str, arg: Any, region: str | None) -> Compiled:
    compiler = _COMPILERS.get(op)
    if compiler is None:
        raise Problem(
            where,
            f"unknown operator {op!r}; use one of: {', '.join(OPERATORS)} "
            "(nested fields take a dotted path, e.g. 'caller.tier: vip')",
        )
    return compiler(where, op, arg, region)


def _ops(where: str, spec: Mapping[Any, Any]) -> list[tuple[str, Any]]:
    if not spec:
        raise Problem(where, f"empty condition; use a value or one of: {', '.join(OPERATORS)}")
    if not all(isinstance(op, str) for op in spec):
        raise Problem(where, "operator names must be strings")
    return list(spec.items())


def _check(parts: tuple[str, ...], op: str, arg: Any, pred: Pred) -> Pred:
    """``pred(lookup(mapping, parts))``, with ``eq`` and ``exists`` on a top-level key inlined
    (same semantics: a property test compares ``explain()``, which runs ``pred``)."""
    if len(parts) > 1:
        return lambda mapping: pred(lookup(mapping, parts))
    key, missing = parts[0], MISSING
    if op == "eq" and type(arg) is str:
        return lambda mapping: bool(mapping.get(key, missing) == arg)
    if op == "exists":
        return lambda mapping: (mapping.get(key, missing) is not missing) is arg
    return lambda mapping: pred(mapping.get(key, missing))


def compile_when(
    when: Mapping[str, Any], *, source: Source, region: str | None = None
) -> tuple[Cond, ...]:
    """Compile a rule's ``when`` (metadata paths) or ``when_attributes`` (attribute names);
    :class:`Problem` names the invalid field or operator."""
    field = "when" if source == "metadata" else "when_attributes"
    conds: list[Cond] = []
    for path, spec in when.items():
        where = f"{field}.{path}"
        try:
            parts = (path,) if source == "attributes" else split_path(path)
        except ValueError as exc:
            raise Problem(where, str(exc)) from None
        if not path:
            raise Problem(where, "attribute names must be non-empty")
        ops = _ops(where, spec) if isinstance(spec, Mapping) else [("eq", spec)]
        for op, arg in ops:
            sub = f"{where}.{op}" if isinstance(spec, Mapping) else where
            pred, sym, exp, index = _compile_op(sub, op, arg, region)
            check = _check(parts, op, arg, pred)
            conds.append(Cond(source, path, parts, sym, exp, pred, check, index))
    return tuple(conds)
