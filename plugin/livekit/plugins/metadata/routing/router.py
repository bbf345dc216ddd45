"""MetadataRouter: one rule set (``docs/rules.md``) mapping metadata to an agent, at token
time, in a worker's ``on_request`` and in the entrypoint. Nothing here logs or raises with a
metadata value."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from .._util import keys_for_log
from ..codec import json_type_name
from ..errors import NoRouteMatched
from ..loader import MAX_FILE_BYTES, load_file
from .conditions import MISSING, Cond, lookup
from .index import RuleIndex
from .phone import number_problem
from .route import ConditionFailure, Route, RuleTrace
from .rules import RuleSet, rules_from_config

__all__ = ["ConditionFailure", "MetadataRouter", "Route", "RuleTrace"]

_NO_ATTRIBUTES: Mapping[str, str] = MappingProxyType({})


def _select_keys(md: Mapping[str, Any], keys: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for parts in keys:
        v = lookup(md, parts)
        if v is MISSING:
            continue
        node = out
        for seg in parts[:-1]:
            if not isinstance(node.get(seg), dict):
                node[seg] = {}
            node = node[seg]
        node[parts[-1]] = v
    return out


def _check_inputs(metadata: Any, attributes: Any) -> Mapping[str, Any]:
    if type(metadata) is not dict and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, not {type(metadata).__name__}")
    if attributes is None:
        return _NO_ATTRIBUTES
    if not isinstance(attributes, Mapping):
        raise TypeError(f"attributes must be a mapping, not {type(attributes).__name__}")
    return attributes


class MetadataRouter:
    """Ordered, first-match-wins routing rules with an optional default; never changes, safe
    to share between tasks: ``MetadataRouter.from_file("rules.yaml").route(metadata).agent``."""

    def __init__(self, rule_set: RuleSet, *, source: str | None = None) -> None:
        """Wrap a compiled :class:`~.rules.RuleSet` (else TypeError); see :meth:`from_dict`."""
        if not isinstance(rule_set, RuleSet):
            raise TypeError("build a MetadataRouter with from_dict() or from_file()")
        self.rule_set: Final = rule_set  # the compiled rules, e.g. for ``lk-metadata sip sync``
        self.agents: Final = rule_set.agents  # every agent a route can name (check factories)
        self.worker: Final = rule_set.worker  # the one worker hosting every agent, if named
        self.has_default: Final = rule_set.default is not None  # then route() never raises
        self._source = source
        self._targets = tuple(r.target for r in rule_set.rules)
        default = () if rule_set.default is None else (rule_set.default,)
        # Every LiveKit agent_name a route can dispatch to.
        self.agent_names: Final = frozenset(t.agent_name for t in (*self._targets, *default)) - {""}
        self._index = RuleIndex(rule_set.rules, rule_set.phone_region)

    @classmethod
    def from_dict(
        cls, config: Mapping[str, Any], *, worker: str | None = None, source: str | None = None
    ) -> MetadataRouter:
        """A router from ``{rules, default, worker, phone_region}``; ``worker`` overrides the
        rule set's (a rule's own wins), ``source`` names the mapping in ConfigError messages."""
        return cls(rules_from_config(config, worker=worker, source=source), source=source)

    @classmethod
    def from_file(
        cls, path: str | Path, *, worker: str | None = None, max_bytes: int = MAX_FILE_BYTES
    ) -> MetadataRouter:
        """Load rules from a ``.yaml``/``.yml``, ``.toml`` or ``.json`` file; ConfigError when
        it cannot be read, is not a regular file of at most ``max_bytes`` or is invalid."""
        data = load_file(path, max_bytes=max_bytes)
        return cls.from_dict(data, worker=worker, source=repr(str(path)))

    def __len__(self) -> int:
        return len(self.rule_set.rules)

    def __repr__(self) -> str:
        default = self.rule_set.default.label if self.rule_set.default is not None else None
        return (
            f"MetadataRouter(rules={len(self.rule_set.rules)}, default={default!r}, "
            f"source={self._source})"
        )

    def match_index(
        self, metadata: Mapping[str, Any], *, attributes: Mapping[str, str] | None = None
    ) -> int | None:
        """The index of the first rule that matches, or ``None``."""
        i = self._index.find(metadata, _check_inputs(metadata, attributes))
        return None if i < 0 else i

    def route(
        self, metadata: Mapping[str, Any], *, attributes: Mapping[str, str] | None = None
    ) -> Route:
        """The :class:`Route` of the first rule matching ``metadata`` (and ``attributes``, for
        ``when_attributes``), else of the default; NoRouteMatched without one, TypeError for
        a non-mapping input."""
        i = self._index.find(metadata, _check_inputs(metadata, attributes))
        target = self._targets[i] if i >= 0 else self.rule_set.default
        if target is None:
            raise self._no_match(metadata)
        keys = target.keys
        selected = dict(metadata) if keys is None else _select_keys(metadata, keys) if keys else {}
        return Route(**target.fields, metadata=selected)

    def accepts(
        self,
        metadata: Mapping[str, Any],
        agent_name: str,
        *,
        attributes: Mapping[str, str] | None = None,
    ) -> bool:
        """Whether ``metadata`` routes to the worker registered as ``agent_name`` (False for
        a ``reject`` route and when nothing matches)."""
        try:
            route = self.route(metadata, attributes=attributes)
        except NoRouteMatched:
            return False
        return not route.rejected and route.agent_name == agent_name

    def pending_agent_names(self, metadata: Mapping[str, Any]) -> frozenset[str] | None:
        """While participant attributes are unknown: every agent_name the route may still take
        (``""``: reject or no match), or ``None`` when it does not depend on attributes."""
        _check_inputs(metadata, None)
        names: set[str] = set()
        final = "" if self.rule_set.default is None else self.rule_set.default.agent_name
        for r in self.rule_set.rules:
            if all(c.check(metadata) for c in r.conds if c.source == "metadata"):
                if not r.needs_attributes:
                    final = r.target.agent_name
                    break
                names.add(r.target.agent_name)
        return frozenset({*names, final}) if names else None

    def _no_match(self, metadata: Mapping[str, Any]) -> NoRouteMatched:
        count = len(self.rule_set.rules)
        keys = sorted(str(k) for k in metadata)
        seen = f"metadata keys {keys_for_log(keys)}" if keys else "empty metadata"
        return NoRouteMatched(
            (
                "the one routing rule did not match"
                if count == 1
                else f"none of the {count} routing rules matched"
            )
            + f" ({seen}) and the rule set has no default; add "
            "'default: <agent>' (or 'default: reject') to the rules file"
        )

    def explain(
        self, metadata: Mapping[str, Any], *, attributes: Mapping[str, str] | None = None
    ) -> list[RuleTrace]:
        """Every rule with its verdict and first failed condition (the JSON *type* found, never
        the value), the default last: ``lk-metadata route --explain``, and the reference
        linear scan the index must agree with."""
        attrs = _check_inputs(metadata, attributes)
        trace: list[RuleTrace] = []
        chosen = False
        for r in self.rule_set.rules:
            failures = (_failure(c, metadata, attrs, self.rule_set.phone_region) for c in r.conds)
            failed = next((f for f in failures if f is not None), None)
            matched = failed is None
            selected = matched and not chosen
            chosen = chosen or matched
            trace.append(RuleTrace(r.pos, r.name, r.target.label, matched, selected, failed))
        if self.rule_set.default is not None:
            trace.append(RuleTrace(None, None, self.rule_set.default.label, True, not chosen))
        return trace


def _failure(
    c: Cond, metadata: Mapping[str, Any], attrs: Mapping[str, str], region: str | None
) -> ConditionFailure | None:
    """How ``c`` fails: the JSON type found (never the value) or, for a phone condition,
    why the string is no number; ``None`` when it holds."""
    v = lookup(attrs if c.source == "attributes" else metadata, c.parts)
    if c.pred(v):
        return None
    found = "missing" if v is MISSING else json_type_name(v)
    if c.op in ("phone", "phone_prefix") and isinstance(v, str):
        problem = number_problem(v, region)
        if problem is not None:
            found = f"a string of {len(v)} characters that is not a phone number: {problem}"
    return ConditionFailure(c.path, c.op, c.expected, found, c.source)
