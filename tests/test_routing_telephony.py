"""Routing phone calls: attribute conditions, phone-number operators and their index.

A SIP caller's numbers reach the agent as participant attributes (``sip.phoneNumber``,
``sip.trunkPhoneNumber``), written however the trunk and the provider write them.
These tests pin that one number matches in every common spelling, that a rule's
bad number is a load-time error naming the rule, that hidden numbers are missing
attributes, that the index agrees with a linear scan, and that a job request whose
route needs those attributes is accepted rather than turned away.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from livekit.agents import Agent
from livekit.agents.job import JobRequest

from livekit.plugins.metadata.agent.requests import request_handler, route_job_request
from livekit.plugins.metadata.agent.selection import AgentFactoryMap, route_of, select
from livekit.plugins.metadata.errors import ConfigError
from livekit.plugins.metadata.loader import load_text
from livekit.plugins.metadata.routing.conditions import lookup
from livekit.plugins.metadata.routing.formatting import format_explain
from livekit.plugins.metadata.routing.phone import normalize_number, rule_number, rule_prefix
from livekit.plugins.metadata.routing.router import MetadataRouter
from tests.job_requests import Recorder, job_request
from tests.strategies import examples

pytestmark = pytest.mark.unit


def yaml_router(text: str, source: str | None = None) -> MetadataRouter:
    """A router from YAML text, read as a rules file is."""
    return MetadataRouter.from_dict(load_text(text, "yaml", source or "<yaml>"), source=source)


MADRID = "+34910000000"
BARCELONA = "+34930000000"

RULES = f"""
phone_region: ES
worker: phone-agents
rules:
  - name: madrid-line
    when_attributes:
      sip.trunkPhoneNumber: {{phone: "{MADRID}"}}
    agent: madrid
  - name: barcelona-line
    when_attributes:
      sip.trunkPhoneNumber: {{phone: ["+34 930 000 000", "+34 930 000 001"]}}
      sip.phoneNumber: {{exists: true}}
    agent: barcelona
  - name: hidden-caller
    when_attributes:
      sip.phoneNumber: {{exists: false}}
    agent: operator
  - name: us-callers
    when_attributes:
      sip.phoneNumber: {{phone_prefix: ["+1 415", "+1 650"]}}
    agent: us
default: general
"""


def linear_scan(router: MetadataRouter, md: dict[str, Any], attrs: dict[str, str]) -> int | None:
    """The reference: every rule in order, each condition by its own predicate."""
    for rule in router.rule_set.rules:
        if all(
            c.pred(lookup(attrs if c.source == "attributes" else md, c.parts)) for c in rule.conds
        ):
            return rule.pos
    return None


@pytest.fixture
def router() -> MetadataRouter:
    return yaml_router(RULES, source="phone.yaml")


# --------------------------------------------------------------------------- normalization

SPELLINGS = [
    "+34910000000",
    "+34 910 000 000",
    "0034 910 000 000",
    "0034910000000",
    "tel:+34-910-000-000",
    "TEL:+34.910.000.000",
    "sip:+34910000000@sip.example.com",
    "sip:+34910000000@sip.example.com;user=phone",
    "sips:+34910000000@host:5061",
    "34910000000",
    "(+34) 910-000-000",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_one_number_in_every_common_spelling(spelling: str) -> None:
    assert normalize_number(spelling) == MADRID


@pytest.mark.parametrize(
    ("text", "region", "expected"),
    [
        ("910 000 000", "ES", MADRID),
        ("910000000", "ES", MADRID),
        ("(415) 555-2671", "US", "+14155552671"),
        ("011 34 910 000 000", "US", MADRID),
        ("020 7946 0000", "GB", "+442079460000"),
        ("+44 20 7946 0000", "ES", "+442079460000"),
    ],
)
def test_national_numbers_need_the_region(text: str, region: str, expected: str) -> None:
    assert normalize_number(text, region) == expected


@pytest.mark.parametrize(
    "text", ["", "anonymous", "restricted", "+", "12", "sip:alice@example.com", "x" * 100]
)
def test_values_that_are_no_phone_number_normalize_to_none(text: str) -> None:
    assert normalize_number(text) is None


def test_rule_numbers_must_be_valid_strings() -> None:
    assert rule_number("0034 910 000 000", None) == MADRID
    assert rule_number("910 000 000", "ES") == MADRID
    with pytest.raises(ValueError, match="not a valid phone number"):
        rule_number("+34 123", None)
    with pytest.raises(ValueError, match="the rule set has no phone_region"):
        rule_number("910 000 000", None)
    with pytest.raises(ValueError, match="as strings"):
        rule_number(34910000000, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("+1 415", "+1415"), ("0034", "+34"), ("+44-20", "+4420"), ("tel:+351", "+351")],
)
def test_rule_prefixes(text: str, expected: str) -> None:
    assert rule_prefix(text) == expected


@pytest.mark.parametrize("text", ["415", "+", "+1x", "+999", 34])
def test_bad_rule_prefixes(text: Any) -> None:
    with pytest.raises(ValueError, match="prefix"):
        rule_prefix(text)


# --------------------------------------------------------------------------- load errors


@pytest.mark.parametrize(
    ("rule", "field", "reason"),
    [
        ('{phone: "+34 123"}', "when_attributes.sip.trunkPhoneNumber.phone", "not a valid"),
        ("{phone: +34910000000}", "when_attributes.sip.trunkPhoneNumber.phone", "as strings"),
        ('{phone: ["+34910000000", "bad"]}', "sip.trunkPhoneNumber.phone", "not a valid"),
        ("{phone: []}", "sip.trunkPhoneNumber.phone", "non-empty list"),
        ('{phone_prefix: "415"}', "sip.trunkPhoneNumber.phone_prefix", "international prefix"),
        ('{not: {phone: "bad"}}', "sip.trunkPhoneNumber.not.phone", "not a valid"),
        ("{exists: maybe}", "sip.trunkPhoneNumber.exists", "true or false"),
    ],
)
def test_a_bad_number_is_a_config_error_naming_the_rule(rule: str, field: str, reason: str) -> None:
    text = f"rules:\n  - name: line\n    when_attributes:\n      sip.trunkPhoneNumber: {rule}\n    agent: a\n"
    with pytest.raises(ConfigError) as info:
        yaml_router(text, source="phone.yaml")
    message = str(info.value)
    assert message.startswith("rules phone.yaml: rule 'line' (rules[0])")
    assert field in message
    assert reason in message


def test_phone_region_must_be_a_known_region() -> None:
    with pytest.raises(ConfigError, match="field 'phone_region'"):
        MetadataRouter.from_dict({"phone_region": "XX", "default": "a"})
    router = MetadataRouter.from_dict(
        {"phone_region": "es", "rules": [{"when": {"n": {"phone": "910000000"}}, "agent": "a"}]}
    )
    assert router.rule_set.phone_region == "ES"
    assert router.match_index({"n": "+34 910 000 000"}) == 0


# --------------------------------------------------------------------------- routing


@pytest.mark.parametrize(
    ("attrs", "agent"),
    [
        ({"sip.trunkPhoneNumber": "+34910000000", "sip.phoneNumber": "+34600000000"}, "madrid"),
        ({"sip.trunkPhoneNumber": "910 000 000", "sip.phoneNumber": "+34600000000"}, "madrid"),
        ({"sip.trunkPhoneNumber": "tel:+34-930-000-001", "sip.phoneNumber": "+1"}, "barcelona"),
        ({"sip.trunkPhoneNumber": "+34930000000"}, "operator"),  # hidden caller
        ({"sip.trunkPhoneNumber": "+34950000000"}, "operator"),
        ({"sip.trunkPhoneNumber": "+34950000000", "sip.phoneNumber": "14155552671"}, "us"),
        ({"sip.trunkPhoneNumber": "+34950000000", "sip.phoneNumber": "+16505550100"}, "us"),
        ({"sip.trunkPhoneNumber": "+34950000000", "sip.phoneNumber": "+12125550100"}, "general"),
        ({"sip.trunkPhoneNumber": "anonymous", "sip.phoneNumber": "x"}, "general"),
    ],
)
def test_calls_route_by_number(router: MetadataRouter, attrs: dict[str, str], agent: str) -> None:
    route = router.route({}, attributes=attrs)
    assert route.agent == agent
    assert route.agent_name == "phone-agents"
    assert route.rule_index == linear_scan(router, {}, attrs)


def test_attribute_names_are_verbatim_not_paths() -> None:
    router = MetadataRouter.from_dict(
        {
            "rules": [
                {"when_attributes": {"sip.h.X-Tenant": {"in": ["acme"]}}, "agent": "acme"},
                {"when": {"sip.h": "nested"}, "agent": "nested"},
            ],
            "default": "d",
        }
    )
    assert router.route({}, attributes={"sip.h.X-Tenant": "acme"}).agent == "acme"
    # Attribute names are keys: a nested metadata object does not satisfy them.
    assert router.route({"sip": {"h": {"X-Tenant": "acme"}}}).agent == "d"
    # `when` keeps reading dotted paths into the metadata.
    assert router.route({"sip": {"h": "nested"}}).agent == "nested"


def test_when_and_when_attributes_must_both_hold() -> None:
    router = MetadataRouter.from_dict(
        {
            "rules": [
                {
                    "when": {"tier": "vip"},
                    "when_attributes": {"queue": {"prefix": "gold-"}},
                    "agent": "vip",
                }
            ],
            "default": "d",
        }
    )
    assert router.route({"tier": "vip"}, attributes={"queue": "gold-1"}).agent == "vip"
    assert router.route({"tier": "vip"}, attributes={"queue": "silver"}).agent == "d"
    assert router.route({"tier": "vip"}).agent == "d"
    assert router.route({}, attributes={"queue": "gold-1"}).agent == "d"


def test_every_operator_reads_attributes() -> None:
    ops: list[tuple[Any, str, bool]] = [
        ("x", "x", True),
        ({"in": ["a", "b"]}, "b", True),
        ({"not": "x"}, "y", True),
        ({"prefix": "ab"}, "abc", True),
        ({"regex": "^[0-9]+$"}, "123", True),
        ({"exists": True}, "", True),
        ({"gt": 1}, "2", False),  # attributes are strings, never numbers
    ]
    for cond, value, expected in ops:
        router = MetadataRouter.from_dict(
            {"rules": [{"when_attributes": {"k": cond}, "agent": "a"}], "default": "d"}
        )
        assert (router.route({}, attributes={"k": value}).agent == "a") is expected, cond


def test_attributes_must_be_a_mapping(router: MetadataRouter) -> None:
    with pytest.raises(TypeError, match="attributes must be a mapping"):
        router.route({}, attributes=["sip.phoneNumber"])  # type: ignore[arg-type]


def test_explain_names_attribute_conditions_without_values(router: MetadataRouter) -> None:
    secret = "+34600123456"
    trace = router.explain(
        {}, attributes={"sip.trunkPhoneNumber": "+34950000000", "sip.phoneNumber": secret}
    )
    assert [t.selected for t in trace] == [False, False, False, False, True]
    assert trace[0].failed is not None
    assert trace[0].failed.source == "attributes"
    text = format_explain(trace)
    assert 'attribute sip.trunkPhoneNumber phone ["+34910000000"] (found: string)' in text
    assert "attribute sip.phoneNumber exists false (found: string)" in text
    assert secret not in text
    assert "950000000" not in text


def test_select_builds_the_agent_for_the_dialed_number(router: MetadataRouter) -> None:
    class Madrid(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="madrid")

    class General(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="general")

    factories = dict.fromkeys(router.agents, General) | {"madrid": Madrid}
    agents = AgentFactoryMap(router, factories)
    route, agent = agents.select("{}", attributes={"sip.trunkPhoneNumber": MADRID})
    assert isinstance(agent, Madrid)
    assert route_of(agent) == route
    route, agent = select(router, None, factories, attributes={"sip.phoneNumber": "+12125550100"})
    assert isinstance(agent, General)
    assert route.is_default


# --------------------------------------------------------------------------- the index

_NUMBERS = ["+34910000000", "+34930000000", "+14155552671", "+442079460000", "+16505550100"]
_PREFIXES = ["+34", "+349", "+1415", "+1", "+44"]
_SPELL = st.sampled_from(
    [
        lambda n: n,
        lambda n: "00" + n[1:],
        lambda n: "tel:" + n,
        lambda n: f"sip:{n}@h",
        lambda n: n[1:],
    ]
)


@st.composite
def _attr_value(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["number", "junk"]))
    if kind == "junk":
        return draw(st.sampled_from(["", "anonymous", "+", "abc"]))
    return str(draw(_SPELL)(draw(st.sampled_from(_NUMBERS))))


def _attr_condition() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(_NUMBERS).map(lambda n: {"phone": n}),
        st.lists(st.sampled_from(_NUMBERS), min_size=1, max_size=3).map(lambda n: {"phone": n}),
        st.lists(st.sampled_from(_PREFIXES), min_size=1, max_size=2).map(
            lambda p: {"phone_prefix": p}
        ),
        st.sampled_from(["a", "b"]),
        st.booleans().map(lambda b: {"exists": b}),
    )


_KEYS = ["sip.phoneNumber", "sip.trunkPhoneNumber", "k"]


@settings(max_examples=examples(150), deadline=None)
@given(
    rules=st.lists(
        st.fixed_dictionaries(
            {
                "when_attributes": st.dictionaries(
                    st.sampled_from(_KEYS), _attr_condition(), max_size=2
                )
            },
            optional={"when": st.dictionaries(st.just("m"), st.sampled_from(["x", "y"]))},
        ),
        min_size=1,
        max_size=10,
    ),
    samples=st.lists(
        st.tuples(
            st.dictionaries(st.just("m"), st.sampled_from(["x", "y"])),
            st.dictionaries(st.sampled_from(_KEYS), _attr_value(), max_size=3),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_phone_index_agrees_with_a_linear_scan(
    rules: list[dict[str, Any]], samples: list[tuple[dict[str, Any], dict[str, str]]]
) -> None:
    cfg = {"rules": [{**r, "agent": f"agent{i}"} for i, r in enumerate(rules)], "default": "d"}
    router = MetadataRouter.from_dict(cfg)
    for md, attrs in samples:
        expected = linear_scan(router, md, attrs)
        assert router.match_index(md, attributes=attrs) == expected
        assert router.route(md, attributes=attrs).rule_index == expected
        assert [t.index for t in router.explain(md, attributes=attrs) if t.selected] == [expected]
        # What on_request relies on: without attributes, the names it may accept for
        # contain whatever the attributes later decide (or the decision needs none).
        pending = router.pending_agent_names(md)
        route = router.route(md, attributes=attrs)
        if pending is None:
            assert route.rule_index == router.route(md).rule_index
        else:
            assert route.agent_name in pending


NUMBER_RULES = examples(10_000)
"""10,000 number rules under the dev profile (2,000 in the unit tier, 20,000 deep)."""


def test_thousands_of_number_rules_stay_exact() -> None:
    rules = [
        {
            "name": f"n{i}",
            "when_attributes": {"sip.trunkPhoneNumber": {"phone": f"+3491{i:07d}"}},
            "agent": f"a{i % 7}",
        }
        for i in range(NUMBER_RULES)
    ]
    router = MetadataRouter.from_dict({"rules": rules, "default": "d"})
    for i in (0, NUMBER_RULES // 2 + 321, NUMBER_RULES - 1):
        route = router.route({}, attributes={"sip.trunkPhoneNumber": f"0034 91{i:07d}"})
        assert route.rule == f"n{i}"
    assert router.route({}, attributes={"sip.trunkPhoneNumber": "+34 920 000 000"}).is_default


# --------------------------------------------------------------------------- job requests


def _request(metadata: dict[str, Any], agent_name: str) -> tuple[JobRequest, Recorder]:
    return job_request(json.dumps(metadata), agent_name=agent_name, room="call-1")


def test_pending_agent_names_lists_what_attributes_could_still_choose() -> None:
    router = MetadataRouter.from_dict(
        {
            "rules": [
                {"when": {"tenant": "banned"}, "reject": True},
                {"when_attributes": {"sip.trunkPhoneNumber": {"phone": MADRID}}, "agent": "a"},
                {"when": {"line": "b"}, "agent": "b"},
                {"when_attributes": {"k": "v"}, "agent": "c", "worker": "pool-c"},
            ],
            "default": "d",
        }
    )
    assert router.pending_agent_names({"tenant": "banned"}) is None  # decided: reject
    assert router.pending_agent_names({"line": "b"}) == {"a", "b"}
    assert router.pending_agent_names({}) == {"a", "pool-c", "d"}


async def test_a_job_whose_route_needs_attributes_is_accepted(router: MetadataRouter) -> None:
    req, rec = _request({}, "phone-agents")
    assert await route_job_request(router, req) is None  # the entrypoint decides
    assert len(rec.accepted) == 1
    assert rec.rejected == []


async def test_a_job_no_possible_route_of_which_is_ours_is_rejected() -> None:
    router = MetadataRouter.from_dict(
        {
            "rules": [{"when_attributes": {"k": "v"}, "agent": "a"}],
            "default": "reject",
        }
    )
    req, rec = _request({}, "someone-else")
    await request_handler(router)(req)
    assert rec.accepted == []
    assert rec.rejected == [False]
    req, rec = _request({}, "a")
    await request_handler(router)(req)
    assert len(rec.accepted) == 1


async def test_a_job_decided_by_metadata_alone_is_answered_as_before() -> None:
    router = MetadataRouter.from_dict(
        {
            "rules": [
                {"when": {"dept": "sales"}, "agent": "sales"},
                {"when_attributes": {"k": "v"}, "agent": "a"},
            ],
            "default": "d",
        }
    )
    req, rec = _request({"dept": "sales"}, "a")
    assert await route_job_request(router, req) is None
    assert rec.rejected == [False]
    req, rec = _request({"dept": "sales"}, "sales")
    route = await route_job_request(router, req)
    assert route is not None
    assert route.agent == "sales"
