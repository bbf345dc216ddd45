"""MetadataRouter: rule semantics, loading errors, explain, on_request and entrypoint selection.

The routing table cases pin first-match-wins semantics for every operator; the
hypothesis test proves the indexed router returns exactly what a linear scan
returns; the request-handler tests drive a real ``JobRequest`` whose accept and
reject callbacks record what the handler answered.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from livekit.agents import Agent, AgentSession
from livekit.agents.job import JobContext, JobRequest
from livekit.agents.testing import fake_job_context as _fake_job_context

from livekit.plugins.metadata.agent.requests import request_handler, route_job_request
from livekit.plugins.metadata.agent.selection import AgentFactoryMap, reroute, route_of, select
from livekit.plugins.metadata.errors import (
    ConfigError,
    InvalidMetadataJSON,
    NoRouteMatched,
    RoutingError,
)
from livekit.plugins.metadata.loader import load_text
from livekit.plugins.metadata.routing.conditions import lookup
from livekit.plugins.metadata.routing.formatting import format_explain, format_route, route_summary
from livekit.plugins.metadata.routing.route import Route
from livekit.plugins.metadata.routing.router import MetadataRouter
from tests.job_requests import Recorder, job_request
from tests.strategies import examples

pytestmark = pytest.mark.unit


def yaml_router(text: str, source: str | None = None) -> MetadataRouter:
    """A router from YAML text, read as a rules file is."""
    return MetadataRouter.from_dict(load_text(text, "yaml", source or "<yaml>"), source=source)


def linear_scan(
    router: MetadataRouter, md: dict[str, Any], attrs: dict[str, str] | None = None
) -> int | None:
    """The reference: the first rule whose every condition's predicate holds, rule by rule."""
    for rule in router.rule_set.rules:
        if all(
            c.pred(lookup((attrs or {}) if c.source == "attributes" else md, c.parts))
            for c in rule.conds
        ):
            return rule.pos
    return None


SECRET = "s3cr3t-value-never-logged"


@contextlib.contextmanager
def fake_job_context(*, job_metadata: str = "") -> Iterator[JobContext]:
    """``fake_job_context`` that also removes the JobContext's temporary directory.

    livekit-agents 1.8.9 creates ``JobContext._tempdir`` and only cleans it up on a
    real job shutdown, so a fake job leaks it and GC raises a ResourceWarning
    (an error under ``filterwarnings = error``).
    """
    with _fake_job_context(job_metadata=job_metadata) as ctx:
        try:
            yield ctx
        finally:
            tempdir = getattr(ctx, "_tempdir", None)
            if tempdir is not None:
                tempdir.cleanup()


RULES_YAML = """
rules:
  - name: blocked
    when: {tenant: {in: [banned, suspended]}}
    reject: true
  - name: vip
    when: {caller.tier: vip, caller.id: {exists: true}}
    agent: vip
    attributes: {queue: priority}
  - name: support-es
    when: {department: support, language: {in: [es, es-MX]}}
    agent: support-es
    job_metadata: [department, language, customer]
  - name: support-fr
    when: {department: support, language: fr}
    agent: support-fr
  - name: support-other
    when: {department: support, language: {not: {in: [es, fr]}}}
    agent: support
  - name: sales-eu
    when: {department: sales, phone: {prefix: ["+33", "+34"]}}
    agent: sales-eu
    deployment: staging
  - name: sales
    when: {department: sales}
    agent: sales
  - name: billing-big
    when: {department: billing, amount: {gte: 1000}}
    agent: billing-senior
  - name: billing
    when: {department: billing, amount: {lt: 1000, gt: 0}}
    agent: billing
  - name: email
    when: {email: {regex: '@example\\.com$'}}
    agent: partner
  - name: beta
    when: {beta: true}
    agent: beta
  - name: level-one
    when: {level: 1}
    agent: level-one
  - name: nulls
    when: {flag: null}
    agent: null-flag
  - name: no-language
    when: {language: {exists: false}, department: kids}
    agent: kids
default: general
"""


@pytest.fixture(scope="module")
def router() -> MetadataRouter:
    return yaml_router(RULES_YAML)


ROUTING_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("empty metadata -> default", {}, "general"),
    ("unknown department -> default", {"department": "hr"}, "general"),
    ("spanish support", {"department": "support", "language": "es"}, "support-es"),
    ("mexican spanish support", {"department": "support", "language": "es-MX"}, "support-es"),
    ("french support", {"department": "support", "language": "fr"}, "support-fr"),
    ("english support via not", {"department": "support", "language": "en"}, "support"),
    ("support, language missing (not holds)", {"department": "support"}, "support"),
    ("equality is case-sensitive", {"department": "Support", "language": "es"}, "general"),
    ("vip beats support", {"department": "support", "caller": {"tier": "vip", "id": 1}}, "vip"),
    ("vip needs caller.id", {"caller": {"tier": "vip"}}, "general"),
    ("caller.id null still exists", {"caller": {"tier": "vip", "id": None}}, "vip"),
    ("caller not an object", {"caller": "vip"}, "general"),
    ("blocked tenant rejects first", {"tenant": "banned", "department": "sales"}, "reject"),
    ("suspended tenant", {"tenant": "suspended"}, "reject"),
    ("ok tenant falls through", {"tenant": "acme", "department": "sales"}, "sales"),
    ("sales eu prefix +33", {"department": "sales", "phone": "+33123"}, "sales-eu"),
    ("sales eu prefix +34", {"department": "sales", "phone": "+3499"}, "sales-eu"),
    ("sales non-eu phone", {"department": "sales", "phone": "+1555"}, "sales"),
    ("prefix needs a string", {"department": "sales", "phone": 33123}, "sales"),
    ("billing big (gte boundary)", {"department": "billing", "amount": 1000}, "billing-senior"),
    ("billing big float", {"department": "billing", "amount": 1e6}, "billing-senior"),
    ("billing small", {"department": "billing", "amount": 999.5}, "billing"),
    ("billing zero fails gt", {"department": "billing", "amount": 0}, "general"),
    ("numeric needs a number", {"department": "billing", "amount": "5000"}, "general"),
    ("bool is not a number", {"department": "billing", "amount": True}, "general"),
    ("regex search", {"email": "ana@example.com"}, "partner"),
    ("regex anchored", {"email": "ana@example.com.evil"}, "general"),
    ("regex needs a string", {"email": ["a@example.com"]}, "general"),
    ("bool equality", {"beta": True}, "beta"),
    ("1 is not true", {"beta": 1}, "general"),
    ("true is not 1", {"level": True}, "general"),
    ("1.0 equals 1", {"level": 1.0}, "level-one"),
    ("'1' is not 1", {"level": "1"}, "general"),
    ("null equality", {"flag": None}, "null-flag"),
    ("missing is not null", {"flag": False}, "general"),
    ("exists false", {"department": "kids"}, "kids"),
    ("exists false fails when present", {"department": "kids", "language": "en"}, "general"),
    ("unhashable value never matches eq", {"department": {"x": 1}}, "general"),
    ("list value never matches in", {"tenant": ["banned"]}, "general"),
]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [pytest.param(md, exp, id=name) for name, md, exp in ROUTING_CASES],
)
def test_routing_table(router: MetadataRouter, metadata: dict[str, Any], expected: str) -> None:
    route = router.route(metadata)
    assert ("reject" if route.rejected else route.agent) == expected
    assert route.rule_index == linear_scan(router, metadata)


def test_at_least_thirty_routing_cases() -> None:
    assert len(ROUTING_CASES) >= 30


def test_route_fields_for_a_rule(router: MetadataRouter) -> None:
    md = {"department": "support", "language": "es", "customer": "c1", "secret": SECRET}
    route = router.route(md)
    assert route.agent == route.agent_name == "support-es"
    assert route.rule == "support-es"
    assert route.rule_index == 2
    assert route.label == "support-es"
    assert route.metadata == {"department": "support", "language": "es", "customer": "c1"}
    assert not route.rejected
    assert not route.is_default
    assert SECRET not in repr(route)
    assert SECRET not in format_route(route)


def test_route_deployment_attributes_and_default(router: MetadataRouter) -> None:
    eu = router.route({"department": "sales", "phone": "+33"})
    assert eu.deployment == "staging"
    vip = router.route({"caller": {"tier": "vip", "id": 2}})
    assert vip.attributes == {"queue": "priority"}
    with pytest.raises(TypeError):
        vip.attributes["queue"] = "changed"  # type: ignore[index]
    assert router.route({"caller": {"tier": "vip", "id": 2}}).attributes == {"queue": "priority"}
    default = router.route({"x": 1})
    assert default.is_default
    assert default.label == "default"
    assert default.rule_index is None
    assert default.metadata == {"x": 1}


def test_reject_route(router: MetadataRouter) -> None:
    route = router.route({"tenant": "banned"})
    assert route.rejected
    assert route.agent == route.agent_name == ""
    assert route.label == "blocked"
    assert format_route(route).startswith("reject")


def test_route_is_frozen_and_copies_metadata(router: MetadataRouter) -> None:
    md: dict[str, Any] = {"department": "sales"}
    route = router.route(md)
    md["department"] = "other"
    assert route.metadata == {"department": "sales"}
    with pytest.raises(AttributeError):
        route.agent = "x"  # type: ignore[misc]


def test_route_equals_the_dataclass_constructor(router: MetadataRouter) -> None:
    route = router.route({"department": "sales"})
    expected = Route(
        agent="sales",
        agent_name="sales",
        rule="sales",
        rule_index=6,
        metadata={"department": "sales"},
    )
    assert route == expected
    assert route.metadata_json() == '{"department":"sales"}'


def test_job_metadata_selection_variants() -> None:
    router = MetadataRouter.from_dict(
        {
            "rules": [
                {
                    "when": {"k": "nested"},
                    "agent": "a",
                    "job_metadata": ["caller.tier", "k", "absent"],
                },
                {"when": {"k": "none"}, "agent": "b", "job_metadata": "none"},
                {"when": {"k": "all"}, "agent": "c", "job_metadata": "all"},
            ]
        }
    )
    md = {"k": "nested", "caller": {"tier": "vip", "phone": SECRET}, "other": 1}
    assert router.route(md).metadata == {"caller": {"tier": "vip"}, "k": "nested"}
    assert router.route({"k": "none", "x": 1}).metadata == {}
    assert router.route({"k": "all", "x": 1}).metadata == {"k": "all", "x": 1}


def test_worker_sets_agent_name_and_rule_override() -> None:
    cfg = {
        "worker": "pool",
        "rules": [
            {"when": {"d": "a"}, "agent": "alpha"},
            {"when": {"d": "b"}, "agent": "beta", "worker": "beta-pool"},
        ],
        "default": "general",
    }
    router = MetadataRouter.from_dict(cfg)
    assert router.route({"d": "a"}).agent_name == "pool"
    assert router.route({"d": "a"}).agent == "alpha"
    assert router.route({"d": "b"}).agent_name == "beta-pool"
    assert router.route({}).agent_name == "pool"
    assert router.agents == {"alpha", "beta", "general"}
    assert router.agent_names == {"pool", "beta-pool"}
    overridden = MetadataRouter.from_dict(cfg, worker="other")
    assert overridden.route({"d": "a"}).agent_name == "other"


def test_no_default_raises_without_echoing_values() -> None:
    router = MetadataRouter.from_dict({"rules": [{"when": {"d": "x"}, "agent": "a"}]})
    assert not router.has_default
    with pytest.raises(NoRouteMatched) as info:
        router.route({"d": SECRET})
    assert SECRET not in str(info.value)
    assert "'d'" in str(info.value)
    assert router.match_index({"d": SECRET}) is None
    assert router.match_index({"d": "x"}) == 0


def test_default_reject_and_target_mapping() -> None:
    rej = MetadataRouter.from_dict(
        {"rules": [{"when": {"d": "x"}, "agent": "a"}], "default": "reject"}
    )
    assert rej.route({}).rejected
    assert rej.route({}).is_default
    full = MetadataRouter.from_dict(
        {
            "default": {
                "agent": "g",
                "deployment": "dev",
                "attributes": {"q": "1"},
                "job_metadata": ["a"],
            }
        }
    )
    route = full.route({"a": 1, "b": 2})
    assert (route.agent, route.deployment, route.attributes, route.metadata) == (
        "g",
        "dev",
        {"q": "1"},
        {"a": 1},
    )


def test_route_rejects_non_mappings(router: MetadataRouter) -> None:
    with pytest.raises(TypeError, match="mapping"):
        router.route('{"department": "sales"}')  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mapping"):
        router.explain(None)  # type: ignore[arg-type]


def test_catch_all_rule_without_when() -> None:
    router = MetadataRouter.from_dict(
        {"rules": [{"when": {"a": 1}, "agent": "one"}, {"agent": "any"}]}
    )
    assert router.route({"a": 1}).agent == "one"
    assert router.route({"a": 2}).agent == "any"
    assert router.route({}).label == "rules[1]"


# ------------------------------------------------------------------------ explain


def test_explain_lists_every_rule_and_the_first_failure(router: MetadataRouter) -> None:
    md = {"department": "support", "language": "en", "email": SECRET}
    trace = router.explain(md)
    assert len(trace) == len(router) + 1  # every rule, then the default
    by_name = {t.name: t for t in trace if t.name}
    assert by_name["support-es"].failed is not None
    assert by_name["support-es"].failed.path == "language"
    assert by_name["support-es"].failed.op == "in"
    assert by_name["support-es"].failed.expected == '["es", "es-MX"]'
    assert by_name["support-es"].failed.found == "string"
    assert by_name["vip"].failed is not None
    assert by_name["vip"].failed.found == "missing"
    assert by_name["support-other"].selected
    assert [t.selected for t in trace].count(True) == 1
    assert trace[-1].index is None
    assert not trace[-1].selected
    assert by_name["email"].failed is not None
    assert by_name["email"].failed.op == "regex"
    text = format_explain(trace)
    assert SECRET not in text
    assert "rules[4] support-other" in text
    assert "SELECTED" in text
    assert 'language in ["es", "es-MX"] (found: string)' in text
    assert "default" in text.splitlines()[-1]
    assert "not used" in text.splitlines()[-1]


def test_explain_marks_shadowed_matches_and_default(router: MetadataRouter) -> None:
    trace = router.explain({"department": "support", "caller": {"tier": "vip", "id": 1}})
    names = {t.name: t for t in trace if t.name}
    assert names["vip"].selected
    assert names["support-other"].matched
    assert not names["support-other"].selected
    assert "shadowed" in format_explain(trace)
    trace = router.explain({})
    assert trace[-1].selected
    assert "no rule matched" in format_explain(trace).splitlines()[-1]


def test_explain_without_default_says_no_route() -> None:
    router = MetadataRouter.from_dict(
        {"rules": [{"name": "r", "when": {"a": {"gt": 3}}, "agent": "x"}]}
    )
    trace = router.explain({"a": "7"})
    assert trace[0].failed is not None
    assert str(trace[0].failed) == "a > 3 (found: string)"
    assert "NoRouteMatched" in format_explain(trace)


def test_explain_not_and_combined_ops() -> None:
    router = MetadataRouter.from_dict(
        {"rules": [{"when": {"lang": {"not": "es"}, "age": {"gte": 18, "lt": 65}}, "agent": "x"}]}
    )
    failed = router.explain({"lang": "es", "age": 30})[0].failed
    assert failed is not None
    assert (failed.op, failed.expected) == ("not", '(== "es")')
    failed = router.explain({"lang": "en", "age": 70})[0].failed
    assert failed is not None
    assert (failed.op, failed.expected) == ("<", "65")


def test_route_summary_has_keys_not_values(router: MetadataRouter) -> None:
    summary = route_summary(router.route({"department": "sales", "phone": "+34", "pin": SECRET}))
    assert summary["agent"] == "sales-eu"
    assert summary["job_metadata_keys"] == ["department", "phone", "pin"]
    assert SECRET not in json.dumps(summary)


# ------------------------------------------------------------------------ loading


def test_from_file_yaml_json_toml(tmp_path: Path) -> None:
    cfg = {
        "rules": [{"name": "es", "when": {"language": {"in": ["es"]}}, "agent": "es"}],
        "default": "g",
    }
    (tmp_path / "r.yaml").write_text(RULES_YAML, encoding="utf-8")
    (tmp_path / "r.yml").write_text("default: g\n", encoding="utf-8")
    (tmp_path / "r.json").write_text(json.dumps(cfg), encoding="utf-8")
    (tmp_path / "r.toml").write_text(
        'default = "g"\n[[rules]]\nname = "es"\nagent = "es"\nwhen = { language = { in = ["es"] } }\n',
        encoding="utf-8",
    )
    assert (
        MetadataRouter.from_file(tmp_path / "r.yaml").route({"department": "sales"}).agent
        == "sales"
    )
    assert MetadataRouter.from_file(str(tmp_path / "r.yml")).route({}).agent == "g"
    for name in ("r.json", "r.toml"):
        r = MetadataRouter.from_file(tmp_path / name)
        assert r.route({"language": "es"}).agent == "es"
        assert r.route({"language": "en"}).agent == "g"


def test_yaml_uses_yaml12_booleans() -> None:
    router = yaml_router("rules:\n  - when: {language: no}\n    agent: norwegian\n")
    assert router.route({"language": "no"}).agent == "norwegian"
    with pytest.raises(NoRouteMatched):
        router.route({"language": False})
    flag = yaml_router("rules:\n  - when: {beta: true}\n    agent: b\n")
    assert flag.route({"beta": True}).agent == "b"


BAD_RULES: list[tuple[str, str, list[str]]] = [
    ("rules: {a: 1}", "field 'rules'", []),
    ("[1, 2]", "must be a mapping", []),
    ("rules: []\nextra: 1", "unknown top-level field", ["'extra'"]),
    ("rules: []", "routes nothing", []),
    ("worker: 3\ndefault: g", "field 'worker'", []),
    ("rules: [5]", "rules[0]", ["must be a mapping"]),
    (
        "rules:\n  - name: r1\n    when: {a: 1}",
        "rule 'r1' (rules[0])",
        ["field 'agent'", "missing"],
    ),
    ("rules:\n  - name: r1\n    agent: 3", "rule 'r1'", ["field 'agent'"]),
    ("rules:\n  - agent: ' x'", "rules[0]", ["field 'agent'", "whitespace"]),
    ("rules:\n  - agent: x\n    color: red", "rules[0]", ["field 'color'", "Extra inputs"]),
    ("rules:\n  - agent: x\n    when: [a]", "rules[0]", ["field 'when'"]),
    ("rules:\n  - agent: x\n    attributes: {lk.x: y}", "rules[0]", ["attributes", "lk."]),
    ("rules:\n  - agent: x\n    attributes: {a: 1}", "rules[0]", ["field 'attributes.a'"]),
    ("rules:\n  - agent: x\n    job_metadata: some", "rules[0]", ["field 'job_metadata'"]),
    ("rules:\n  - agent: x\n    job_metadata: ['a..b']", "rules[0]", ["job_metadata", "a..b"]),
    ("rules:\n  - agent: x\n    reject: true", "rules[0]", ["'agent'", "reject"]),
    (
        "rules:\n  - {name: a, agent: x}\n  - {name: a, agent: y}",
        "rule 'a' (rules[1])",
        ["duplicate", "rules[0]"],
    ),
    ("rules:\n  - {name: '', agent: x}", "rules[0]", ["field 'name'"]),
    ("rules:\n  - {name: r, agent: x, when: {a: [1, 2]}}", "rule 'r'", ["'when.a'", "{in: [...]}"]),
    ("rules:\n  - {name: r, agent: x, when: {a: {}}}", "rule 'r'", ["'when.a'", "empty condition"]),
    (
        "rules:\n  - {name: r, agent: x, when: {a: {has: 1}}}",
        "rule 'r'",
        ["'when.a.has'", "unknown operator"],
    ),
    (
        "rules:\n  - {name: r, agent: x, when: {a: {in: []}}}",
        "rule 'r'",
        ["'when.a.in'", "non-empty list"],
    ),
    (
        "rules:\n  - {name: r, agent: x, when: {a: {in: [[1]]}}}",
        "rule 'r'",
        ["'when.a.in'", "scalars"],
    ),
    ("rules:\n  - {name: r, agent: x, when: {a: {in: x}}}", "rule 'r'", ["'when.a.in'"]),
    (
        "rules:\n  - {name: r, agent: x, when: {a: {exists: 1}}}",
        "rule 'r'",
        ["'when.a.exists'", "true or false"],
    ),
    ("rules:\n  - {name: r, agent: x, when: {a: {prefix: 1}}}", "rule 'r'", ["'when.a.prefix'"]),
    ("rules:\n  - {name: r, agent: x, when: {a: {prefix: ['']}}}", "rule 'r'", ["'when.a.prefix'"]),
    (
        "rules:\n  - {name: r, agent: x, when: {a: {regex: '(['}}}",
        "rule 'r'",
        ["'when.a.regex'", "invalid regular expression"],
    ),
    ("rules:\n  - {name: r, agent: x, when: {a: {regex: 5}}}", "rule 'r'", ["'when.a.regex'"]),
    (
        "rules:\n  - {name: r, agent: x, when: {a: {gt: '5'}}}",
        "rule 'r'",
        ["'when.a.gt'", "number"],
    ),
    (
        "rules:\n  - {name: r, agent: x, when: {a: {lte: true}}}",
        "rule 'r'",
        ["'when.a.lte'", "true/false"],
    ),
    ("rules:\n  - {name: r, agent: x, when: {a: {not: [1]}}}", "rule 'r'", ["'when.a.not'"]),
    (
        "rules:\n  - {name: r, agent: x, when: {a: {not: {bad: 1}}}}",
        "rule 'r'",
        ["'when.a.not.bad'"],
    ),
    (
        "rules:\n  - {name: r, agent: x, when: {'a..b': 1}}",
        "rule 'r'",
        ["'when.a..b'", "invalid field path"],
    ),
    ("default: 5", "field 'default'", []),
    ("default: {agent: g, foo: 1}", "default", ["field 'foo'"]),
    ("default: {reject: true, agent: g}", "default", ["reject"]),
    ("default: ''", "default", ["field 'agent'"]),
]


@pytest.mark.parametrize(("text", "where", "details"), BAD_RULES)
def test_bad_rules_raise_config_error_naming_rule_and_field(
    text: str, where: str, details: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        yaml_router(text, source="rules.yaml")
    message = str(info.value)
    assert message.startswith("rules rules.yaml: ")
    assert where in message
    for detail in details:
        assert detail in message


@pytest.mark.parametrize(
    ("when", "field"),
    [
        ({"a": {"gte": math.nan}}, "'when.a.gte'"),
        ({"a": math.inf}, "'when.a'"),
        ({1: 1}, "'when"),
        ({"a": {1: 1}}, "operator names"),
    ],
)
def test_dict_rules_json_cannot_hold_name_rule_and_field(when: dict[Any, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        MetadataRouter.from_dict({"rules": [{"name": "r", "agent": "x", "when": when}]})
    assert "rule 'r'" in str(info.value)
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{gte: .nan}", r"line 2, field 'rules\[0\]\.when\.a\.gte': NaN"),
        ("{1: 1}", r"line 2, field 'rules\[0\]\.when\.a': mapping keys must be strings"),
    ],
)
def test_what_json_cannot_hold_is_refused_in_rules_files_by_the_loader(
    text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        yaml_router(f"rules:\n  - {{name: r, agent: x, when: {{a: {text}}}}}")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown file type"):
        MetadataRouter.from_file(tmp_path / "rules.ini")
    with pytest.raises(ConfigError, match="cannot read the file"):
        MetadataRouter.from_file(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid YAML"):
        MetadataRouter.from_file(tmp_path / "bad.yaml")
    (tmp_path / "dup.yaml").write_text("default: a\ndefault: b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="duplicate key"):
        MetadataRouter.from_file(tmp_path / "dup.yaml")
    (tmp_path / "bad.json").write_text('{"rules": [}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 1: invalid JSON at column 12"):
        MetadataRouter.from_file(tmp_path / "bad.json")
    (tmp_path / "bad.toml").write_text("rules = [", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML"):
        MetadataRouter.from_file(tmp_path / "bad.toml")
    (tmp_path / "bad2.json").write_text('{"rules": [{"agent": "x", "when": {"a": {"gt": "1"}}}]}')
    with pytest.raises(ConfigError, match=r"bad2\.json.*rules\[0\].*when\.a\.gt"):
        MetadataRouter.from_file(tmp_path / "bad2.json")


def test_constructor_argument_errors() -> None:
    with pytest.raises(ConfigError, match="'rules'"):
        MetadataRouter.from_dict({"rules": "not a list"})
    with pytest.raises(ConfigError, match="'worker'"):
        MetadataRouter.from_dict({"rules": [], "default": "g"}, worker=" ")
    with pytest.raises(TypeError, match="from_dict"):
        MetadataRouter([{"agent": "a"}])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be a mapping"):
        MetadataRouter.from_dict([])  # type: ignore[arg-type]


# ------------------------------------------------------------------------ index == scan

_PATHS = ["a", "b", "c.d"]
_VALUES = st.sampled_from(["x", "y", "xy", 1, 2, 1.0, 2.5, True, False, None])


def _condition() -> st.SearchStrategy[Any]:
    scalar = _VALUES
    return st.one_of(
        scalar,
        st.fixed_dictionaries({"eq": scalar}),
        st.fixed_dictionaries({"in": st.lists(scalar, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"exists": st.booleans()}),
        st.fixed_dictionaries(
            {
                "not": st.one_of(
                    scalar, st.fixed_dictionaries({"in": st.lists(scalar, min_size=1, max_size=2)})
                )
            }
        ),
        st.fixed_dictionaries({"prefix": st.sampled_from(["x", "y"])}),
        st.fixed_dictionaries({"gt": st.sampled_from([0, 1, 1.5])}),
        st.fixed_dictionaries({"lte": st.sampled_from([1, 2])}),
    )


_RULE = st.fixed_dictionaries(
    {"when": st.dictionaries(st.sampled_from(_PATHS), _condition(), max_size=3)},
)


def _metadata() -> st.SearchStrategy[dict[str, Any]]:
    value = st.one_of(_VALUES, st.lists(_VALUES, max_size=1))
    nested = st.dictionaries(st.just("d"), value, max_size=1)
    return st.fixed_dictionaries(
        {},
        optional={"a": value, "b": value, "c": st.one_of(nested, value)},
    )


@settings(max_examples=examples(200), deadline=None)
@given(
    rules=st.lists(_RULE, min_size=1, max_size=12),
    samples=st.lists(_metadata(), min_size=1, max_size=8),
)
def test_indexed_routing_equals_linear_scan(
    rules: list[dict[str, Any]], samples: list[dict[str, Any]]
) -> None:
    cfg = {"rules": [{**r, "agent": f"agent{i}"} for i, r in enumerate(rules)], "default": "d"}
    indexed = MetadataRouter.from_dict(cfg)
    for md in samples:
        expected = linear_scan(indexed, md)
        assert indexed.match_index(md) == expected
        assert indexed.route(md).rule_index == expected
        explained = [t.index for t in indexed.explain(md) if t.selected]
        assert explained == [expected]  # the default (index None) when no rule matched


# ------------------------------------------------------------------------ on_request


def _request(
    metadata: str, *, agent_name: str = "support-es", room_metadata: str = ""
) -> tuple[JobRequest, Recorder]:
    return job_request(metadata, agent_name=agent_name, room_metadata=room_metadata)


SPANISH = json.dumps({"department": "support", "language": "es", "pin": SECRET})


async def test_request_handler_accepts_its_own_route(router: MetadataRouter) -> None:
    req, rec = _request(SPANISH)
    await request_handler(router, "support-es")(req)
    assert len(rec.accepted) == 1
    assert rec.accepted[0].attributes is None
    assert rec.rejected == []


async def test_request_handler_defaults_to_the_jobs_agent_name(router: MetadataRouter) -> None:
    req, rec = _request(SPANISH, agent_name="support-es")
    await request_handler(router)(req)
    assert len(rec.accepted) == 1
    req, rec = _request(SPANISH, agent_name="sales")
    await request_handler(router)(req)
    assert rec.rejected == [False]


@pytest.mark.parametrize(
    ("metadata", "why"),
    [
        (json.dumps({"department": "sales"}), "routes to another agent"),
        (json.dumps({"tenant": "banned"}), "reject rule"),
        ("{'department': 'support'}", "invalid JSON"),
        ("[1, 2]", "not an object"),
        ("x" * 70_000, "too large"),
        ("", "empty -> default general, not this worker"),
    ],
)
async def test_request_handler_rejects_without_terminating(
    router: MetadataRouter, metadata: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    req, rec = _request(metadata)
    with caplog.at_level(logging.DEBUG, logger="livekit.plugins.metadata"):
        await request_handler(router, "support-es")(req)
    assert rec.rejected == [False], why
    assert rec.accepted == []
    assert "AJ_test" in caplog.text
    assert "'department': 'support'" not in caplog.text


async def test_request_handler_never_logs_values(
    router: MetadataRouter, caplog: pytest.LogCaptureFixture
) -> None:
    bad = '{"pin": "' + SECRET + '", '
    for md in (bad, json.dumps({"department": "sales", "pin": SECRET})):
        req, _ = _request(md)
        with caplog.at_level(logging.DEBUG, logger="livekit.plugins.metadata"):
            await request_handler(router, "support-es")(req)
    assert caplog.records
    assert SECRET not in caplog.text


async def test_request_handler_no_match_without_default_rejects() -> None:
    router = MetadataRouter.from_dict({"rules": [{"when": {"d": "x"}, "agent": "a"}]})
    req, rec = _request(json.dumps({"d": "y"}), agent_name="a")
    await request_handler(router)(req)
    assert rec.rejected == [False]


async def test_request_handler_publish_route_and_sources(router: MetadataRouter) -> None:
    req, rec = _request(SPANISH)
    await request_handler(router, "support-es", publish_route=True)(req)
    assert rec.accepted[0].attributes == {"route": "support-es", "route.rule": "support-es"}

    req, rec = _request("", room_metadata=json.dumps({"department": "sales"}), agent_name="sales")
    await request_handler(router, metadata_from="room")(req)
    assert len(rec.accepted) == 1

    req, rec = _request("", agent_name="sales")
    await request_handler(router, metadata_from=lambda r: {"department": "sales"})(req)
    assert len(rec.accepted) == 1

    def boom(r: JobRequest) -> str:
        raise RuntimeError(SECRET)

    req, rec = _request("", agent_name="sales")
    await request_handler(router, metadata_from=boom)(req)
    assert rec.rejected == [False]


async def test_route_job_request_returns_the_route(router: MetadataRouter) -> None:
    req, _ = _request(SPANISH)
    route = await route_job_request(router, req)
    assert route is not None
    assert route.agent == "support-es"
    req, _ = _request(SPANISH, agent_name="other")
    assert await route_job_request(router, req) is None


def test_accepts(router: MetadataRouter) -> None:
    assert router.accepts({"department": "sales"}, "sales")
    assert not router.accepts({"department": "sales"}, "support")
    assert not router.accepts({"tenant": "banned"}, "")
    no_default = MetadataRouter.from_dict({"rules": [{"when": {"d": "x"}, "agent": "a"}]})
    assert not no_default.accepts({}, "a")


def test_request_handler_argument_errors(router: MetadataRouter) -> None:
    with pytest.raises(ValueError, match="agent_name"):
        request_handler(router, "")
    with pytest.raises(ValueError, match="metadata_from"):
        request_handler(router, metadata_from="participant")  # type: ignore[arg-type]


# ------------------------------------------------------------------------ entrypoint


class SupportAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="support")


class SpanishSupportAgent(Agent):
    def __init__(self, route: Route) -> None:
        super().__init__(instructions=f"soporte ({route.label})")


class GeneralAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="general")


SMALL = {
    "rules": [
        {"name": "es", "when": {"department": "support", "language": "es"}, "agent": "support-es"},
        {"name": "support", "when": {"department": "support"}, "agent": "support"},
        {"name": "blocked", "when": {"blocked": True}, "reject": True},
    ],
    "default": "general",
}
FACTORIES: dict[str, Any] = {
    "support": SupportAgent,
    "support-es": lambda route: SpanishSupportAgent(route),
    "general": GeneralAgent,
}


@pytest.mark.parametrize(
    ("job_metadata", "expected"),
    [
        ('{"department": "support", "language": "es"}', SpanishSupportAgent),
        ('{"department": "support"}', SupportAgent),
        ('{"department": "sales"}', GeneralAgent),
        ("", GeneralAgent),
    ],
)
async def test_select_inside_fake_job_context(job_metadata: str, expected: type[Agent]) -> None:
    router = MetadataRouter.from_dict(SMALL)
    with fake_job_context(job_metadata=job_metadata) as ctx:
        route, agent = select(router, ctx.job.metadata, FACTORIES)
    assert type(agent) is expected
    assert route_of(agent) is route
    if expected is SpanishSupportAgent:
        assert agent.instructions == "soporte (es)"


async def test_select_fallback_and_errors() -> None:
    router = MetadataRouter.from_dict(SMALL)
    with pytest.raises(InvalidMetadataJSON):
        select(router, "{bad", FACTORIES)
    route, agent = select(router, "{bad", FACTORIES, fallback="general")
    assert route.is_fallback
    assert route.label == "fallback"
    assert type(agent) is GeneralAgent
    with pytest.raises(RoutingError, match="reject"):
        select(router, {"blocked": True}, FACTORIES)
    assert select(router, {"blocked": True}, FACTORIES, fallback="support").route.is_fallback
    with pytest.raises(ConfigError, match="no Agent factory"):
        select(router, {"department": "support"}, {"general": GeneralAgent})
    with pytest.raises(ConfigError, match="fallback"):
        select(router, {}, FACTORIES, fallback="nope")
    no_default = MetadataRouter.from_dict({"rules": SMALL["rules"]})
    with pytest.raises(NoRouteMatched):
        select(no_default, {}, FACTORIES)
    with pytest.raises(TypeError, match="not an Agent"):
        select(router, {}, {"general": lambda route: "not an agent"})


async def test_agent_factory_map_checks_coverage() -> None:
    router = MetadataRouter.from_dict(SMALL)
    with pytest.raises(ConfigError, match="support-es"):
        AgentFactoryMap(router, {"support": SupportAgent, "general": GeneralAgent})
    with pytest.raises(ConfigError, match="fallback"):
        AgentFactoryMap(router, FACTORIES, fallback="missing")
    with pytest.raises(TypeError, match="callable"):
        AgentFactoryMap(router, {**FACTORIES, "general": 3})
    agents = AgentFactoryMap(router, FACTORIES, fallback="general")
    assert agents.router is router
    assert set(agents.factories) == set(FACTORIES)
    with fake_job_context(job_metadata='{"department": "support"}') as ctx:
        assert type(agents.select(ctx.job.metadata).agent) is SupportAgent
    assert type(agents.select(b"not json").agent) is GeneralAgent


async def test_reroute_hands_off_only_when_the_route_changes() -> None:
    router = MetadataRouter.from_dict(SMALL)
    agents = AgentFactoryMap(router, FACTORIES)
    with fake_job_context(job_metadata='{"department": "support"}') as ctx:
        route, first = agents.select(ctx.job.metadata)
        assert route.agent == "support"
        session: AgentSession[Any] = AgentSession()
        await session.start(first)
        try:
            assert agents.reroute(session, {"department": "support", "x": 1}) is False
            assert session.current_agent is first
            assert agents.reroute(session, {"department": "support", "language": "es"}) is True
            assert type(session.current_agent) is SpanishSupportAgent
            assert reroute(session, router, FACTORIES, {"blocked": True}) is False
            assert type(session.current_agent) is SpanishSupportAgent
            assert (
                reroute(session, router, {"general": GeneralAgent}, {"department": "support"})
                is False
            )
        finally:
            await session.aclose()


async def test_reroute_compares_classes_for_agents_it_did_not_build() -> None:
    router = MetadataRouter.from_dict(SMALL)
    with fake_job_context():
        session: AgentSession[Any] = AgentSession()
        await session.start(GeneralAgent())
        try:
            assert reroute(session, router, FACTORIES, {"department": "sales"}) is False
            no_default = MetadataRouter.from_dict({"rules": SMALL["rules"]})
            assert reroute(session, no_default, FACTORIES, {}) is False
            assert reroute(session, router, FACTORIES, {"department": "support"}) is True
            assert type(session.current_agent) is SupportAgent
        finally:
            await session.aclose()


def test_repr_and_len(router: MetadataRouter) -> None:
    assert len(router) == 14
    assert "rules=14" in repr(router)
    assert "default='general'" in repr(router)


# ------------------------------------------------------------------------ wings


def _module_level_imports(path: Path) -> list[str]:
    """Modules imported at module level (TYPE_CHECKING blocks excluded)."""
    import ast

    names: list[str] = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue  # imports inside functions run when called, not at import
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                names.extend(alias.name for alias in sub.names)
            elif isinstance(sub, ast.ImportFrom):
                names.append("." * sub.level + (sub.module or ""))
    return names


def test_the_routing_wing_imports_neither_livekit_agents_nor_the_agent_wing() -> None:
    routing = Path(__file__).parents[1] / "plugin/livekit/plugins/metadata/routing"
    for path in sorted(routing.glob("*.py")):
        imported = _module_level_imports(path)
        assert not [m for m in imported if m.startswith("livekit.agents")], path.name
        assert not [m for m in imported if m.startswith(("..agent", "..server"))], path.name
    # The check itself can fail: the agent wing does import the routing wing.
    selection = routing.parent / "agent" / "selection.py"
    assert "..routing.router" in _module_level_imports(selection)
