"""The rule index: first-match-wins routing without scanning every rule.

Each rule is filed under at most one indexable condition (``eq``/``in`` value, E.164
``phone``, ``phone_prefix``), on the field most rules share. A decision looks its fields
up, merges the buckets hit (each holding the unindexed rules too, in rule order) and
checks only those rules, in order: exactly a linear scan's result (a property test
compares the two). A prefix lookup probes one dict per distinct prefix length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .conditions import MISSING, Cond, IndexKind, index_key
from .phone import normalize_number
from .rules import Rule

__all__ = ["RuleIndex"]

_Check = tuple[Callable[[Any], bool], bool]  # (check, reads attributes)


class _Field(NamedTuple):
    on_attrs: bool
    key: str | None  # a top-level key (fast path), else None
    parts: tuple[str, ...]
    kind: IndexKind
    table: dict[Any, tuple[int, ...]]
    lengths: tuple[int, ...]  # phone_prefix: the distinct prefix lengths, longest first


def _field_id(c: Cond) -> tuple[str, str, str]:
    assert c.indexed is not None
    return (c.source, c.path, c.indexed[0])


class RuleIndex:
    """Finds the first rule whose conditions hold, looking at few rules."""

    __slots__ = ("_fields", "_region", "_rest", "_unindexed")

    def __init__(self, rules: Sequence[Rule], region: str | None) -> None:
        self._region = region
        freq: dict[tuple[str, str, str], int] = {}
        for r in rules:
            for fid in {_field_id(c) for c in r.conds if c.indexed is not None}:
                freq[fid] = freq.get(fid, 0) + 1
        tables: dict[tuple[str, str, str], dict[Any, list[int]]] = {}
        parts_of: dict[tuple[str, str, str], tuple[str, ...]] = {}
        unindexed: list[int] = []
        rest: list[tuple[_Check, ...]] = []
        for r in rules:
            best = max(
                (c for c in r.conds if c.indexed is not None),
                key=lambda c: freq[_field_id(c)],
                default=None,
            )
            rest.append(
                tuple((c.check, c.source == "attributes") for c in r.conds if c is not best)
            )
            if best is None or best.indexed is None:
                unindexed.append(r.pos)
                continue
            fid = _field_id(best)
            parts_of[fid] = best.parts
            table = tables.setdefault(fid, {})
            for key in best.indexed[1]:
                table.setdefault(key, []).append(r.pos)
        self._fields = tuple(
            self._field(fid, parts_of[fid], table, unindexed) for fid, table in tables.items()
        )
        self._unindexed = tuple(unindexed)
        self._rest = tuple(rest)

    @staticmethod
    def _field(
        fid: tuple[str, str, str],
        parts: tuple[str, ...],
        table: dict[Any, list[int]],
        unindexed: list[int],
    ) -> _Field:
        source, _, kind = fid
        merged = {k: tuple(sorted({*v, *unindexed})) for k, v in table.items()}
        lengths = (
            tuple(sorted({len(k) for k in table}, reverse=True)) if kind == "phone_prefix" else ()
        )
        key = parts[0] if len(parts) == 1 else None
        return _Field(source == "attributes", key, parts, kind, merged, lengths)  # type: ignore[arg-type]

    def _value(self, f: _Field, md: Mapping[str, Any], attrs: Mapping[str, str]) -> Any:
        v: Any = attrs if f.on_attrs else md
        for seg in f.parts:
            if type(v) is not dict and not isinstance(v, Mapping):
                return MISSING
            v = v.get(seg, MISSING)
            if v is MISSING:
                return MISSING
        return v

    def _phone_buckets(self, f: _Field, v: Any) -> Iterable[tuple[int, ...]]:
        number = normalize_number(v, self._region) if type(v) is str else None
        if number is None:
            return ()
        if f.kind == "phone":
            bucket = f.table.get(number)
            return () if bucket is None else (bucket,)
        found = (f.table.get(number[:n]) for n in f.lengths if n <= len(number))
        return [b for b in found if b is not None]

    def find(self, md: Mapping[str, Any], attrs: Mapping[str, str]) -> int:
        """The position of the first matching rule, or ``-1``."""
        hit: tuple[int, ...] | None = None
        many: set[int] | None = None
        for f in self._fields:
            if f.key is not None:
                v = (attrs if f.on_attrs else md).get(f.key, MISSING)
            else:
                v = self._value(f, md, attrs)
            if v is MISSING:
                continue
            if f.kind == "eq":
                bucket = f.table.get(v if type(v) is str else index_key(v))
                buckets: Iterable[tuple[int, ...]] = () if bucket is None else (bucket,)
            else:
                buckets = self._phone_buckets(f, v)
            for bucket in buckets:
                if hit is None:
                    hit = bucket
                else:
                    if many is None:
                        many = set(hit)
                    many.update(bucket)
        # Buckets are pre-merged with the unindexed rules, in rule order.
        candidates: Iterable[int] = (
            sorted(many) if many is not None else hit if hit is not None else self._unindexed
        )
        rest = self._rest
        for i in candidates:
            for check, on_attrs in rest[i]:
                if not check(attrs if on_attrs else md):
                    break
            else:
                return i
        return -1
