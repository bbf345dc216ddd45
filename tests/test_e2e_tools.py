"""e2e, real livekit-server: the example worker with a scripted LLM (no network) runs a
tool call that re-routes, and the client sees the agent's ``route`` attribute change."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from livekit import api

from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.tokens.issuer import TokenIssuer
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

E2E_AGENT = REPO / "tests" / "e2e_agent.py"
EXAMPLE_AGENT = REPO / "examples" / "agent.py"
SCRIPT = [[["change_department", {"department": "sales"}]]]


@pytest.fixture(scope="module")
def scripted_worker(
    livekit_server: LiveKitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("tools-worker") / "agent.log"
    argv = [str(E2E_AGENT), "--example", str(EXAMPLE_AGENT)]
    env = {"LKMETA_E2E_SCRIPTED_LLM": json.dumps(SCRIPT)}
    with worker_process(livekit_server, argv, log_path=log, env=env) as worker:
        yield worker
        if worker.proc.poll() is not None:
            sys.stderr.write(f"\n--- worker log tail ---\n{worker.log_tail()}\n")


async def test_a_tool_call_re_routes_and_the_client_sees_route_change(
    livekit_server: LiveKitServer, scripted_worker: WorkerProcess
) -> None:
    router = MetadataRouter.from_file(REPO / "examples" / "rules.yaml")
    issuer = TokenIssuer(livekit_server.api_key, livekit_server.api_secret, router=router)
    room = unique_room("tools")
    token = issuer.mint("caller", room, metadata={"department": "support"})
    async with lk_api(livekit_server) as lk, connected_room(livekit_server, token) as joined:
        _, first = await wait_for_remote_attribute(joined, "route")
        assert first == "support"
        # A user turn as text: the scripted LLM calls change_department("sales").
        await joined.local_participant.send_text("sales, please", topic="lk.chat")
        _, routed = await wait_for_remote_attribute(
            joined, "route", predicate=lambda v: v == "sales"
        )
        assert routed == "sales"
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    assert scripted_worker.proc.poll() is None
