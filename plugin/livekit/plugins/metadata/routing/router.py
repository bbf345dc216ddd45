"""MetadataRouter: one declarative rule set that maps metadata to an agent.

The same rules run in three places: at token time (the token's agent dispatch,
see ``TokenIssuer(router=...)`` and :func:`~livekit.plugins.metadata.dispatch.ensure_dispatch`),
in a worker's ``on_request`` handler (accept the job, or reject it with
``terminate=False`` so another worker can take it), and inside the entrypoint
(choose the ``Agent`` class, and optionally hand off when the metadata changes).

Rule syntax (YAML shown; TOML, JSON and plain dicts have the same shape)::

    worker: router-demo          # optional: every agent below is hosted by this one
                                 # worker (its registered agent_name); without it each
                                 # agent is dispatched under its own name
    rules:                       # ordered; the first rule whose conditions all hold wins
      - name: blocked            # optional, unique; used in logs, explain() and Route.rule
        when: {tenant: {in: [banned-co]}}
        reject: true             # a rule may reject instead of naming an agent
      - name: spanish-support
        when:
          department: support                 # equality (plain value)
          language: {in: [es, es-MX]}         # membership
        agent: support-es                     # the agent (and, without `worker`, the agent_name)
        job_metadata: [department, language, customer]   # keys sent to the job (default: all)
      - name: vip
        when:
          caller.tier: vip                    # dotted path into nested objects
          caller.id: {exists: true}
          plan: {not: {in: [trial, free]}}    # negation of any condition
          phone: {prefix: "+34"}              # string prefix (or a list of prefixes)
          email: {regex: '@example\\.com$'}   # re.search; compiled once at load time
          age: {gte: 18, lt: 65}              # numbers; several operators = all must hold
        agent: vip
        deployment: staging                   # optional LiveKit deployment
        attributes: {queue: priority}         # optional dispatch attributes (str -> str)
        worker: vip-pool                      # optional per-rule override of `worker`
      - agent: general                        # no `when`: matches everything
    default: general             # or `default: reject`, or a full target mapping
                                 # ({agent: ..., deployment: ..., ...}); without a
                                 # default, no match raises NoRouteMatched

Condition semantics:

* Equality is type-strict: ``true`` never equals ``1``, ``"1"`` never equals ``1``
  (``1`` equals ``1.0``). ``null`` matches a present ``null`` value.
* A missing field fails every condition except ``exists: false`` and ``not``
  (``not`` is plain negation, so ``{not: es}`` holds when the field is missing).
* ``prefix``/``regex`` only match strings; ``gt/gte/lt/lte`` only match numbers
  (booleans are not numbers). Anything else fails the condition.
* Paths are split on ``.`` and walk nested objects only (no list indices).
* A plain list is not a condition; write ``{in: [...]}``.
* YAML: only ``true``/``false`` are booleans (YAML 1.2), so ``language: no``
  means the string ``"no"``; duplicate keys are an error.

Every problem in a rule set raises :class:`~livekit.plugins.metadata.errors.ConfigError`
at load time, naming the rule (name and index) and the field; routing itself
never fails on a well-formed mapping. Equality and ``in`` conditions are
indexed, so a decision costs about the same with 1,000 rules as with 10, with
exactly the first-match-wins result of a linear scan.

Nothing here logs or raises with a metadata value: only keys, sizes, types,
rule names and the rules' own expected values.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..codec import (
    DEFAULT_MAX_METADATA_BYTES,
    json_type_name,
    parse_metadata,
    serialize_metadata,
    validate_attributes,
)
from ..errors import ConfigError, MetadataError, NoRouteMatched, RoutingError
from ..loader import load_file, load_text
from ..log import logger

if TYPE_CHECKING:
    from livekit.agents import Agent, AgentSession, JobRequest

__all__ = [
    "AgentFactory",
    "AgentFactoryMap",
    "ConditionFailure",
    "MetadataRouter",
    "Route",
    "RuleTrace",
    "Selection",
    "format_explain",
    "format_route",
    "reroute",
    "route_of",
    "route_summary",
]

AgentFactory = Union["type[Agent]", Callable[["Route"], "Agent"]]
"""An ``Agent`` subclass (called with no arguments) or a callable ``(route) -> Agent``."""

MetadataSource = (
    Literal["job", "room"] | Callable[["JobRequest"], "str | bytes | Mapping[str, Any] | None"]
)


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
_NO_KEY: Any = object()  # index key of an unhashable / non-scalar value: in no bucket
_NULL_KEY = ("\x00null",)
_BOOL_TAG = "\x00bool"
_NUM_TAG = "\x00num"

_NO_ATTRIBUTES: Mapping[str, str] = MappingProxyType({})
_SCALARS = (str, int, float, bool, type(None))
_OPERATORS = ("eq", "in", "exists", "not", "prefix", "regex", "gt", "gte", "lt", "lte")
_NUMERIC_OPS: dict[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "gt": (">", lambda v, a: v > a),
    "gte": (">=", lambda v, a: v >= a),
    "lt": ("<", lambda v, a: v < a),
    "lte": ("<=", lambda v, a: v <= a),
}
_TOP_LEVEL_KEYS = ("rules", "default", "worker")


def _index_key(value: Any) -> Any:
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
    return _NO_KEY


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _render(value: Any) -> str:
    """The rule's own expected value as operators read it (JSON-ish)."""
    return json.dumps(value, ensure_ascii=False)


def _lookup(metadata: Any, path: tuple[str, ...]) -> Any:
    value = metadata
    for seg in path:
        if type(value) is dict or isinstance(value, Mapping):
            value = value.get(seg, _MISSING)
            if value is _MISSING:
                return _MISSING
        else:
            return _MISSING
    return value


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, repr=False)
class Route:
    """The outcome of routing one metadata mapping.

    Attributes:
        agent: The agent chosen by the rules: the key for Agent factories in an
            entrypoint. ``""`` when ``rejected``.
        agent_name: The LiveKit ``agent_name`` to dispatch to: the rule's (or the
            rule set's) ``worker`` if set, else ``agent``. ``""`` when ``rejected``.
        rule: The matching rule's name (``None`` if unnamed, default or fallback).
        rule_index: The matching rule's position (``None`` for default/fallback).
        deployment: The LiveKit deployment to target (``None``: production).
        attributes: Dispatch attributes (set on the agent participant by LiveKit);
            read-only for routes built by a router.
        metadata: The job (dispatch) metadata: a shallow copy of the routed mapping,
            reduced to the rule's ``job_metadata`` keys. Never shown in ``repr``.
        rejected: The rules say this metadata must not get an agent.
        is_default: The rule set's ``default`` was used (no rule matched).
        is_fallback: A caller-supplied fallback was used (see :meth:`MetadataRouter.select`).
    """

    agent: str
    agent_name: str
    rule: str | None = None
    rule_index: int | None = None
    deployment: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    rejected: bool = False
    is_default: bool = False
    is_fallback: bool = False

    @property
    def label(self) -> str:
        """Where the decision came from: the rule name, ``rules[i]``, ``default`` or ``fallback``."""
        if self.is_fallback:
            return "fallback"
        if self.rule is not None:
            return self.rule
        if self.rule_index is not None:
            return f"rules[{self.rule_index}]"
        return "default"

    def metadata_json(self, *, max_bytes: int = DEFAULT_MAX_METADATA_BYTES) -> str:
        """The job metadata serialized compactly for a LiveKit dispatch (``""`` if empty)."""
        return serialize_metadata(self.metadata, max_bytes=max_bytes) if self.metadata else ""

    def __repr__(self) -> str:
        target = "reject" if self.rejected else f"agent={self.agent!r}"
        if self.agent_name != self.agent:
            target += f", agent_name={self.agent_name!r}"
        return (
            f"Route({target}, rule={self.label!r}, deployment={self.deployment!r}, "
            f"attributes={dict(self.attributes)!r}, metadata_keys={sorted(self.metadata)!r})"
        )


@dataclass(frozen=True)
class ConditionFailure:
    """The first condition of a rule that did not hold (see :meth:`MetadataRouter.explain`).

    Attributes:
        path: Dotted field path, e.g. ``caller.tier``.
        op: The operator (``==``, ``in``, ``exists``, ``not``, ``prefix``, ``regex``,
            ``>``, ``>=``, ``<``, ``<=``).
        expected: The rule's own expected value, rendered as JSON.
        found: ``"missing"`` or the JSON type of the value found, never the value.
    """

    path: str
    op: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.path} {self.op} {self.expected} (found: {self.found})"


@dataclass(frozen=True)
class RuleTrace:
    """One line of :meth:`MetadataRouter.explain`: a rule (or the default) and its verdict.

    Attributes:
        index: The rule's position, ``None`` for the default.
        name: The rule's name, if any.
        target: The agent it routes to, or ``"reject"``.
        matched: Every condition held (always True for the default).
        selected: This entry decided the route (the first match, or the default).
        failed: The first condition that did not hold (``None`` if matched).
    """

    index: int | None
    name: str | None
    target: str
    matched: bool
    selected: bool
    failed: ConditionFailure | None = None

    @property
    def label(self) -> str:
        """``rules[i] name``, ``rules[i]`` or ``default``."""
        if self.index is None:
            return "default"
        return f"rules[{self.index}] {self.name}" if self.name else f"rules[{self.index}]"


class Selection(NamedTuple):
    """The result of :meth:`MetadataRouter.select`: the route and the Agent built for it."""

    route: Route
    agent: Agent


# --------------------------------------------------------------------------- config models


class _TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    agent: str | None = None
    reject: bool = False
    worker: str | None = None
    deployment: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    job_metadata: Any = "all"

    @field_validator("agent", "worker")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or value != value.strip()):
            raise ValueError("must be a non-empty name without surrounding whitespace")
        return value

    @field_validator("attributes")
    @classmethod
    def _check_attributes(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_attributes(value)

    @field_validator("job_metadata")
    @classmethod
    def _check_job_metadata(cls, value: Any) -> Any:
        if value in ("all", "none"):
            return value
        if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
            raise ValueError("must be 'all', 'none' or a list of (dotted) key names")
        for key in value:
            _split_path(key)
        return value


class _RuleSpec(_TargetSpec):
    name: str | None = None
    when: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _check_rule_name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a non-empty string")
        return value


def _split_path(path: str) -> tuple[str, ...]:
    parts = tuple(path.split("."))
    if not path or any(not p for p in parts):
        raise ValueError(f"invalid field path {path!r}: use dot-separated, non-empty key names")
    return parts


class _Cond(NamedTuple):
    path: str
    parts: tuple[str, ...]
    op: str
    expected: str
    pred: Callable[[Any], bool]
    check: Callable[[Any], bool]  # pred(lookup(metadata))
    keys: frozenset[Any] | None  # index keys (eq / in at top level), else None


class _Target(NamedTuple):
    template: dict[str, Any]  # the Route's __dict__ minus metadata; class defaults omitted
    keys: tuple[tuple[str, ...], ...] | None  # None = all keys
    label: str  # agent or "reject"


class _Rule(NamedTuple):
    pos: int
    name: str | None
    conds: tuple[_Cond, ...]
    target: _Target


class _Problem(Exception):
    """Internal: a rule-level config problem (field, message)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


# --------------------------------------------------------------------------- condition compiler


def _compile_eq(where: str, arg: Any) -> tuple[Callable[[Any], bool], str, str, frozenset[Any]]:
    if not isinstance(arg, _SCALARS):
        raise _Problem(
            where,
            f"expected a string, number, boolean or null, got {json_type_name(arg)}"
            + ("; for a list of alternatives write {in: [...]}" if isinstance(arg, list) else ""),
        )
    if isinstance(arg, float) and not math.isfinite(arg):
        raise _Problem(where, "numbers must be finite")
    pred: Callable[[Any], bool]
    if isinstance(arg, str):
        exp_s = str(arg)

        def pred(v: Any) -> bool:
            return bool(v == exp_s)

    elif isinstance(arg, bool) or arg is None:
        exp_o = arg

        def pred(v: Any) -> bool:
            return v is exp_o

    else:
        key = _index_key(arg)

        def pred(v: Any) -> bool:
            return _is_number(v) and bool(_index_key(v) == key)

    return pred, "==", _render(arg), frozenset({_index_key(arg)})


def _compile_in(where: str, arg: Any) -> tuple[Callable[[Any], bool], str, str, frozenset[Any]]:
    if not isinstance(arg, list) or not arg:
        raise _Problem(where, "expected a non-empty list of strings, numbers, booleans or nulls")
    for item in arg:
        if not isinstance(item, _SCALARS):
            raise _Problem(where, f"list items must be scalars, got {json_type_name(item)}")
        if isinstance(item, float) and not math.isfinite(item):
            raise _Problem(where, "numbers must be finite")
    keys = frozenset(_index_key(item) for item in arg)

    def pred(v: Any) -> bool:
        return (v if type(v) is str else _index_key(v)) in keys

    return pred, "in", _render(arg), keys


def _compile_op(where: str, op: str, arg: Any) -> tuple[Callable[[Any], bool], str, str]:
    """Compile one non-indexable operator (or eq/in, dropping the index keys)."""
    if op == "eq":
        pred, sym, exp, _ = _compile_eq(where, arg)
        return pred, sym, exp
    if op == "in":
        pred, sym, exp, _ = _compile_in(where, arg)
        return pred, sym, exp
    if op == "exists":
        if not isinstance(arg, bool):
            raise _Problem(where, "expected true or false")
        want = arg

        def pred_exists(v: Any) -> bool:
            return (v is not _MISSING) is want

        return pred_exists, "exists", _render(arg)
    if op == "prefix":
        prefixes = [arg] if isinstance(arg, str) else arg
        if (
            not isinstance(prefixes, list)
            or not prefixes
            or not all(isinstance(p, str) and p for p in prefixes)
        ):
            raise _Problem(where, "expected a non-empty string or a list of non-empty strings")
        tup = tuple(prefixes)

        def pred_prefix(v: Any) -> bool:
            return isinstance(v, str) and v.startswith(tup)

        return pred_prefix, "prefix", _render(arg)
    if op == "regex":
        if not isinstance(arg, str) or not arg:
            raise _Problem(where, "expected a non-empty regular expression string")
        try:
            rx = re.compile(arg)
        except re.error as exc:
            raise _Problem(where, f"invalid regular expression: {exc}") from None
        search = rx.search

        def pred_regex(v: Any) -> bool:
            return isinstance(v, str) and search(v) is not None

        return pred_regex, "regex", _render(arg)
    if op in _NUMERIC_OPS:
        if not _is_number(arg) or not math.isfinite(arg):
            raise _Problem(where, "expected a finite number (booleans are not numbers)")
        sym, cmp = _NUMERIC_OPS[op]
        bound = arg

        def pred_num(v: Any) -> bool:
            return _is_number(v) and cmp(v, bound)

        return pred_num, sym, _render(arg)
    if op == "not":
        if isinstance(arg, Mapping):
            inner = _compile_spec(where, arg)
            preds = tuple(p for p, _, _ in inner)
            text = " and ".join(f"{s} {e}" for _, s, e in inner)

            def pred_not(v: Any) -> bool:
                return any(not p(v) for p in preds)

            return pred_not, "not", f"({text})"
        p1, s1, e1, _ = _compile_eq(where, arg)

        def pred_not_eq(v: Any) -> bool:
            return not p1(v)

        return pred_not_eq, "not", f"({s1} {e1})"
    raise _Problem(
        where,
        f"unknown operator {op!r}; use one of: {', '.join(_OPERATORS)} "
        "(nested fields take a dotted path, e.g. 'caller.tier: vip')",
    )


def _compile_spec(
    where: str, spec: Mapping[Any, Any]
) -> list[tuple[Callable[[Any], bool], str, str]]:
    if not spec:
        raise _Problem(where, f"empty condition; use a value or one of: {', '.join(_OPERATORS)}")
    out = []
    for op, arg in spec.items():
        if not isinstance(op, str):
            raise _Problem(where, "operator names must be strings")
        out.append(_compile_op(f"{where}.{op}", op, arg))
    return out


def _make_check(parts: tuple[str, ...], pred: Callable[[Any], bool]) -> Callable[[Any], bool]:
    if len(parts) == 1:
        key = parts[0]
        missing = _MISSING

        def check_top(md: Any) -> bool:
            return pred(md.get(key, missing))

        return check_top

    def check_nested(md: Any) -> bool:
        return pred(_lookup(md, parts))

    return check_nested


def _fused_check(
    parts: tuple[str, ...], op: str, arg: Any, pred: Callable[[Any], bool]
) -> Callable[[Any], bool]:
    """``pred(lookup(md))`` in one frame for the common top-level operators.

    Semantics are exactly ``pred``'s: :meth:`MetadataRouter.explain` evaluates
    ``pred`` directly and the hypothesis test checks both agree. This only saves
    a Python call per condition on the hot path.
    """
    if len(parts) != 1:
        return _make_check(parts, pred)
    key = parts[0]
    missing = _MISSING
    if op == "eq" and type(arg) is str:
        expected = arg

        def check_eq(md: Any) -> bool:
            return bool(md.get(key, missing) == expected)

        return check_eq
    if op == "in":
        keys = frozenset(_index_key(item) for item in arg)

        def check_in(md: Any) -> bool:
            v = md.get(key, missing)
            return (v if type(v) is str else _index_key(v)) in keys

        return check_in
    if op == "exists":
        want = bool(arg)

        def check_exists(md: Any) -> bool:
            return (md.get(key, missing) is not missing) is want

        return check_exists
    return _make_check(parts, pred)


def _compile_when(when: Mapping[str, Any]) -> tuple[_Cond, ...]:
    conds: list[_Cond] = []
    for path, spec in when.items():
        where = f"when.{path}"
        if not isinstance(path, str):
            raise _Problem("when", "field paths must be strings")
        try:
            parts = _split_path(path)
        except ValueError as exc:
            raise _Problem(where, str(exc)) from None
        if isinstance(spec, Mapping):
            if not spec:
                raise _Problem(
                    where, f"empty condition; use a value or one of: {', '.join(_OPERATORS)}"
                )
            for op, arg in spec.items():
                if not isinstance(op, str):
                    raise _Problem(where, "operator names must be strings")
                keys: frozenset[Any] | None = None
                if op == "eq":
                    pred, sym, exp, keys = _compile_eq(f"{where}.eq", arg)
                elif op == "in":
                    pred, sym, exp, keys = _compile_in(f"{where}.in", arg)
                else:
                    pred, sym, exp = _compile_op(f"{where}.{op}", op, arg)
                check = _fused_check(parts, op, arg, pred)
                conds.append(_Cond(path, parts, sym, exp, pred, check, keys))
        else:
            pred, sym, exp, keys = _compile_eq(where, spec)
            check = _fused_check(parts, "eq", spec, pred)
            conds.append(_Cond(path, parts, sym, exp, pred, check, keys))
    return tuple(conds)


# --------------------------------------------------------------------------- loading helpers


def _rule_label(index: int, raw: Any) -> str:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    if isinstance(name, str) and name:
        return f"rule {name!r} (rules[{index}])"
    return f"rule rules[{index}]"


def _pydantic_problems(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        parts.append(f"field {loc!r}: {msg}" if loc else msg)
    return "; ".join(parts)


# --------------------------------------------------------------------------- the router


class MetadataRouter:
    """Ordered, first-match-wins routing rules with an optional default.

    Build one with :meth:`from_file`, :meth:`from_dict`, :meth:`from_yaml`,
    :meth:`from_json` or :meth:`from_toml`; the rule syntax is described in the
    module docstring. A router is immutable and safe to share between tasks.

    Example::

        router = MetadataRouter.from_file("rules.yaml")
        route = router.route({"department": "support", "language": "es"})
        route.agent        # "support-es"
    """

    __slots__ = (
        "_agents",
        "_default",
        "_find",
        "_index_paths",
        "_indexed",
        "_rest",
        "_rules",
        "_scan_checks",
        "_source",
        "_targets",
        "_unindexed",
        "_worker",
    )

    def __init__(
        self,
        rules: Sequence[Mapping[str, Any]] = (),
        *,
        default: str | Mapping[str, Any] | None = None,
        worker: str | None = None,
        index: bool = True,
        source: str | None = None,
    ) -> None:
        """Compile a rule set.

        Args:
            rules: The ordered rule mappings (see the module docstring).
            default: An agent name, ``"reject"``, a target mapping, or ``None`` (no
                default: no match raises :class:`NoRouteMatched`).
            worker: The registered agent_name of the one worker that hosts every
                agent (overrides a ``worker`` key of the rule set); per-rule
                ``worker`` still wins.
            index: Index equality/``in`` conditions (default). ``False`` scans every
                rule linearly; the results are identical, only the cost differs.
            source: Where the rules came from, for error messages (e.g. a path).

        Raises:
            ConfigError: Any problem in the rules, naming the rule and the field.
        """
        prefix = f"rules {source}: " if source else "rules: "
        self._source = source
        if worker is not None and (not isinstance(worker, str) or not worker.strip()):
            raise ConfigError(f"{prefix}field 'worker': must be a non-empty name")
        self._worker = worker
        if isinstance(rules, (str, bytes)) or not isinstance(rules, Sequence):
            raise ConfigError(f"{prefix}field 'rules': must be a list of rule mappings")

        compiled: list[_Rule] = []
        names: dict[str, int] = {}
        agents: set[str] = set()
        for i, raw in enumerate(rules):
            label = _rule_label(i, raw)
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{prefix}{label}: must be a mapping, got {type(raw).__name__}")
            try:
                spec = _RuleSpec.model_validate(dict(raw))
                _check_target(spec)
                conds = _compile_when(spec.when)
            except ValidationError as exc:
                raise ConfigError(f"{prefix}{label}: {_pydantic_problems(exc)}") from None
            except _Problem as exc:
                raise ConfigError(f"{prefix}{label}: field {exc.where!r}: {exc.message}") from None
            if spec.name is not None:
                if spec.name in names:
                    raise ConfigError(
                        f"{prefix}{label}: field 'name': duplicate rule name "
                        f"(also rules[{names[spec.name]}])"
                    )
                names[spec.name] = i
            if spec.agent:
                agents.add(spec.agent)
            target = self._make_target(spec, rule=spec.name, rule_index=i, is_default=False)
            compiled.append(_Rule(i, spec.name, conds, target))

        self._default: _Target | None = None
        if default is not None:
            try:
                if isinstance(default, str):
                    dspec = (
                        _TargetSpec(reject=True)
                        if default == "reject"
                        else _TargetSpec.model_validate({"agent": default})
                    )
                elif isinstance(default, Mapping):
                    dspec = _TargetSpec.model_validate(dict(default))
                else:
                    raise ConfigError(
                        f"{prefix}field 'default': must be an agent name, 'reject' or a "
                        f"target mapping, got {type(default).__name__}"
                    )
                _check_target(dspec)
            except ValidationError as exc:
                raise ConfigError(f"{prefix}default: {_pydantic_problems(exc)}") from None
            except _Problem as exc:
                raise ConfigError(f"{prefix}default: field {exc.where!r}: {exc.message}") from None
            if dspec.agent:
                agents.add(dspec.agent)
            self._default = self._make_target(dspec, rule=None, rule_index=None, is_default=True)
        if not compiled and self._default is None:
            raise ConfigError(
                f"{prefix}the rule set has no rules and no default; it routes nothing"
            )

        self._rules = tuple(compiled)
        self._targets = tuple(r.target for r in compiled)
        self._agents = frozenset(agents)
        self._scan_checks = tuple(tuple(c.check for c in r.conds) for r in compiled)
        self._build_index()
        self._indexed = index
        self._find: Callable[[Any], int] = self._find_indexed if index else self._find_scan

    def _make_target(
        self, spec: _TargetSpec, *, rule: str | None, rule_index: int | None, is_default: bool
    ) -> _Target:
        if spec.reject:
            agent = agent_name = ""
        else:
            agent = spec.agent or ""
            agent_name = spec.worker or self._worker or agent
        jm = spec.job_metadata
        keys = None if jm == "all" else () if jm == "none" else tuple(_split_path(k) for k in jm)
        template: dict[str, Any] = {
            "agent": agent,
            "agent_name": agent_name,
            "rule": rule,
            "rule_index": rule_index,
            "attributes": MappingProxyType(dict(spec.attributes))
            if spec.attributes
            else _NO_ATTRIBUTES,
        }
        # Fields at their dataclass default are read from the class; leaving them
        # out keeps the per-decision copy small.
        if spec.deployment is not None:
            template["deployment"] = spec.deployment
        if spec.reject:
            template["rejected"] = True
        if is_default:
            template["is_default"] = True
        return _Target(template, keys, agent if agent else "reject")

    def _build_index(self) -> None:
        # Each rule is indexed by one equality/`in` condition at most; prefer the path
        # most rules can be indexed by, so a decision looks up few paths.
        freq: dict[str, int] = {}
        for r in self._rules:
            for p in {c.path for c in r.conds if c.keys is not None}:
                freq[p] = freq.get(p, 0) + 1
        buckets: dict[str, dict[Any, list[int]]] = {}
        parts_of: dict[str, tuple[str, ...]] = {}
        unindexed: list[int] = []
        rest: list[tuple[Callable[[Any], bool], ...]] = []
        for r in self._rules:
            best: _Cond | None = None
            for c in r.conds:
                if c.keys is not None and (best is None or freq[c.path] > freq[best.path]):
                    best = c
            if best is None or best.keys is None:
                unindexed.append(r.pos)
                rest.append(tuple(c.check for c in r.conds))
                continue
            parts_of[best.path] = best.parts
            table = buckets.setdefault(best.path, {})
            for key in best.keys:
                table.setdefault(key, []).append(r.pos)
            rest.append(tuple(c.check for c in r.conds if c is not best))
        self._index_paths = tuple(
            (
                parts_of[p][0] if len(parts_of[p]) == 1 else None,
                parts_of[p],
                {k: tuple(sorted({*v, *unindexed})) for k, v in table.items()},
            )
            for p, table in buckets.items()
        )
        self._unindexed = tuple(unindexed)
        self._rest = tuple(rest)

    # ----------------------------------------------------------------- constructors

    @classmethod
    def from_dict(
        cls,
        config: Mapping[str, Any],
        *,
        worker: str | None = None,
        index: bool = True,
        source: str | None = None,
    ) -> MetadataRouter:
        """Build a router from a mapping ``{rules: [...], default: ..., worker: ...}``.

        Args:
            config: The rule set.
            worker: Overrides the rule set's ``worker`` (see :class:`MetadataRouter`).
            index: Index equality conditions (default) or scan linearly.
            source: Where the mapping came from, for error messages.

        Raises:
            ConfigError: The rule set is invalid (the message names rule and field).
        """
        prefix = f"rules {source}: " if source else "rules: "
        if not isinstance(config, Mapping):
            raise ConfigError(
                f"{prefix}the rule set must be a mapping with 'rules' and/or 'default', "
                f"got {json_type_name(config)}"
            )
        unknown = sorted(str(k) for k in config if k not in _TOP_LEVEL_KEYS)
        if unknown:
            raise ConfigError(
                f"{prefix}unknown top-level field(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(_TOP_LEVEL_KEYS)}"
            )
        rules = config.get("rules", [])
        if rules is None:
            rules = []
        if not isinstance(rules, list):
            raise ConfigError(f"{prefix}field 'rules': must be a list of rule mappings")
        file_worker = config.get("worker")
        if file_worker is not None and not isinstance(file_worker, str):
            raise ConfigError(f"{prefix}field 'worker': must be a non-empty name")
        return cls(
            rules,
            default=config.get("default"),
            worker=worker if worker is not None else file_worker,
            index=index,
            source=source,
        )

    @classmethod
    def from_yaml(
        cls, text: str, *, worker: str | None = None, index: bool = True, source: str | None = None
    ) -> MetadataRouter:
        """Build a router from YAML text (YAML 1.2 scalars; see :mod:`..loader`)."""
        data = load_text(text, "yaml", source or "<yaml>")
        return cls.from_dict(data, worker=worker, index=index, source=source)

    @classmethod
    def from_json(
        cls, text: str, *, worker: str | None = None, index: bool = True, source: str | None = None
    ) -> MetadataRouter:
        """Build a router from JSON text (duplicate keys and NaN refused)."""
        data = load_text(text, "json", source or "<json>")
        return cls.from_dict(data, worker=worker, index=index, source=source)

    @classmethod
    def from_toml(
        cls, text: str, *, worker: str | None = None, index: bool = True, source: str | None = None
    ) -> MetadataRouter:
        """Build a router from TOML text (``[[rules]]`` tables; dates refused)."""
        data = load_text(text, "toml", source or "<toml>")
        return cls.from_dict(data, worker=worker, index=index, source=source)

    @classmethod
    def from_file(
        cls, path: str | Path, *, worker: str | None = None, index: bool = True
    ) -> MetadataRouter:
        """Load rules from a ``.yaml``/``.yml``, ``.toml`` or ``.json`` file.

        Raises:
            ConfigError: The file cannot be read, has an unknown extension, does not
                parse, or holds an invalid rule set.
        """
        data = load_file(path)
        return cls.from_dict(data, worker=worker, index=index, source=repr(str(path)))

    # ----------------------------------------------------------------- introspection

    @property
    def agents(self) -> frozenset[str]:
        """Every agent a rule or the default can route to (for checking factories)."""
        return self._agents

    @property
    def agent_names(self) -> frozenset[str]:
        """Every LiveKit agent_name a route can dispatch to."""
        names = {r.target.template["agent_name"] for r in self._rules}
        if self._default is not None:
            names.add(self._default.template["agent_name"])
        names.discard("")
        return frozenset(names)

    @property
    def has_default(self) -> bool:
        """Whether the rule set has a ``default`` (so :meth:`route` never raises)."""
        return self._default is not None

    def __len__(self) -> int:
        return len(self._rules)

    def __repr__(self) -> str:
        default = self._default.label if self._default is not None else None
        return (
            f"MetadataRouter(rules={len(self._rules)}, default={default!r}, "
            f"indexed={self._indexed}, source={self._source})"
        )

    # ----------------------------------------------------------------- routing

    def _find_scan(self, md: Any) -> int:
        for i, checks in enumerate(self._scan_checks):
            for check in checks:
                if not check(md):
                    break
            else:
                return i
        return -1

    def _find_indexed(self, md: Any) -> int:
        hit: tuple[int, ...] | None = None
        many: set[int] | None = None
        for key, parts, table in self._index_paths:
            if key is not None:
                v = md.get(key, _MISSING)
            else:
                v = md
                for seg in parts:
                    if type(v) is not dict and not isinstance(v, Mapping):
                        v = _MISSING
                        break
                    v = v.get(seg, _MISSING)
                    if v is _MISSING:
                        break
            if v is _MISSING:
                continue
            bucket = table.get(v if type(v) is str else _index_key(v))
            if bucket is not None:
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
            for check in rest[i]:
                if not check(md):
                    break
            else:
                return i
        return -1

    def match_index(self, metadata: Mapping[str, Any]) -> int | None:
        """The index of the first rule that matches ``metadata``, or ``None``."""
        if type(metadata) is not dict and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, not {type(metadata).__name__}")
        i = self._find(metadata)
        return None if i < 0 else i

    def route(self, metadata: Mapping[str, Any]) -> Route:
        """Route one metadata mapping.

        Args:
            metadata: The parsed metadata (e.g. from ``parse_metadata``).

        Returns:
            The :class:`Route` of the first matching rule, or of the default. A
            ``Route`` with ``rejected=True`` means the rules refuse this metadata.

        Raises:
            NoRouteMatched: No rule matched and there is no default.
            TypeError: ``metadata`` is not a mapping.
        """
        if type(metadata) is not dict and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, not {type(metadata).__name__}")
        i = self._find(metadata)
        if i >= 0:
            target = self._targets[i]
        elif self._default is not None:
            target = self._default
        else:
            raise self._no_match(metadata)
        # A frozen dataclass's __init__ pays object.__setattr__ per field (~1 µs);
        # installing a ready __dict__ builds the same object several times faster.
        d = target.template.copy()
        keys = target.keys
        if keys is None:
            d["metadata"] = dict(metadata)
        else:
            d["metadata"] = _select_keys(metadata, keys) if keys else {}
        route = _new(Route)
        _setattr(route, "__dict__", d)
        return route

    def accepts(self, metadata: Mapping[str, Any], agent_name: str) -> bool:
        """Whether ``metadata`` routes to the worker registered as ``agent_name``.

        False for a ``reject`` route and when nothing matches (no default).
        """
        try:
            route = self.route(metadata)
        except NoRouteMatched:
            return False
        return not route.rejected and route.agent_name == agent_name

    def _no_match(self, metadata: Mapping[str, Any]) -> NoRouteMatched:
        keys = sorted(str(k) for k in metadata)
        shown = ", ".join(repr(k) for k in keys[:20]) + (", ..." if len(keys) > 20 else "")
        return NoRouteMatched(
            f"no routing rule matched ({len(self._rules)} rules; metadata keys: "
            f"[{shown}]) and the rule set has no default; add a catch-all rule or "
            "'default: <agent>' / 'default: reject'"
        )

    def explain(self, metadata: Mapping[str, Any]) -> list[RuleTrace]:
        """Every rule with its verdict, for operators (``lk-metadata route --explain``).

        Each entry names the first condition that failed (path, operator, the rule's
        expected value and the JSON *type* found, never the metadata's value) and
        marks the entry that decided the route. The default, if any, is the last entry.
        """
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, not {type(metadata).__name__}")
        trace: list[RuleTrace] = []
        chosen = False
        for r in self._rules:
            failed: ConditionFailure | None = None
            for c in r.conds:
                # pred(lookup) is the reference evaluation; the fused checks used by
                # route() must agree with it (proven by the hypothesis test).
                v = _lookup(metadata, c.parts)
                if not c.pred(v):
                    found = "missing" if v is _MISSING else json_type_name(v)
                    failed = ConditionFailure(c.path, c.op, c.expected, found)
                    break
            matched = failed is None
            selected = matched and not chosen
            chosen = chosen or matched
            trace.append(RuleTrace(r.pos, r.name, r.target.label, matched, selected, failed))
        if self._default is not None:
            trace.append(RuleTrace(None, None, self._default.label, True, not chosen))
        return trace

    # ----------------------------------------------------------------- job requests

    async def route_job_request(
        self,
        req: JobRequest,
        *,
        agent_name: str | None = None,
        metadata_from: MetadataSource = "job",
        max_bytes: int = DEFAULT_MAX_METADATA_BYTES,
        publish_route: bool = False,
    ) -> Route | None:
        """Answer a job request: accept it if its metadata routes to this worker.

        The job is accepted when the route's ``agent_name`` equals ``agent_name``
        (default: the name the job was dispatched to, ``req.agent_name``, i.e. this
        worker's registered name). Otherwise, and for invalid metadata, no match or
        a ``reject`` route, it is rejected with ``terminate=False`` so the server can
        offer it to another worker. Logs carry the job id, keys and sizes only.

        Args:
            req: The ``JobRequest`` given to ``on_request``.
            agent_name: This worker's agent_name (default ``req.agent_name``).
            metadata_from: ``"job"`` (``req.job.metadata``, default), ``"room"``
                (``req.room.metadata``) or a callable ``(req) -> str | bytes | Mapping | None``.
            max_bytes: Size limit for the metadata string.
            publish_route: Accept with agent-participant attributes ``route`` and
                ``route.rule`` set to the decision.

        Returns:
            The route if the job was accepted, else ``None``.
        """
        if metadata_from not in ("job", "room") and not callable(metadata_from):
            raise ValueError("metadata_from must be 'job', 'room' or a callable")
        me = agent_name if agent_name is not None else req.agent_name
        raw: Any = None
        try:
            if metadata_from == "job":
                raw = req.job.metadata
            elif metadata_from == "room":
                raw = req.room.metadata
            else:
                raw = metadata_from(req)
            md = dict(raw) if isinstance(raw, Mapping) else parse_metadata(raw, max_bytes=max_bytes)
        except MetadataError as exc:
            size = len(raw.encode("utf-8", "replace")) if isinstance(raw, str) else None
            logger.warning(
                "job %s: rejecting (terminate=False): invalid metadata (%s, %s bytes)",
                req.id,
                type(exc).__name__,
                size,
            )
            await req.reject(terminate=False)
            return None
        except Exception as exc:
            logger.warning(
                "job %s: rejecting (terminate=False): metadata_from failed (%s)",
                req.id,
                type(exc).__name__,
            )
            await req.reject(terminate=False)
            return None
        try:
            route = self.route(md)
        except NoRouteMatched:
            logger.info(
                "job %s: rejecting (terminate=False): no rule matched (keys %s)",
                req.id,
                sorted(md)[:20],
            )
            await req.reject(terminate=False)
            return None
        if route.rejected or route.agent_name != me:
            logger.info(
                "job %s: rejecting (terminate=False): routed to %s by %s, this worker is %r",
                req.id,
                "reject" if route.rejected else repr(route.agent_name),
                route.label,
                me,
            )
            await req.reject(terminate=False)
            return None
        attrs = {"route": route.agent, "route.rule": route.label} if publish_route else None
        logger.info("job %s: accepting: agent %r by %s", req.id, route.agent, route.label)
        await req.accept(attributes=attrs)
        return route

    def request_handler(
        self,
        agent_name: str | None = None,
        *,
        metadata_from: MetadataSource = "job",
        max_bytes: int = DEFAULT_MAX_METADATA_BYTES,
        publish_route: bool = False,
    ) -> Callable[[JobRequest], Awaitable[None]]:
        """A ready ``on_request`` handler for ``AgentServer.rtc_session(on_request=...)``.

        See :meth:`route_job_request` for the decision and the arguments.

        Example::

            @server.rtc_session(agent_name="support", on_request=router.request_handler())
            async def entrypoint(ctx: JobContext) -> None: ...
        """
        if agent_name is not None and (not isinstance(agent_name, str) or not agent_name):
            raise ValueError("agent_name must be a non-empty string or None")
        if metadata_from not in ("job", "room") and not callable(metadata_from):
            raise ValueError("metadata_from must be 'job', 'room' or a callable")

        async def on_request(req: JobRequest) -> None:
            await self.route_job_request(
                req,
                agent_name=agent_name,
                metadata_from=metadata_from,
                max_bytes=max_bytes,
                publish_route=publish_route,
            )

        return on_request

    # ----------------------------------------------------------------- entrypoint

    def select(
        self,
        metadata: Mapping[str, Any] | str | bytes | None,
        factories: Mapping[str, AgentFactory],
        *,
        fallback: str | None = None,
        max_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    ) -> Selection:
        """Route ``metadata`` and build the Agent for the route.

        Args:
            metadata: A parsed mapping, or a raw metadata string (parsed with
                ``parse_metadata``; ``None``/``""`` mean ``{}``).
            factories: Agent factories by agent name: an ``Agent`` subclass (called
                with no arguments) or a callable ``(route) -> Agent``.
            fallback: An agent name in ``factories`` used when the metadata is
                invalid, nothing matches, the route is ``reject`` or names an agent
                without a factory. Without it those cases raise.
            max_bytes: Size limit for a raw metadata string.

        Returns:
            ``Selection(route, agent)``; the agent remembers its route (:func:`route_of`).

        Raises:
            MetadataError: Invalid raw metadata and no fallback.
            NoRouteMatched: No match, no default and no fallback.
            RoutingError: The route is ``reject`` and there is no fallback.
            ConfigError: No factory for the routed agent (or the fallback) and no fallback.
        """
        if fallback is not None and fallback not in factories:
            raise ConfigError(f"fallback agent {fallback!r} has no factory")
        md: Mapping[str, Any] = {}
        route: Route | None = None
        try:
            md = (
                metadata
                if isinstance(metadata, Mapping)
                else parse_metadata(metadata, max_bytes=max_bytes)
            )
            route = self.route(md)
            if route.rejected:
                raise RoutingError(f"the routing rules reject this metadata ({route.label})")
            if route.agent not in factories:
                raise ConfigError(
                    f"no Agent factory for routed agent {route.agent!r} ({route.label}); "
                    f"factories: {sorted(factories)}"
                )
        except (MetadataError, RoutingError, ConfigError) as exc:
            if fallback is None:
                raise
            logger.warning("routing fell back to %r: %s", fallback, type(exc).__name__)
            route = Route(
                agent=fallback,
                agent_name=self._worker or fallback,
                metadata=dict(md),
                is_fallback=True,
            )
        return Selection(route, _build_agent(factories[route.agent], route))


def _check_target(spec: _TargetSpec) -> None:
    if spec.reject:
        extra = sorted(
            f
            for f in ("agent", "worker", "deployment", "attributes", "job_metadata")
            if f in spec.model_fields_set
        )
        if spec.reject and extra:
            raise _Problem(extra[0], "a 'reject: true' target takes no other target fields")
    elif not spec.agent:
        raise _Problem("agent", "missing: name the agent (or use 'reject: true')")


_new = object.__new__
_setattr = object.__setattr__


def _select_keys(md: Mapping[str, Any], keys: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for parts in keys:
        if len(parts) == 1:
            v = md.get(parts[0], _MISSING)
            if v is not _MISSING:
                out[parts[0]] = v
            continue
        v = _lookup(md, parts)
        if v is _MISSING:
            continue
        node = out
        for seg in parts[:-1]:
            nxt = node.get(seg)
            if not isinstance(nxt, dict):
                nxt = node[seg] = {}
            node = nxt
        node[parts[-1]] = v
    return out


_ROUTES: weakref.WeakKeyDictionary[Any, Route] = weakref.WeakKeyDictionary()


def route_of(agent: Agent) -> Route | None:
    """The route an Agent was built for by :meth:`MetadataRouter.select`, if any."""
    try:
        return _ROUTES.get(agent)
    except TypeError:
        return None


def _build_agent(factory: AgentFactory, route: Route) -> Agent:
    from livekit.agents import Agent

    agent = factory() if isinstance(factory, type) else factory(route)
    if not isinstance(agent, Agent):
        raise TypeError(
            f"the factory for agent {route.agent!r} returned {type(agent).__name__}, not an Agent"
        )
    with contextlib.suppress(TypeError):  # an Agent subclass without weakref support
        _ROUTES[agent] = route
    return agent


class AgentFactoryMap:
    """Agent factories by agent name, checked against a router at construction.

    One worker can serve several agents (LiveKit allows one ``rtc_session`` per
    server): route inside the entrypoint and start the Agent this map builds.

    Example::

        agents = AgentFactoryMap(router, {"support": SupportAgent, "sales": SalesAgent},
                                 fallback="support")
        route, agent = agents.select(ctx.job.metadata)
        await session.start(agent, room=ctx.room)
    """

    __slots__ = ("_factories", "_fallback", "_router")

    def __init__(
        self,
        router: MetadataRouter,
        factories: Mapping[str, AgentFactory],
        *,
        fallback: str | None = None,
    ) -> None:
        """Check that every agent the router can choose has a factory.

        Raises:
            ConfigError: An agent has no factory, or ``fallback`` is not a key.
            TypeError: A factory is neither an Agent subclass nor callable.
        """
        self._router = router
        self._factories = dict(factories)
        for name, factory in self._factories.items():
            if not callable(factory):
                raise TypeError(f"factory for agent {name!r} must be an Agent subclass or callable")
        missing = sorted(router.agents - self._factories.keys())
        if missing:
            raise ConfigError(f"no Agent factory for routed agent(s): {', '.join(missing)}")
        if fallback is not None and fallback not in self._factories:
            raise ConfigError(f"fallback agent {fallback!r} has no factory")
        self._fallback = fallback

    @property
    def router(self) -> MetadataRouter:
        """The router this map selects with."""
        return self._router

    @property
    def factories(self) -> Mapping[str, AgentFactory]:
        """The factories by agent name."""
        return self._factories

    def select(self, metadata: Mapping[str, Any] | str | bytes | None) -> Selection:
        """Route ``metadata`` and build its Agent (see :meth:`MetadataRouter.select`)."""
        return self._router.select(metadata, self._factories, fallback=self._fallback)

    def reroute(self, session: AgentSession[Any], metadata: Mapping[str, Any]) -> bool:
        """Hand off to a new Agent if ``metadata`` now routes elsewhere (see :func:`reroute`)."""
        return reroute(session, self._router, self._factories, metadata)


def reroute(
    session: AgentSession[Any],
    router: MetadataRouter,
    factories: Mapping[str, AgentFactory],
    metadata: Mapping[str, Any],
) -> bool:
    """Re-route a running session after its metadata changed.

    If ``metadata`` routes to a different agent than the session's current one,
    build the new Agent and hand off with ``session.update_agent``. Invalid
    routing (no match, ``reject``, an agent without a factory) keeps the current
    agent and is logged (keys and rule names only).

    Returns:
        True if the session was handed to a new Agent.
    """
    try:
        route = router.route(metadata)
    except NoRouteMatched:
        logger.info("reroute: no rule matched; keeping the current agent")
        return False
    if route.rejected or route.agent not in factories:
        logger.info(
            "reroute: route %s (%s) has no agent to hand off to; keeping the current agent",
            route.label,
            "reject" if route.rejected else repr(route.agent),
        )
        return False
    current = session.current_agent
    current_route = route_of(current)
    factory = factories[route.agent]
    if current_route is not None:
        if current_route.agent == route.agent:
            return False
    elif isinstance(factory, type) and type(current) is factory:
        return False
    agent = _build_agent(factory, route)
    logger.info("reroute: handing off to agent %r (%s)", route.agent, route.label)
    session.update_agent(agent)
    return True


# --------------------------------------------------------------------------- formatting


def route_summary(route: Route) -> dict[str, Any]:
    """A JSON-able summary of a route for CLIs and logs: metadata *keys* only."""
    return {
        "agent": route.agent or None,
        "agent_name": route.agent_name or None,
        "rule": route.label,
        "rule_index": route.rule_index,
        "rejected": route.rejected,
        "default": route.is_default,
        "deployment": route.deployment,
        "attributes": dict(route.attributes),
        "job_metadata_keys": sorted(route.metadata),
    }


def format_route(route: Route) -> str:
    """Human-readable route for ``lk-metadata route`` (job metadata keys, never values)."""
    if route.rejected:
        lines = [f"reject       (by {route.label})"]
    else:
        lines = [f"agent:       {route.agent}"]
        if route.agent_name != route.agent:
            lines.append(f"agent_name:  {route.agent_name}")
        lines.append(f"rule:        {route.label}")
        if route.deployment:
            lines.append(f"deployment:  {route.deployment}")
        if route.attributes:
            attrs = ", ".join(f"{k}={v}" for k, v in sorted(route.attributes.items()))
            lines.append(f"attributes:  {attrs}")
        keys = ", ".join(sorted(route.metadata)) or "(none)"
        lines.append(f"job keys:    {keys}")
    return "\n".join(lines)


def format_explain(trace: Sequence[RuleTrace]) -> str:
    """Human-readable :meth:`MetadataRouter.explain` trace, one line per rule."""
    if not trace:
        return "(no rules)"
    labels = [t.label for t in trace]
    width = max(len(label) for label in labels)
    twidth = max(len(t.target) for t in trace)
    lines = []
    for t, label in zip(trace, labels, strict=True):
        head = f"{label.ljust(width)}  -> {t.target.ljust(twidth)}"
        if t.selected:
            verdict = "SELECTED" if t.index is not None else "SELECTED (no rule matched)"
        elif t.index is None:
            verdict = "not used"
        elif t.matched:
            verdict = "matches (shadowed by an earlier rule)"
        else:
            verdict = f"no: {t.failed}"
        lines.append(f"{head}  {verdict}")
    if not any(t.selected for t in trace):
        lines.append("no rule matched and there is no default: NoRouteMatched")
    return "\n".join(lines)
