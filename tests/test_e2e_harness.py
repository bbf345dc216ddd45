"""The end-to-end harness itself: a real livekit-server that stays on loopback.

Proves the parts every scenario relies on, with LiveKit's own SDKs only (no plugin
code): the server is ready and bound to 127.0.0.1 only, the server API works, a
Python rtc participant completes ICE over loopback, and a livekit-agents worker
registers and receives a job from an explicit dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import pytest
from livekit import api, rtc
from livekit.agents import AgentServer, JobContext, JobExecutorType

from tests.fixtures.e2e import (
    connected_room,
    lk_api,
    plain_token,
    unique_room,
    wait_for_remote_attribute,
    wait_until,
)
from tests.fixtures.livekit_server import LiveKitServer, render_config

pytestmark = pytest.mark.e2e


def _listening_sockets(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, local address, port) of every TCP listener / UDP socket of ``pid``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        table = Path(f"/proc/{pid}/net/{proto}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if inode not in inodes:
                continue
            if proto.startswith("tcp") and state != "0A":  # 0A = LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            if len(addr_hex) == 8:
                addr = ".".join(str(int(addr_hex[i : i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                addr = addr_hex
            found.append((proto, addr, int(port_hex, 16)))
    return found


def test_config_keeps_every_address_local() -> None:
    body = render_config(http_port=1, udp_port=2, api_key="k", api_secret="s" * 32)
    assert "stun_servers:\n  - 127.0.0.1:3478" in body
    assert "tcp_port: 0" in body
    assert "use_external_ip: false" in body
    assert "node_ip: 127.0.0.1" in body
    assert "- 127.0.0.1" in body.split("keys:")[0]  # bind_addresses


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_server_listens_on_loopback_only(livekit_server: LiveKitServer) -> None:
    sockets = _listening_sockets(livekit_server.pid)
    assert sockets, "no sockets found for the server process"
    assert {addr for _, addr, _ in sockets} == {"127.0.0.1"}, sockets
    http_port = int(livekit_server.http_url.rsplit(":", 1)[1])
    assert ("tcp", "127.0.0.1", http_port) in sockets


async def test_server_api_rooms(livekit_server: LiveKitServer) -> None:
    name = unique_room("harness-api")
    async with lk_api(livekit_server) as lk:
        created = await lk.room.create_room(api.CreateRoomRequest(name=name, metadata='{"a":1}'))
        assert created.name == name
        listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[name]))
        assert [r.metadata for r in listed.rooms] == ['{"a":1}']
        await lk.room.delete_room(api.DeleteRoomRequest(room=name))
        listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[name]))
        assert list(listed.rooms) == []


async def test_rtc_participant_connects_over_loopback(livekit_server: LiveKitServer) -> None:
    name = unique_room("harness-rtc")
    token = plain_token(
        livekit_server, "alice", name, metadata='{"tier":"gold"}', can_update_own_metadata=True
    )
    async with connected_room(livekit_server, token) as room:
        assert room.isconnected()
        assert room.local_participant.metadata == '{"tier":"gold"}'
        async with lk_api(livekit_server) as lk:

            async def active() -> bool:
                info = await lk.room.get_participant(
                    api.RoomParticipantIdentity(room=name, identity="alice")
                )
                # ACTIVE means the peer connection (ICE + DTLS) is up, not only signalling.
                return bool(info.state == api.ParticipantInfo.State.ACTIVE)

            await wait_until(active)
            # The client-side setter is confirmed by reading it back from the server.
            await room.local_participant.set_attributes({"probe": "1"})

            async def has_attribute() -> bool:
                info = await lk.room.get_participant(
                    api.RoomParticipantIdentity(room=name, identity="alice")
                )
                return info.attributes.get("probe") == "1"

            await wait_until(has_attribute)
            await lk.room.delete_room(api.DeleteRoomRequest(room=name))


async def test_agent_worker_registers_and_gets_dispatched(livekit_server: LiveKitServer) -> None:
    agent_name = unique_room("harness-agent")
    seen: list[tuple[str, str]] = []
    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD,
        ws_url=livekit_server.url,
        api_key=livekit_server.api_key,
        api_secret=livekit_server.api_secret,
        host="127.0.0.1",
        port=0,
        max_retry=1,
    )

    @server.rtc_session(agent_name=agent_name)
    async def entrypoint(ctx: JobContext) -> None:
        seen.append((ctx.job.agent_name, ctx.job.metadata))
        await ctx.connect()
        await ctx.room.local_participant.set_attributes({"route": "probe:" + ctx.job.metadata})

    registered = asyncio.Event()
    server.on("worker_registered", lambda *_: registered.set())
    run_task = asyncio.create_task(server.run(devmode=True))
    try:
        await asyncio.wait_for(registered.wait(), 20)
        name = unique_room("harness-dispatch")
        token = plain_token(livekit_server, "caller", name)
        async with lk_api(livekit_server) as lk:
            await lk.room.create_room(api.CreateRoomRequest(name=name))
            async with connected_room(livekit_server, token) as room:
                dispatch = await lk.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(
                        agent_name=agent_name, room=name, metadata='{"job":1}'
                    )
                )
                assert dispatch.agent_name == agent_name
                participant, value = await wait_for_remote_attribute(room, "route")
                assert value == 'probe:{"job":1}'
                assert participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            await lk.room.delete_room(api.DeleteRoomRequest(room=name))
        assert seen == [(agent_name, '{"job":1}')]
    finally:
        await server.aclose()
        run_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run_task
