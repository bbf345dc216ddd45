"""Rule sets (syntax: ``docs/rules.md``): every field checked and the conditions compiled
once, at load time; anything wrong is a ``ConfigError`` naming the rule and the field."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from ..codec import json_type_name, validate_attributes
from ..errors import ConfigError
from .conditions import Cond, Problem, compile_when, split_path
from .phone import rule_region

__all__ = ["TOP_LEVEL_KEYS", "Rule", "RuleSet", "Target", "rules_from_config"]

TOP_LEVEL_KEYS = ("rules", "default", "worker", "phone_region")


def _name(value: str) -> str:
    if not value or value != value.strip():
        raise ValueError("must be a non-empty name without surrounding whitespace")
    return value


def _job_metadata(value: Any) -> tuple[tuple[str, ...], ...] | None:
    """The paths to send: None for every key ('all'), () for none."""
    if value in ("all", "none"):
        return None if value == "all" else ()
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise ValueError("must be 'all', 'none' or a list of (dotted) key names")
    return tuple(split_path(k) for k in value)


def _rule_name(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value


_Name = Annotated[str, AfterValidator(_name)]


class _TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    agent: _Name | None = None
    reject: bool = False
    worker: _Name | None = None
    deployment: str | None = None
    attributes: Annotated[dict[str, str], AfterValidator(validate_attributes)] = {}
    job_metadata: Annotated[Any, AfterValidator(_job_metadata)] = None  # None: 'all'


class _RuleSpec(_TargetSpec):
    name: Annotated[str, AfterValidator(_rule_name)] | None = None
    when: dict[str, Any] = {}
    when_attributes: dict[str, Any] = {}


class Target(NamedTuple):
    """Where a rule (or the default) sends metadata: the fields of its :class:`Route`."""

    fields: Mapping[str, Any]  # Route keyword arguments, all but metadata
    keys: tuple[tuple[str, ...], ...] | None  # job_metadata paths; None = every key
    label: str  # the agent, or "reject"
    agent_name: str  # the LiveKit agent_name it dispatches to ("" for reject)


class Rule(NamedTuple):
    """One compiled rule."""

    pos: int
    name: str | None
    conds: tuple[Cond, ...]
    target: Target
    needs_attributes: bool  # the rule has ``when_attributes`` conditions


class RuleSet(NamedTuple):
    """A checked, compiled rule set."""

    rules: tuple[Rule, ...]
    default: Target | None
    worker: str | None
    phone_region: str | None
    agents: frozenset[str]


def _rule_label(index: int, raw: Any) -> str:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    if isinstance(name, str) and name:
        return f"rule {name!r} (rules[{index}])"
    return f"rule rules[{index}]"


@contextmanager
def _config_errors(where: str) -> Iterator[None]:
    """A pydantic ValidationError or a :class:`Problem` as a ConfigError naming ``where``."""
    try:
        yield
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = ".".join(str(p) for p in err["loc"])
            problems.append(f"field {loc!r}: {err['msg']}" if loc else err["msg"])
        raise ConfigError(f"{where}: {'; '.join(problems)}") from None
    except Problem as exc:
        raise ConfigError(f"{where}: field {exc.where!r}: {exc.message}") from None


def _target(spec: _TargetSpec, worker: str | None, rule: str | None, index: int | None) -> Target:
    if spec.reject:
        others = ("agent", "worker", "deployment", "attributes", "job_metadata")
        extra = sorted(f for f in others if f in spec.model_fields_set)
        if extra:
            raise Problem(extra[0], "a 'reject: true' target takes no other target fields")
    elif not spec.agent:
        raise Problem("agent", "missing: name the agent (or use 'reject: true')")
    agent = spec.agent or ""
    agent_name = "" if spec.reject else spec.worker or worker or agent
    fields = {
        "agent": agent,
        "agent_name": agent_name,
        "rule": rule,
        "rule_index": index,
        "deployment": spec.deployment,
        "attributes": MappingProxyType(dict(spec.attributes)),
        "rejected": spec.reject,
        "is_default": index is None,
    }
    return Target(MappingProxyType(fields), spec.job_metadata, agent or "reject", agent_name)


def _compile_rule(i: int, raw: Any, worker: str | None, region: str | None, prefix: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{prefix}{_rule_label(i, raw)}: must be a mapping, got {type(raw).__name__}"
        )
    with _config_errors(prefix + _rule_label(i, raw)):
        spec = _RuleSpec.model_validate(dict(raw))
        target = _target(spec, worker, spec.name, i)
        conds = compile_when(spec.when, source="metadata", region=region)
        conds += compile_when(spec.when_attributes, source="attributes", region=region)
    return Rule(i, spec.name, conds, target, any(c.source == "attributes" for c in conds))


def _compile_default(default: Any, worker: str | None, prefix: str) -> Target:
    if isinstance(default, str):
        default = {"reject": True} if default == "reject" else {"agent": default}
    if not isinstance(default, Mapping):
        raise ConfigError(
            f"{prefix}field 'default': must be an agent name, 'reject' or a "
            f"target mapping, got {type(default).__name__}"
        )
    with _config_errors(prefix + "default"):
        return _target(_TargetSpec.model_validate(dict(default)), worker, None, None)


def rules_from_config(
    config: Any, *, worker: str | None = None, source: str | None = None
) -> RuleSet:
    """Check and compile a rule-set mapping ``{rules, default, worker, phone_region}``
    (``worker`` overrides the mapping's); ConfigError names the rule and field."""
    prefix = f"rules {source}: " if source else "rules: "
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"{prefix}the rule set must be a mapping with 'rules' and/or 'default', "
            f"got {json_type_name(config)}"
        )
    unknown = sorted(str(k) for k in config if k not in TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(
            f"{prefix}unknown top-level field(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(TOP_LEVEL_KEYS)}"
        )
    rules = [] if config.get("rules") is None else config["rules"]
    if not isinstance(rules, list):
        raise ConfigError(f"{prefix}field 'rules': must be a list of rule mappings")
    for name in (worker, config.get("worker")):
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"{prefix}field 'worker': must be a non-empty name")
    worker = worker if worker is not None else config.get("worker")
    region = None
    if config.get("phone_region") is not None:
        try:
            region = rule_region(config["phone_region"])
        except ValueError as exc:
            raise ConfigError(f"{prefix}field 'phone_region': {exc}") from None
    compiled: list[Rule] = []
    names: dict[str, int] = {}
    for i, raw in enumerate(rules):
        rule = _compile_rule(i, raw, worker, region, prefix)
        if rule.name in names:
            raise ConfigError(
                f"{prefix}{_rule_label(i, raw)}: field 'name': duplicate rule name "
                f"(also rules[{names[rule.name]}])"
            )
        if rule.name is not None:
            names[rule.name] = i
        compiled.append(rule)
    default = config.get("default")
    target = None if default is None else _compile_default(default, worker, prefix)
    if not compiled and target is None:
        raise ConfigError(f"{prefix}the rule set has no rules and no default; it routes nothing")
    targets = [r.target for r in compiled] + ([target] if target is not None else [])
    agents = frozenset(t.fields["agent"] for t in targets if t.fields["agent"])
    return RuleSet(tuple(compiled), target, worker, region, agents)
