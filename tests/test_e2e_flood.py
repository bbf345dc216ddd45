"""A flood of metadata updates on a real livekit-server (issue 34): the example worker ends
on the final route after a handful of handoffs, not one per update."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from livekit import api

from livekit.plugins.metadata.tokens.issuer import Dispatch, TokenIssuer
from tests.fixtures.e2e import (
    REPO,
    connected_room,
    lk_api,
    unique_room,
    wait_for_remote_attribute,
    worker_process,
)
from tests.fixtures.livekit_server import LiveKitServer

pytestmark = pytest.mark.e2e

UPDATES = 400


async def test_a_flood_ends_on_the_final_route_after_a_handful_of_handoffs(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    argv = [str(REPO / "tests" / "e2e_agent.py"), "--example", str(REPO / "examples" / "agent.py")]
    issuer = TokenIssuer(livekit_server.api_key, livekit_server.api_secret)
    room = unique_room("flood")
    token = issuer.mint(
        "caller",
        room,
        metadata={"department": "support"},
        dispatch=Dispatch("router-demo"),
        can_update_own_metadata=True,
    )
    with worker_process(livekit_server, argv, log_path=log) as worker:
        async with connected_room(livekit_server, token) as joined:
            _, route = await wait_for_remote_attribute(joined, "route")
            assert route == "support"
            for i in range(UPDATES):  # alternating, the last one routes to sales
                department = "sales" if i % 2 else "support"
                await joined.local_participant.set_metadata(
                    json.dumps({"department": department, "n": i})
                )
            sent = time.monotonic()
            await wait_for_remote_attribute(joined, "route", predicate=lambda v: v == "sales")
            settled = time.monotonic() - sent
            async with lk_api(livekit_server) as lk:
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        assert worker.proc.poll() is None
    handoffs = len(re.findall(r"re-routed to", log.read_text(errors="replace")))
    print(f"\n{UPDATES} updates: {handoffs} handoffs, final route {settled:.2f} s after the last")
    assert 1 <= handoffs <= UPDATES // 10, handoffs  # one per settled state, not per update
