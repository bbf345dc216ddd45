"""A bad dispatch still gets an answer, on a real livekit-server (issue 35, finding 4).

An explicit dispatch (``create_dispatch``) to the ``examples/agent.py`` worker whose job
metadata is not JSON, an array, 100 KB or nested 10,000 deep: the worker's
``on_request`` (``request_handler(router)``) used to reject such a job with
``terminate=False``, no worker took it and no agent ever joined the caller's room. Now
the job is accepted, an agent joins, and it routes to the rules' default (``general``),
as the example's docstring promises. The worker's log names the job and the size, never
the metadata.

The server here allows 512 KiB of metadata (livekit-server's default since v1.13.2), so
the 100 KB dispatch reaches the worker; the suite's shared server keeps 64,000 bytes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from livekit import api, rtc

from tests.fixtures.e2e import (
    REPO,
    WorkerProcess,
    connected_room,
    lk_api,
    plain_token,
    unique_room,
    wait_for_remote_attribute,
    worker_process,
)
from tests.fixtures.livekit_server import LiveKitServer, find_binary, running_livekit_server
from tests.fixtures.servers import unavailable

pytestmark = pytest.mark.e2e

EXAMPLE_AGENT = REPO / "examples" / "agent.py"
E2E_AGENT = REPO / "tests" / "e2e_agent.py"
AGENT_NAME = "router-demo"  # examples/agent.py's default LK_AGENT_NAME
SECRET = "s3cr3t-dispatch-value"

BAD_METADATA = {
    "not JSON": '{"department": "sales", "pin": "' + SECRET + '"',
    "an array": json.dumps([{"department": "sales"}, SECRET]),
    "100 KB": json.dumps({"department": "sales", "pad": SECRET + "x" * 100_000}),
    "nested 10,000 deep": '{"a":' * 10_000 + json.dumps(SECRET) + "}" * 10_000,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKitServer]:
    """A local-only livekit-server whose metadata limit is 512 KiB."""
    binary = find_binary()
    if binary is None:
        unavailable("livekit-server not found; install it with: bash .ci/install-livekit-server")
        raise AssertionError("unreachable")
    workdir = tmp_path_factory.mktemp("livekit-512k")
    with running_livekit_server(binary, workdir=workdir, max_metadata_size=524_288) as running:
        yield running


@pytest.fixture(scope="module")
def example_worker(
    server: LiveKitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """``examples/agent.py``'s AgentServer as a real process (see ``tests/e2e_agent.py``)."""
    log = tmp_path_factory.mktemp("bad-dispatch-worker") / "agent.log"
    argv = [str(E2E_AGENT), "--example", str(EXAMPLE_AGENT)]
    with worker_process(server, argv, log_path=log) as worker:
        yield worker
        if worker.proc.poll() is not None:
            sys.stderr.write(f"\n--- worker log tail ---\n{worker.log_tail()}\n")


async def _route_after_dispatch(server: LiveKitServer, metadata: str) -> str:
    """Dispatch the example's agent with ``metadata``, join as a plain caller, read ``route``."""
    room = unique_room("bad-dispatch")
    async with lk_api(server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=room))
        try:
            dispatch = await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room, metadata=metadata)
            )
            assert dispatch.metadata == metadata  # the server passed it on unchanged
            token = plain_token(server, "caller", room)
            async with connected_room(server, token) as joined:
                participant, value = await wait_for_remote_attribute(joined, "route")
                assert participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
                return value
        finally:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))


@pytest.mark.parametrize("metadata", [pytest.param(v, id=k) for k, v in BAD_METADATA.items()])
async def test_invalid_job_metadata_gets_an_agent_routed_to_the_default(
    server: LiveKitServer, example_worker: WorkerProcess, metadata: str
) -> None:
    assert await _route_after_dispatch(server, metadata) == "general"
    log = example_worker.log()
    assert "routing it as empty metadata" in log
    assert SECRET not in log
    assert example_worker.proc.poll() is None


async def test_valid_job_metadata_still_routes_on_its_content(
    server: LiveKitServer, example_worker: WorkerProcess
) -> None:
    """The control: the same dispatch with valid metadata routes on it (not to the default)."""
    metadata = json.dumps({"department": "sales"})
    assert await _route_after_dispatch(server, metadata) == "sales"
