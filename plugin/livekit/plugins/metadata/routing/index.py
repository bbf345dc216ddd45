"""The rule index: each rule is filed under at most one ``eq``/``in``/``phone``/
``phone_prefix`` condition, on the field most rules share; a decision checks, in order, only
the rules in the buckets its values hit (each also holding the unindexed rules): exactly a
linear scan's result. A prefix lookup probes one dict per distinct prefix length."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from .conditions import MISSING, Cond, IndexKind, index_key, lookup
from .phone import normalize_number
from .rules import Rule

__all__ = ["RuleIndex"]


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


def _field(c: Cond, table: dict[Any, list[int]], unindexed: list[int]) -> _Field:
    assert c.indexed is not None
    kind = c.indexed[0]
    merged = {k: tuple(sorted({*v, *unindexed})) for k, v in table.items()}
    lengths = sorted({len(k) for k in table}, reverse=True) if kind == "phone_prefix" else []
    key = c.parts[0] if len(c.parts) == 1 else None
    return _Field(c.source == "attributes", key, c.parts, kind, merged, tuple(lengths))


class RuleIndex:
    """Finds the first rule whose conditions hold, looking at few rules."""

    __slots__ = ("_fields", "_region", "_rest", "_unindexed")

    def __init__(self, rules: Sequence[Rule], region: str | None) -> None:
        self._region = region
        freq = Counter(fid for r in rules for fid in {_field_id(c) for c in r.conds if c.indexed})
        tables: dict[tuple[str, str, str], tuple[Cond, dict[Any, list[int]]]] = {}
        unindexed: list[int] = []
        rest: list[tuple[tuple[Callable[[Any], bool], bool], ...]] = []  # (check, on attributes)
        for r in rules:
            indexed = [c for c in r.conds if c.indexed]
            best = max(indexed, key=lambda c: freq[_field_id(c)], default=None)
            rest.append(
                tuple((c.check, c.source == "attributes") for c in r.conds if c is not best)
            )
            if best is None or best.indexed is None:
                unindexed.append(r.pos)
                continue
            table = tables.setdefault(_field_id(best), (best, {}))[1]
            for key in best.indexed[1]:
                table.setdefault(key, []).append(r.pos)
        self._fields = tuple(_field(c, table, unindexed) for c, table in tables.values())
        self._unindexed = tuple(unindexed)
        self._rest = tuple(rest)

    def _phone_buckets(self, f: _Field, v: Any) -> list[tuple[int, ...]]:
        number = normalize_number(v, self._region) if type(v) is str else None
        if number is None:
            return []
        keys = (
            [number] if f.kind == "phone" else [number[:n] for n in f.lengths if n <= len(number)]
        )
        return [b for k in keys if (b := f.table.get(k)) is not None]

    def find(self, md: Mapping[str, Any], attrs: Mapping[str, str]) -> int:
        """The position of the first matching rule, or ``-1``."""
        hits: list[tuple[int, ...]] = []
        for f in self._fields:
            src: Mapping[str, Any] = attrs if f.on_attrs else md
            v = src.get(f.key, MISSING) if f.key is not None else lookup(src, f.parts)
            if v is MISSING:
                continue
            if f.kind != "eq":
                hits += self._phone_buckets(f, v)
            elif (bucket := f.table.get(v if type(v) is str else index_key(v))) is not None:
                hits.append(bucket)
        # Buckets are pre-merged with the unindexed rules, in rule order.
        if len(hits) == 1:
            candidates: Sequence[int] = hits[0]
        else:
            candidates = sorted(set().union(*hits)) if hits else self._unindexed
        rest = self._rest
        for i in candidates:
            for check, on_attrs in rest[i]:
                if not check(attrs if on_attrs else md):
                    break
            else:
                return i
        return -1
