"""Phone routing end to end, on a real livekit-server configured with Redis.

* ``lk-metadata sip sync`` (the real command, as a subprocess) against an inbound trunk
  creates, updates and deletes exactly the dispatch rules the routing rules call for,
  a second run changes nothing, and a dispatch rule it did not create survives.
* Callers join exactly as LiveKit's SIP service joins them (a token of kind ``sip``
  with ``sip.*`` attributes, dispatched by the synced rule's ``room_config.agents``);
  ``examples/telephony/agent.py`` runs as a real worker process, waits for the SIP
  participant (``MetadataAdapter(route_on="sip")`` + ``route_input()``), routes on
  its attributes and publishes the chosen agent as attribute ``route``: two numbers
  reach two agents, a hidden number reaches the default.

LiveKit's SIP media service itself cannot run here; the server's SIP API (trunks,
dispatch rules) needs only Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import api, rtc

from livekit.plugins.metadata.provision.sip import OWNER_ATTRIBUTE
from livekit.plugins.metadata.routing.router import MetadataRouter
from tests.fixtures.e2e import (
    REPO,
    WorkerProcess,
    connected_room,
    lk_api,
    unique_room,
    wait_for_remote_attribute,
    worker_process,
)
from tests.fixtures.livekit_server import LiveKitServer

pytestmark = pytest.mark.e2e

EXAMPLE_RULES = REPO / "examples" / "telephony" / "rules.yaml"
EXAMPLE_AGENT = REPO / "examples" / "telephony" / "agent.py"
E2E_AGENT = REPO / "tests" / "e2e_agent.py"

SALES, SUPPORT_A, SUPPORT_B = "+34910000001", "+34910000002", "+34910000003"
FOREIGN_NUMBER = "+34919999999"


def sip_sync(server: LiveKitServer, rules: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``lk-metadata sip sync`` as a real process against ``server``."""
    env = {**os.environ, **server.env(), "COLUMNS": "200"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "livekit.plugins.metadata.cli",
            "sip",
            "sync",
            "--rules",
            str(rules),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


async def _rules_by_name(lk: api.LiveKitAPI) -> dict[str, api.SIPDispatchRuleInfo]:
    listed = await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
    return {r.name: r for r in listed.items}


@pytest.fixture(scope="module")
def trunk_id(livekit_server_with_redis: LiveKitServer) -> str:
    import asyncio

    async def create() -> str:
        async with lk_api(livekit_server_with_redis) as lk:
            trunk = await lk.sip.create_inbound_trunk(
                api.CreateSIPInboundTrunkRequest(
                    trunk=api.SIPInboundTrunkInfo(
                        name="e2e-trunk", numbers=[SALES, SUPPORT_A, SUPPORT_B, FOREIGN_NUMBER]
                    )
                )
            )
            return str(trunk.sip_trunk_id)

    return asyncio.run(create())


# --------------------------------------------------------------------------- sip sync


async def test_sip_sync_creates_updates_deletes_only_its_own_rules(
    livekit_server_with_redis: LiveKitServer, trunk_id: str, tmp_path: Path
) -> None:
    server = livekit_server_with_redis
    async with lk_api(server) as lk:
        foreign = await lk.sip.create_dispatch_rule(
            api.CreateSIPDispatchRuleRequest(
                dispatch_rule=api.SIPDispatchRuleInfo(
                    name="hand-made",
                    trunk_ids=[trunk_id],
                    numbers=[FOREIGN_NUMBER],
                    rule=api.SIPDispatchRule(
                        dispatch_rule_direct=api.SIPDispatchRuleDirect(room_name="front-desk")
                    ),
                )
            )
        )
        rules = tmp_path / "rules.yaml"
        rules.write_text(EXAMPLE_RULES.read_text(encoding="utf-8"), encoding="utf-8")

        dry = sip_sync(server, rules, "--trunk", trunk_id, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "+ create lk-metadata/sales" in dry.stdout
        assert "dry run: nothing changed" in dry.stdout
        assert set(await _rules_by_name(lk)) == {"hand-made"}

        first = sip_sync(server, rules, "--trunk", trunk_id)
        assert first.returncode == 0, first.stderr
        assert "2 to create, 0 to update, 0 to delete" in first.stdout
        assert "(skipped portugal-callers" in first.stdout
        created = await _rules_by_name(lk)
        assert set(created) == {"hand-made", "lk-metadata/sales", "lk-metadata/support"}
        assert list(created["lk-metadata/sales"].numbers) == [SALES]
        assert sorted(created["lk-metadata/support"].numbers) == [SUPPORT_A, SUPPORT_B]
        for name in ("lk-metadata/sales", "lk-metadata/support"):
            rule = created[name]
            assert list(rule.trunk_ids) == [trunk_id]
            assert [a.agent_name for a in rule.room_config.agents] == ["phone-agents"]
            assert rule.rule.dispatch_rule_individual.room_prefix == "call-"

        again = sip_sync(server, rules, "--trunk", trunk_id)
        assert again.returncode == 0, again.stderr
        assert "in sync: nothing to do" in again.stdout
        assert await _rules_by_name(lk) == created  # same ids, same fields

        # Move SUPPORT_B to sales, drop support, add a new line: update, delete, create.
        changed = EXAMPLE_RULES.read_text(encoding="utf-8")
        changed = changed.replace(
            '{phone: "+34 910 000 001"}', '{phone: ["+34 910 000 001", "910 000 003"]}'
        )
        changed = changed.replace(
            '{phone: ["+34 910 000 002", "910 000 003"]}', '{phone: "+34 910 000 002"}'
        )
        changed = changed.replace("agent: support\n", "agent: helpdesk\n")
        rules.write_text(changed, encoding="utf-8")
        third = sip_sync(server, rules, "--trunk", trunk_id)
        assert third.returncode == 0, third.stderr
        assert "1 to create, 1 to update, 1 to delete" in third.stdout
        after = await _rules_by_name(lk)
        assert set(after) == {"hand-made", "lk-metadata/sales", "lk-metadata/helpdesk"}
        sales = after["lk-metadata/sales"]
        assert sales.sip_dispatch_rule_id == created["lk-metadata/sales"].sip_dispatch_rule_id
        assert sorted(sales.numbers) == [SALES, SUPPORT_B]
        assert list(after["lk-metadata/helpdesk"].numbers) == [SUPPORT_A]
        assert after["hand-made"] == foreign  # the foreign rule is untouched

        last = sip_sync(server, rules, "--trunk", trunk_id)
        assert "in sync: nothing to do" in last.stdout
        assert await _rules_by_name(lk) == after


async def test_sip_sync_owns_only_what_it_made_in_its_scope(
    livekit_server_with_redis: LiveKitServer, tmp_path: Path
) -> None:
    """#22.4: two syncs with their own scopes and a hand-made ``lk-metadata/...`` rule:
    a sync never updates or deletes a rule it did not make in its own scope, and its
    plan says which rules it left alone and why."""
    server = livekit_server_with_redis
    async with lk_api(server) as lk:
        trunks = []
        for name, numbers in (("own-a", ["+34920000001", "+34920000002"]), ("own-b", ["+349"])):
            made = await lk.sip.create_inbound_trunk(
                api.CreateSIPInboundTrunkRequest(
                    trunk=api.SIPInboundTrunkInfo(name=name, numbers=numbers)
                )
            )
            trunks.append(str(made.sip_trunk_id))
        trunk_a, trunk_b = trunks
        rules_a = tmp_path / "rules.yaml"
        rules_a.write_text(
            "worker: phones\nphone_region: ES\nrules:\n"
            "  - {when_attributes: {sip.trunkPhoneNumber: {phone: '+34920000001'}}, agent: sales}\n"
            "  - {when_attributes: {sip.trunkPhoneNumber: {phone: '+34920000002'}}, agent: help}\n"
            "default: reception\n",
            encoding="utf-8",
        )
        first = sip_sync(server, rules_a, "--trunk", trunk_a)
        assert first.returncode == 0, first.stderr
        assert "2 to create" in first.stdout
        mine = {
            r.sip_dispatch_rule_id: r
            for r in (await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
            if r.attributes.get(OWNER_ATTRIBUTE) == f"trunks:{trunk_a}"
        }
        assert sorted(r.name for r in mine.values()) == ["lk-metadata/help", "lk-metadata/sales"]

        handmade = await lk.sip.create_dispatch_rule(
            api.CreateSIPDispatchRuleRequest(
                dispatch_rule=api.SIPDispatchRuleInfo(
                    name="lk-metadata/ops-handmade",
                    trunk_ids=[trunk_b],
                    numbers=["+34930000009"],
                    rule=api.SIPDispatchRule(
                        dispatch_rule_direct=api.SIPDispatchRuleDirect(room_name="ops")
                    ),
                )
            )
        )
        other = tmp_path / "other.yaml"
        other.write_text(
            "worker: phones\nrules:\n"
            "  - {when_attributes: {sip.trunkPhoneNumber: {phone: '+34930000001'}}, agent: ops}\n",
            encoding="utf-8",
        )
        second = sip_sync(server, other, "--trunk", trunk_b)
        assert second.returncode == 0, second.stderr
        assert "1 to create, 0 to update, 0 to delete" in second.stdout
        assert f"lk-metadata/ops-handmade ({handmade.sip_dispatch_rule_id}): no " in second.stdout
        for rule_id in mine:
            assert f"({rule_id}): owned by another sync, scope 'trunks:{trunk_a}'" in second.stdout

        # An empty rules file in scope B deletes only B's own rule.
        empty = tmp_path / "empty.yaml"
        empty.write_text("worker: phones\nrules: []\ndefault: reception\n", encoding="utf-8")
        third = sip_sync(server, empty, "--trunk", trunk_b)
        assert third.returncode == 0, third.stderr
        assert "0 to create, 0 to update, 1 to delete" in third.stdout
        after = {
            r.sip_dispatch_rule_id: r
            for r in (await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
        }
        for rule_id, rule in mine.items():
            assert after[rule_id] == rule  # scope A's rules: untouched
        assert after[handmade.sip_dispatch_rule_id] == handmade  # the hand-made one too
        assert not any(
            r.attributes.get(OWNER_ATTRIBUTE) == f"trunks:{trunk_b}" for r in after.values()
        )

        # --scope names a scope: the same rules file under scope A's name is scope A.
        named = sip_sync(server, rules_a, "--trunk", trunk_a, "--scope", "manual", "--dry-run")
        assert named.returncode == 0, named.stderr
        assert named.stdout.startswith("scope manual:")
        assert "2 to create" in named.stdout


# --------------------------------------------------------------------------- calls


@pytest.fixture(scope="module")
def phone_worker(
    livekit_server_with_redis: LiveKitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """``examples/telephony/agent.py`` as a real worker process."""
    log = tmp_path_factory.mktemp("phone-worker") / "agent.log"
    argv = [str(E2E_AGENT), "--example", str(EXAMPLE_AGENT)]
    with worker_process(livekit_server_with_redis, argv, log_path=log) as worker:
        yield worker
        if worker.proc.poll() is not None:
            sys.stderr.write(f"\n--- phone worker log ---\n{worker.log_tail()}\n")


def sip_caller_token(
    server: LiveKitServer, room: str, attributes: dict[str, str], dispatch: api.RoomAgentDispatch
) -> str:
    """A token like the one LiveKit's SIP service joins with: kind sip, sip.* attributes."""
    token = (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(f"sip_{attributes.get('sip.phoneNumber', 'anonymous')}")
        .with_kind("sip")
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .with_room_config(api.RoomConfiguration(agents=[dispatch]))
    )
    if attributes:
        token = token.with_attributes(attributes)
    return token.to_jwt()


CALLS: list[tuple[str, dict[str, str], str]] = [
    (
        "dialed sales",
        {"sip.phoneNumber": "+34600000001", "sip.trunkPhoneNumber": SALES, "sip.callID": "c1"},
        "sales",
    ),
    (
        "dialed support, national spelling",
        {
            "sip.phoneNumber": "+34600000002",
            "sip.trunkPhoneNumber": "910000002",
            "sip.callID": "c2",
        },
        "support",
    ),
    ("hidden number", {"sip.callID": "c3", "sip.callStatus": "active"}, "reception"),
]


@pytest.mark.parametrize(("case", "attributes", "agent"), CALLS, ids=[c[0] for c in CALLS])
async def test_a_sip_caller_reaches_the_agent_its_number_routes_to(
    livekit_server_with_redis: LiveKitServer,
    phone_worker: WorkerProcess,
    case: str,
    attributes: dict[str, str],
    agent: str,
) -> None:
    server = livekit_server_with_redis
    router = MetadataRouter.from_file(EXAMPLE_RULES)
    assert router.route({}, attributes=attributes).agent == agent  # what the worker must do
    # The dispatch a synced rule carries: this worker, no static job metadata.
    dispatch = api.RoomAgentDispatch(agent_name="phone-agents")
    room = unique_room("call")
    async with connected_room(server, sip_caller_token(server, room, attributes, dispatch)) as call:
        assert call.local_participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP
        participant, routed = await wait_for_remote_attribute(call, "route")
        assert participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        assert routed == agent, case
    async with lk_api(server) as lk:
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    assert phone_worker.proc.poll() is None
    log = phone_worker.log()
    for value in attributes.values():
        if value.startswith("+34"):
            assert value not in log  # numbers are routed on, never logged
