"""Trust boundaries on a real livekit-server (issues 21 and 31).

A web caller and a simulated SIP caller (a token of kind ``sip``, as LiveKit's SIP
service joins) share one room with ``tests/e2e_agent.py`` routing on
``examples/telephony/rules.yaml``: the web caller's forged ``sip.*`` attributes, at
mint and live, count for nothing; the SIP caller's count.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import api

from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.tokens.issuer import Dispatch, TokenIssuer
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

PHONE_RULES = REPO / "examples" / "telephony" / "rules.yaml"
AGENT = "e2e-trust-phone"
FORGED = {"sip.trunkPhoneNumber": "+34910000001", "sip.phoneNumber": "+34600000000"}


@pytest.fixture(scope="module")
def phone_worker(
    livekit_server: LiveKitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("trust-worker") / "agent.log"
    argv = [
        str(REPO / "tests" / "e2e_agent.py"),
        *("--agent-name", AGENT, "--rules", str(PHONE_RULES), "--track", "all"),
    ]
    with worker_process(livekit_server, argv, log_path=log) as worker:
        yield worker


async def test_a_web_caller_cannot_claim_a_phone_number(
    livekit_server: LiveKitServer, phone_worker: WorkerProcess, tmp_path: Path
) -> None:
    router = MetadataRouter.from_file(PHONE_RULES)
    assert router.route({}, attributes=FORGED).agent == "sales"  # what the forgery aims at
    issuer = TokenIssuer(livekit_server.api_key, livekit_server.api_secret)
    room = unique_room("trust-sip")
    web = issuer.mint(
        "web", room, attributes=FORGED, dispatch=Dispatch(AGENT), can_update_own_metadata=True
    )
    phone = issuer.mint("sip-caller", room, attributes=FORGED, kind="sip")
    async with connected_room(livekit_server, web) as web_room:
        _, route = await wait_for_remote_attribute(web_room, "route")
        assert route == "reception"  # routed as a caller without a number
        await web_room.local_participant.set_attributes({"sip.phoneNumber": "+34600000001"})
        async with connected_room(livekit_server, phone):
            _, sip_attrs = await wait_for_remote_attribute(
                web_room, "attrs.sip-caller", predicate=lambda v: "sip." in v
            )
            assert json.loads(sip_attrs) == FORGED  # a SIP participant's numbers count
            assert router.route({}, attributes=json.loads(sip_attrs)).agent == "sales"
            _, web_attrs = await wait_for_remote_attribute(web_room, "attrs.web")
            assert json.loads(web_attrs) == {}  # at mint and live: ignored
        async with lk_api(livekit_server) as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    assert phone_worker.proc.poll() is None
    log = phone_worker.log_path.read_text(errors="replace")
    assert "participant 'web': ignored" in log
    assert "+34600000000" not in log  # key names, never values
