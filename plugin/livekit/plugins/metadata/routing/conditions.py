"""Rule conditions: operators compiled once into predicates, with their index keys.

A condition reads one field (a dotted metadata path, or an attribute name) with one
operator (semantics: ``docs/rules.md``). It carries ``pred`` (the reference evaluation,
used by ``explain()``), ``check`` (``pred(lookup(mapping))`` fused, for the hot path) and,
for ``eq``/``in``/``phone``/``phone_prefix``, the keys the router indexes the rule by.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
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


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
"""What a lookup finds for an absent field."""

NO_KEY: Any = object()  # index key of an unhashable / non-scalar value: in no bucket
_NULL_KEY = ("\x00null",)
_BOOL_TAG = "\x00bool"
_NUM_TAG = "\x00num"

_SCALARS = (str, int, float, bool, type(None))
OPERATORS = (
    "eq",
    "in",
    "exists",
    "not",
    "prefix",
    "regex",
    "gt",
    "gte",
    "lt",
    "lte",
    "phone",
    "phone_prefix",
)
_NUMERIC_OPS: dict[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "gt": (">", lambda v, a: v > a),
    "gte": (">=", lambda v, a: v >= a),
    "lt": ("<", lambda v, a: v < a),
    "lte": ("<=", lambda v, a: v <= a),
}

IndexKind = Literal["eq", "phone", "phone_prefix"]
Source = Literal["metadata", "attributes"]
Pred = Callable[[Any], bool]
Compiled = tuple[Pred, str, str]  # predicate, operator symbol, expected value as JSON


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
    indexed: tuple[IndexKind, frozenset[Any]] | None  # (kind, keys) the rule can be filed by


def index_key(value: Any) -> Any:
    """A hashable key with JSON equality semantics (bool never equals a number)."""
    t = type(value)
    if t is str:
        return value
    if t is bool:
        return (_BOOL_TAG, value)
    if t is int or t is float:
        return (_NUM_TAG, value)
    if value is None:
        return _NULL_KEY
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (int, float)):
        return (_NUM_TAG, value)
    return NO_KEY


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _render(value: Any) -> str:
    """The rule's own expected value as operators read it (JSON-ish)."""
    return json.dumps(value, ensure_ascii=False)


def lookup(mapping: Any, parts: tuple[str, ...]) -> Any:
    """The value at ``parts`` in nested mappings, or :data:`MISSING`."""
    value = mapping
    for seg in parts:
        if type(value) is dict or isinstance(value, Mapping):
            value = value.get(seg, MISSING)
            if value is MISSING:
                return MISSING
        else:
            return MISSING
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


def _compile_eq(where: str, arg: Any) -> tuple[Pred, str, str, frozenset[Any]]:
    hint = "; for a list of alternatives write {in: [...]}" if isinstance(arg, list) else ""
    _check_scalar(where, arg, "expected a string, number, boolean or null" + hint)
    pred: Pred
    if isinstance(arg, str):
        exp_s = str(arg)

        def pred(v: Any) -> bool:
            return bool(v == exp_s)

    elif isinstance(arg, bool) or arg is None:
        exp_o = arg

        def pred(v: Any) -> bool:
            return v is exp_o

    else:
        key = index_key(arg)

        def pred(v: Any) -> bool:
            return _is_number(v) and bool(index_key(v) == key)

    return pred, "==", _render(arg), frozenset({index_key(arg)})


def _compile_in(where: str, arg: Any) -> tuple[Pred, str, str, frozenset[Any]]:
    if not isinstance(arg, list) or not arg:
        raise Problem(where, "expected a non-empty list of strings, numbers, booleans or nulls")
    for item in arg:
        _check_scalar(where, item, "list items must be scalars")
    keys = frozenset(index_key(item) for item in arg)

    def pred(v: Any) -> bool:
        return (v if type(v) is str else index_key(v)) in keys

    return pred, "in", _render(arg), keys


def _string_list(where: str, arg: Any, what: str) -> list[Any]:
    items = arg if isinstance(arg, list) else [arg]
    if not items:
        raise Problem(where, f"expected {what} or a non-empty list of them")
    return items


def _compile_phone(
    where: str, arg: Any, region: str | None
) -> tuple[Pred, str, str, frozenset[Any]]:
    try:
        numbers = frozenset(
            rule_number(n, region) for n in _string_list(where, arg, "a phone number")
        )
    except ValueError as exc:
        raise Problem(where, str(exc)) from None

    def pred(v: Any) -> bool:
        return type(v) is str and normalize_number(v, region) in numbers

    return pred, "phone", _render(sorted(numbers)), numbers


def _compile_phone_prefix(
    where: str, arg: Any, region: str | None
) -> tuple[Pred, str, str, frozenset[Any]]:
    try:
        prefixes = frozenset(rule_prefix(p) for p in _string_list(where, arg, "a phone prefix"))
    except ValueError as exc:
        raise Problem(where, str(exc)) from None
    ordered = tuple(sorted(prefixes))

    def pred(v: Any) -> bool:
        if type(v) is not str:
            return False
        number = normalize_number(v, region)
        return number is not None and number.startswith(ordered)

    return pred, "phone_prefix", _render(list(ordered)), prefixes


def _compile_exists(where: str, arg: Any) -> Compiled:
    if not isinstance(arg, bool):
        raise Problem(where, "expected true or false")
    want = arg

    def pred(v: Any) -> bool:
        return (v is not MISSING) is want

    return pred, "exists", _render(arg)


def _compile_prefix(where: str, arg: Any) -> Compiled:
    prefixes = _string_list(where, arg, "a non-empty string")
    if not all(isinstance(p, str) and p for p in prefixes):
        raise Problem(where, "expected a non-empty string or a list of non-empty strings")
    tup = tuple(prefixes)

    def pred(v: Any) -> bool:
        return isinstance(v, str) and v.startswith(tup)

    return pred, "prefix", _render(arg)


def _compile_regex(where: str, arg: Any) -> Compiled:
    if not isinstance(arg, str) or not arg:
        raise Problem(where, "expected a non-empty regular expression string")
    try:
        search = re.compile(arg).search
    except re.error as exc:
        raise Problem(where, f"invalid regular expression: {exc}") from None

    def pred(v: Any) -> bool:
        return isinstance(v, str) and search(v) is not None

    return pred, "regex", _render(arg)


def _compile_numeric(where: str, op: str, arg: Any) -> Compiled:
    if not _is_number(arg) or not math.isfinite(arg):
        kinds = {bool: "true/false", str: "text", list: "a list", dict: "a mapping"}
        what = "infinity or NaN" if isinstance(arg, float) else kinds.get(type(arg), "nothing")
        raise Problem(where, f"expected a number to compare with, e.g. {op}: 10 (found {what})")
    sym, cmp = _NUMERIC_OPS[op]
    bound = arg

    def pred(v: Any) -> bool:
        return _is_number(v) and cmp(v, bound)

    return pred, sym, _render(arg)


def _compile_not(where: str, arg: Any, region: str | None) -> Compiled:
    if isinstance(arg, Mapping):
        inner = [_compile_op(f"{where}.{op}", op, a, region)[:3] for op, a in _ops(where, arg)]
        preds = tuple(p for p, _, _ in inner)
        text = " and ".join(f"{s} {e}" for _, s, e in inner)

        def pred_not(v: Any) -> bool:
            return any(not p(v) for p in preds)

        return pred_not, "not", f"({text})"
    p1, s1, e1, _ = _compile_eq(where, arg)

    def pred_not_eq(v: Any) -> bool:
        return not p1(v)

    return pred_not_eq, "not", f"({s1} {e1})"


def _compile_op(
    where: str, op: str, arg: Any, region: str | None
) -> tuple[Pred, str, str, tuple[IndexKind, frozenset[Any]] | None]:
    """Compile one operator: predicate, symbol, expected text and index keys (if any)."""
    if op == "eq":
        pred, sym, exp, keys = _compile_eq(where, arg)
        return pred, sym, exp, ("eq", keys)
    if op == "in":
        pred, sym, exp, keys = _compile_in(where, arg)
        return pred, sym, exp, ("eq", keys)
    if op == "phone":
        pred, sym, exp, keys = _compile_phone(where, arg, region)
        return pred, sym, exp, ("phone", keys)
    if op == "phone_prefix":
        pred, sym, exp, keys = _compile_phone_prefix(where, arg, region)
        return pred, sym, exp, ("phone_prefix", keys)
    compiled: Compiled
    if op == "exists":
        compiled = _compile_exists(where, arg)
    elif op == "prefix":
        compiled = _compile_prefix(where, arg)
    elif op == "regex":
        compiled = _compile_regex(where, arg)
    elif op in _NUMERIC_OPS:
        compiled = _compile_numeric(where, op, arg)
    elif op == "not":
        compiled = _compile_not(where, arg, region)
    else:
        raise Problem(
            where,
            f"unknown operator {op!r}; use one of: {', '.join(OPERATORS)} "
            "(nested fields take a dotted path, e.g. 'caller.tier: vip')",
        )
    return (*compiled, None)


def _ops(where: str, spec: Mapping[Any, Any]) -> list[tuple[str, Any]]:
    if not spec:
        raise Problem(where, f"empty condition; use a value or one of: {', '.join(OPERATORS)}")
    out = []
    for op, arg in spec.items():
        if not isinstance(op, str):
            raise Problem(where, "operator names must be strings")
        out.append((op, arg))
    return out


def _make_check(parts: tuple[str, ...], pred: Pred) -> Pred:
    if len(parts) == 1:
        key = parts[0]
        missing = MISSING

        def check_top(mapping: Any) -> bool:
            return pred(mapping.get(key, missing))

        return check_top

    def check_nested(mapping: Any) -> bool:
        return pred(lookup(mapping, parts))

    return check_nested


def _fused_check(parts: tuple[str, ...], op: str, arg: Any, pred: Pred) -> Pred:
    """``pred(lookup(mapping))`` in one frame for the common top-level operators.

    Semantics are exactly ``pred``'s: ``explain()`` evaluates ``pred`` directly and
    the hypothesis test checks both agree. This only saves a Python call per
    condition on the hot path.
    """
    if len(parts) != 1:
        return _make_check(parts, pred)
    key = parts[0]
    missing = MISSING
    if op == "eq" and type(arg) is str:
        expected = arg

        def check_eq(mapping: Any) -> bool:
            return bool(mapping.get(key, missing) == expected)

        return check_eq
    if op == "in":
        keys = frozenset(index_key(item) for item in arg)

        def check_in(mapping: Any) -> bool:
            v = mapping.get(key, missing)
            return (v if type(v) is str else index_key(v)) in keys

        return check_in
    if op == "exists":
        want = bool(arg)

        def check_exists(mapping: Any) -> bool:
            return (mapping.get(key, missing) is not missing) is want

        return check_exists
    return _make_check(parts, pred)


def compile_when(
    when: Mapping[str, Any], *, source: Source, region: str | None = None
) -> tuple[Cond, ...]:
    """Compile a rule's ``when`` (metadata paths) or ``when_attributes`` (attribute names).

    Raises:
        Problem: A field or operator is invalid (``where`` names it).
    """
    field = "when" if source == "metadata" else "when_attributes"
    conds: list[Cond] = []
    for path, spec in when.items():
        where = f"{field}.{path}"
        if not isinstance(path, str):
            raise Problem(field, "field names must be strings")
        if source == "attributes":
            if not path:
                raise Problem(where, "attribute names must be non-empty")
            parts: tuple[str, ...] = (path,)
        else:
            try:
                parts = split_path(path)
            except ValueError as exc:
                raise Problem(where, str(exc)) from None
        ops = _ops(where, spec) if isinstance(spec, Mapping) else [("eq", spec)]
        for op, arg in ops:
            sub = where if not isinstance(spec, Mapping) else f"{where}.{op}"
            pred, sym, exp, index = _compile_op(sub, op, arg, region)
            check = _fused_check(parts, op, arg, pred)
            conds.append(Cond(source, path, parts, sym, exp, pred, check, index))
    return tuple(conds)
