"""SIP dispatch rules from the routing rules, the sync plan, and outbound-call requests.

Pure functions, checked field by field; the live server side is in
``tests/test_e2e_telephony.py`` (the outbound call itself needs LiveKit's SIP
service, which this machine cannot run).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from livekit import api

from livekit.plugins.metadata.errors import DispatchError, NoRouteMatched, RoutingError
from livekit.plugins.metadata.provision.outbound import outbound_call
from livekit.plugins.metadata.provision.sip import (
    OWNER_ATTRIBUTE,
    apply_plan,
    default_scope,
    desired_dispatch_rules,
    export_json,
    plan_sync,
)
from livekit.plugins.metadata.routing.router import MetadataRouter

pytestmark = pytest.mark.unit

MARK = {OWNER_ATTRIBUTE: "default"}

RULES: dict[str, Any] = {
    "worker": "phones",
    "phone_region": "ES",
    "rules": [
        {
            "name": "blocked",
            "when_attributes": {"sip.phoneNumber": {"phone": "+34600000666"}},
            "reject": True,
        },
        {
            "name": "sales",
            "when_attributes": {
                "sip.trunkPhoneNumber": {"phone": ["+34 910 000 001", "910000004"]}
            },
            "agent": "sales",
            "deployment": "staging",
            "attributes": {"queue": "sales"},
        },
        {
            "name": "sales-2",
            "when_attributes": {"sip.trunkPhoneNumber": {"phone": "+34910000005"}},
            "agent": "sales",
            "deployment": "staging",
            "attributes": {"queue": "sales"},
        },
        {
            "name": "vip-caller",
            "when": {"tier": "vip", "region.code": "eu"},
            "when_attributes": {
                "sip.trunkPhoneNumber": {"phone": "+34910000002"},
                "sip.phoneNumber": {"phone": "+34600000001"},
            },
            "agent": "sales",
            "deployment": "staging",
            "attributes": {"queue": "sales"},
        },
        {
            "name": "pt",
            "when_attributes": {"sip.phoneNumber": {"phone_prefix": "+351"}},
            "agent": "pt",
        },
        {
            "name": "regex",
            "when": {"x": {"regex": "a"}},
            "when_attributes": {"sip.trunkPhoneNumber": {"phone": "+34910000003"}},
            "agent": "rx",
        },
        {"name": "meta-only", "when": {"dept": "support"}, "agent": "support"},
    ],
    "default": "reception",
}


@pytest.fixture
def router() -> MetadataRouter:
    return MetadataRouter.from_dict(RULES)


def test_desired_rules_one_per_target_field_by_field(router: MetadataRouter) -> None:
    rules, skipped = desired_dispatch_rules(router, trunk_ids=["ST_b", "ST_a"], room_prefix="tel-")
    assert [r.name for r in rules] == ["lk-metadata/sales", "lk-metadata/sales#2"]
    plain, vip = rules
    assert list(plain.numbers) == ["+34910000001", "+34910000004", "+34910000005"]
    assert list(plain.inbound_numbers) == []
    assert list(plain.trunk_ids) == ["ST_a", "ST_b"]
    assert plain.rule.dispatch_rule_individual.room_prefix == "tel-"
    assert plain.sip_dispatch_rule_id == ""
    (agent,) = plain.room_config.agents
    assert agent.agent_name == "phones"
    assert agent.deployment == "staging"
    assert dict(agent.attributes) == {"queue": "sales"}
    assert agent.metadata == ""
    assert list(vip.numbers) == ["+34910000002"]
    assert list(vip.inbound_numbers) == ["+34600000001"]
    # The job metadata makes the rule's `when` hold in on_request.
    assert json.loads(vip.room_config.agents[0].metadata) == {
        "region": {"code": "eu"},
        "tier": "vip",
    }
    assert skipped == [
        "blocked: a reject rule dispatches nothing",
        "pt: no exact number ('phone') on sip.trunkPhoneNumber or sip.phoneNumber; "
        "it routes in the entrypoint",
        "regex: its 'when' takes more than plain equalities, which job metadata cannot carry",
        "meta-only: no exact number ('phone') on sip.trunkPhoneNumber or sip.phoneNumber; "
        "it routes in the entrypoint",
    ]


def test_export_is_stable_json(router: MetadataRouter) -> None:
    rules, _ = desired_dispatch_rules(router)
    exported = json.loads(export_json(rules))
    assert exported[0] == {
        "name": "lk-metadata/sales",
        "numbers": ["+34910000001", "+34910000004", "+34910000005"],
        "room_config": {
            "agents": [
                {"agent_name": "phones", "attributes": {"queue": "sales"}, "deployment": "staging"}
            ]
        },
        "rule": {"dispatch_rule_individual": {"room_prefix": "call-"}},
        "attributes": {OWNER_ATTRIBUTE: "default"},
    }
    assert export_json(rules) == export_json(desired_dispatch_rules(router)[0])


def _with_id(rule: api.SIPDispatchRuleInfo, rid: str) -> api.SIPDispatchRuleInfo:
    out = api.SIPDispatchRuleInfo()
    out.CopyFrom(rule)
    out.sip_dispatch_rule_id = rid
    return out


def test_plan_creates_updates_deletes_only_ours(router: MetadataRouter) -> None:
    wanted, skipped = desired_dispatch_rules(router)
    sales, vip = wanted
    stale = _with_id(sales, "SDR_1")
    stale.numbers[:] = ["+34910000001"]
    foreign = api.SIPDispatchRuleInfo(
        sip_dispatch_rule_id="SDR_9", name="front desk", numbers=["+1"]
    )
    gone = api.SIPDispatchRuleInfo(
        sip_dispatch_rule_id="SDR_2", name="lk-metadata/old", attributes=MARK
    )
    dup = _with_id(sales, "SDR_3")
    plan = plan_sync(wanted, [foreign, stale, gone, dup], skipped=skipped)
    assert [r.name for r in plan.create] == ["lk-metadata/sales#2"]
    assert [(old.sip_dispatch_rule_id, new.sip_dispatch_rule_id) for old, new in plan.update] == [
        ("SDR_1", "SDR_1")
    ]
    assert list(plan.update[0][1].numbers) == list(sales.numbers)
    assert sorted(r.sip_dispatch_rule_id for r in plan.delete) == ["SDR_2", "SDR_3"]
    assert plan.foreign == ["front desk (SDR_9): no lk-metadata.sip-sync ownership marker"]
    assert plan.changes == 4
    text = plan.format()
    assert "+ create lk-metadata/sales#2" in text
    assert "~ update lk-metadata/sales (SDR_1): numbers" in text
    assert "- delete lk-metadata/old (SDR_2)" in text
    assert "(not ours, left alone: front desk (SDR_9): no lk-metadata.sip-sync" in text
    assert "1 to create, 1 to update, 2 to delete, 0 unchanged" in text
    # Applied, the same wanted rules are in sync.
    synced = [_with_id(sales, "SDR_1"), _with_id(vip, "SDR_4"), foreign]
    again = plan_sync(wanted, synced)
    assert again.changes == 0
    assert [r.sip_dispatch_rule_id for r in again.unchanged] == ["SDR_1", "SDR_4"]


class _Sip:
    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail = fail

    async def list_dispatch_rule(self, list: Any) -> Any:
        return api.ListSIPDispatchRuleResponse()

    async def create_dispatch_rule(self, create: Any) -> Any:
        self.calls.append(("create", create.dispatch_rule.name))
        if self.fail:
            raise api.TwirpError(self.fail, "dispatch rule conflict with 'secret-rule'", status=400)
        return create.dispatch_rule

    async def update_dispatch_rule(self, rule_id: str, rule: Any) -> Any:
        self.calls.append(("update", rule_id))
        return rule

    async def delete_dispatch_rule(self, delete: Any) -> Any:
        self.calls.append(("delete", delete.sip_dispatch_rule_id))
        return api.SIPDispatchRuleInfo()


class _Client:
    def __init__(self, sip: _Sip) -> None:
        self.sip = sip


async def test_apply_deletes_then_updates_then_creates(router: MetadataRouter) -> None:
    wanted, _ = desired_dispatch_rules(router)
    stale = _with_id(wanted[0], "SDR_1")
    stale.numbers[:] = []
    gone = api.SIPDispatchRuleInfo(
        sip_dispatch_rule_id="SDR_2", name="lk-metadata/old", attributes=MARK
    )
    sip = _Sip()
    await apply_plan(_Client(sip), plan_sync(wanted, [stale, gone]))
    assert sip.calls == [
        ("delete", "SDR_2"),
        ("update", "SDR_1"),
        ("create", "lk-metadata/sales#2"),
    ]


async def test_a_conflicting_number_is_a_dispatch_error_naming_our_rule(
    router: MetadataRouter,
) -> None:
    wanted, _ = desired_dispatch_rules(router)
    with pytest.raises(DispatchError) as info:
        await apply_plan(_Client(_Sip(fail="invalid_argument")), plan_sync(wanted[:1], []))
    message = str(info.value)
    assert "'lk-metadata/sales'" in message
    assert "already claims one of its numbers" in message
    assert "secret-rule" not in message  # the server's free text is not echoed


# --------------------------------------------------------------------------- outbound


def test_outbound_call_requests_field_by_field(router: MetadataRouter) -> None:
    call = outbound_call(
        router,
        {"tier": "vip", "region": {"code": "eu"}, "note": "renewal"},
        room="out-1",
        trunk_id="ST_out",
        call_to="600 000 001",
        from_number="tel:+34-910-000-002",
        participant_name="Ana",
        participant_attributes={"campaign": "renewals"},
        wait_until_answered=True,
    )
    assert call.route.rule == "vip-caller"
    d = call.dispatch
    assert (d.agent_name, d.room, d.deployment) == ("phones", "out-1", "staging")
    assert json.loads(d.metadata) == {"tier": "vip", "region": {"code": "eu"}, "note": "renewal"}
    assert dict(d.attributes) == {"queue": "sales"}
    p = call.participant
    assert p.sip_trunk_id == "ST_out"
    assert p.sip_call_to == "+34600000001"
    assert p.sip_number == "+34910000002"
    assert p.room_name == "out-1"
    assert p.participant_identity == "sip-+34600000001"
    assert p.participant_name == "Ana"
    assert dict(p.participant_attributes) == {
        "campaign": "renewals",
        "lk-metadata.route": "sales",
        "lk-metadata.rule": "vip-caller",
    }
    assert p.wait_until_answered is True
    assert p.participant_metadata == ""


def test_outbound_call_routes_the_callee_like_an_inbound_caller(router: MetadataRouter) -> None:
    call = outbound_call(router, {}, room="r", trunk_id="ST", call_to="+351 912 345 678")
    assert call.route.agent == "pt"
    assert call.participant.sip_number == ""
    assert call.dispatch.metadata == ""
    default = outbound_call(router, {}, room="r", trunk_id="ST", call_to="+44 20 7946 0000")
    assert default.route.is_default
    assert default.participant.participant_identity == "sip-+442079460000"


def test_outbound_call_refusals(router: MetadataRouter) -> None:
    with pytest.raises(ValueError, match="call_to is not a phone number"):
        outbound_call(router, {}, room="r", trunk_id="ST", call_to="alice")
    with pytest.raises(ValueError, match="from_number is not a phone number"):
        outbound_call(router, {}, room="r", trunk_id="ST", call_to="+34600000001", from_number="x")
    with pytest.raises(RoutingError, match="reject"):
        outbound_call(router, {}, room="r", trunk_id="ST", call_to="+34 600 000 666")
    with pytest.raises(ValueError, match="trunk_id"):
        outbound_call(router, {}, room="r", trunk_id="", call_to="+34600000001")
    with pytest.raises(ValueError, match="room"):
        outbound_call(router, {}, room="", trunk_id="ST", call_to="+34600000001")
    no_default = MetadataRouter.from_dict({"rules": [{"when": {"a": 1}, "agent": "a"}]})
    with pytest.raises(NoRouteMatched):
        outbound_call(no_default, {}, room="r", trunk_id="ST", call_to="+34600000001")


# --------------------------------------------------------------------------- ownership (#22.4)


def test_only_rules_marked_with_the_scope_are_ours_whatever_their_name(
    router: MetadataRouter,
) -> None:
    """#22.4: a rule named lk-metadata/... without the marker, or with another scope's
    marker, is never updated or deleted; the plan says which and why."""
    wanted, _ = desired_dispatch_rules(router, trunk_ids=["ST_B"])
    assert {r.attributes[OWNER_ATTRIBUTE] for r in wanted} == {"trunks:ST_B"}
    handmade = api.SIPDispatchRuleInfo(
        sip_dispatch_rule_id="SDR_7", name="lk-metadata/ops-handmade", trunk_ids=["ST_C"]
    )
    same_name = api.SIPDispatchRuleInfo(sip_dispatch_rule_id="SDR_8", name="lk-metadata/sales")
    other_sync = api.SIPDispatchRuleInfo(
        sip_dispatch_rule_id="SDR_5",
        name="lk-metadata/sales",
        attributes={OWNER_ATTRIBUTE: "trunks:ST_A"},
    )
    plan = plan_sync(wanted, [handmade, same_name, other_sync])
    assert plan.delete == []
    assert plan.update == []
    assert [r.name for r in plan.create] == ["lk-metadata/sales", "lk-metadata/sales#2"]
    assert plan.foreign == [
        "lk-metadata/ops-handmade (SDR_7): no lk-metadata.sip-sync ownership marker",
        "lk-metadata/sales (SDR_5): owned by another sync, scope 'trunks:ST_A'",
        "lk-metadata/sales (SDR_8): no lk-metadata.sip-sync ownership marker",
    ]
    text = plan.format()
    assert text.startswith("scope trunks:ST_B:")
    assert "(not ours, left alone: lk-metadata/sales (SDR_5): owned by another sync" in text


def test_default_scope_comes_from_the_trunks_else_the_rules_file() -> None:
    assert default_scope(["ST_b", "ST_a", "ST_a"]) == "trunks:ST_a,ST_b"
    assert default_scope([], "conf/other.yaml") == "rules:other.yaml"
    assert default_scope() == "default"
    with pytest.raises(ValueError, match="scope"):
        plan_sync([], [])
    with pytest.raises(ValueError, match="scope"):
        plan_sync([], [], scope=" x")
