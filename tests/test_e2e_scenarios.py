"""The six end-to-end scenarios of issue 8, against a real livekit-server.

Real parts only: the ``livekit_server`` fixture (local-only livekit-server), real
worker processes (``examples/agent.py`` with ``examples/rules.yaml``, and
``tests/e2e_agent.py`` which publishes its session as the attribute ``session``),
Python rtc participants, the server API, a real ``redis-server`` and
``lk-metadata serve`` as a real process.

1. Token (TokenIssuer + router) -> join -> dispatch -> adapter -> router -> ``route``
   attribute, for three routes and the default.
2. Server-side ``update_participant(metadata=...)`` -> the agent's session merges it.
3. ``can_update_own_metadata``: client updates sync; without the grant they are
   refused and the session is unchanged.
4. Oversize metadata: the issuer refuses first; a hand-made oversize token is refused
   by the server.
5. Existing room: the token's room config is ignored; ``ensure_dispatch`` brings the
   routed agent in, exactly once.
6. Two workers and ``lk-metadata serve`` sharing Redis: the token carries only a
   session reference; the worker that gets the job loads the full metadata.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from livekit import api, rtc

from livekit.plugins.metadata.codec import SESSION_KEY
from livekit.plugins.metadata.errors import MetadataTooLarge
from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.tokens.issuer import Dispatch, TokenIssuer
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
from tests.fixtures.livekit_server import LiveKitServer
from tests.fixtures.lk_serve import start_serve, stop_serve

pytestmark = pytest.mark.e2e

EXAMPLE_AGENT = REPO / "examples" / "agent.py"
EXAMPLE_RULES = REPO / "examples" / "rules.yaml"
E2E_AGENT = REPO / "tests" / "e2e_agent.py"
ECHO = "e2e-echo"
SHARED = "e2e-shared"


# ------------------------------------------------------------------ workers


@pytest.fixture(scope="module")
def example_worker(
    livekit_server: LiveKitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """``examples/agent.py``'s AgentServer as a real process (see ``tests/e2e_agent.py``)."""
    assert EXAMPLE_AGENT.is_file(), "examples/agent.py does not exist yet"
    log = tmp_path_factory.mktemp("example-worker") / "agent.log"
    argv = [str(E2E_AGENT), "--example", str(EXAMPLE_AGENT)]
    with worker_process(livekit_server, argv, log_path=log) as worker:
        yield worker
        _print_tail_on_failure(worker)


@pytest.fixture(scope="module")
def echo_worker(
    livekit_server: LiveKitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """``tests/e2e_agent.py`` in adapter mode: publishes its session as attribute ``session``."""
    log = tmp_path_factory.mktemp("echo-worker") / "agent.log"
    argv = [str(E2E_AGENT), "--agent-name", ECHO, "--mode", "adapter"]
    with worker_process(livekit_server, argv, log_path=log) as worker:
        yield worker
        _print_tail_on_failure(worker)


def _print_tail_on_failure(worker: WorkerProcess) -> None:
    if worker.proc.poll() is not None:
        sys.stderr.write(f"\n--- worker log tail ({worker.log_path}) ---\n{worker.log_tail()}\n")


def _router() -> MetadataRouter:
    return MetadataRouter.from_file(EXAMPLE_RULES)


def _issuer(server: LiveKitServer, **kwargs: Any) -> TokenIssuer:
    return TokenIssuer(server.api_key, server.api_secret, **kwargs)


async def _session_of(room: rtc.Room, predicate: Any = None) -> dict[str, Any]:
    """The echo agent's session (attribute ``session``), once ``predicate(session)`` holds."""

    def check(value: str) -> bool:
        return predicate is None or bool(predicate(json.loads(value)))

    _, value = await wait_for_remote_attribute(room, "session", predicate=check)
    session: dict[str, Any] = json.loads(value)
    return session


async def _view_of(
    room: rtc.Room, identity: str, predicate: Any = None, *, what: str = "view"
) -> dict[str, Any]:
    """The echo agent's view of one caller (attribute ``view.<identity>``: its metadata;
    ``attrs.<identity>`` with ``what="attrs"``: its attributes), once ``predicate`` holds."""

    def check(value: str) -> bool:
        return predicate is None or bool(predicate(json.loads(value)))

    _, value = await wait_for_remote_attribute(room, f"{what}.{identity}", predicate=check)
    view: dict[str, Any] = json.loads(value)
    return view


# ------------------------------------------------------------------ scenario 1

ROUTING_CASES: list[dict[str, Any]] = [
    {"department": "support", "language": "es", "caller": {"tier": "gold"}},
    {"department": "support", "language": "en"},
    {"department": "sales", "language": "en"},
    {"topic": "weather"},  # matches no rule: the default
]


async def test_1_token_to_routed_agent_for_three_routes_and_default(
    livekit_server: LiveKitServer, example_worker: WorkerProcess
) -> None:
    router = _router()
    issuer = _issuer(livekit_server, router=router)
    expected = [router.route(md) for md in ROUTING_CASES]
    assert len({r.agent for r in expected}) == 4, [r.agent for r in expected]
    assert expected[-1].is_default
    async with lk_api(livekit_server) as lk:
        for metadata, route in zip(ROUTING_CASES, expected, strict=True):
            room = unique_room("s1")
            token = issuer.mint("caller", room, metadata=metadata)
            async with connected_room(livekit_server, token) as joined:
                participant, value = await wait_for_remote_attribute(joined, "route")
                assert value == route.agent, (metadata, route)
                assert participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
                # The server dispatched exactly the routed worker, with the routed job metadata.
                dispatches = await lk.agent_dispatch.list_dispatch(room)
                assert [d.agent_name for d in dispatches] == [route.agent_name]
                assert dispatches[0].metadata == route.metadata_json()
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    assert example_worker.proc.poll() is None


# ------------------------------------------------------------------ scenario 2


async def test_2_server_side_update_participant_merges_into_session(
    livekit_server: LiveKitServer, echo_worker: WorkerProcess
) -> None:
    room = unique_room("s2")
    token = _issuer(livekit_server).mint(
        "caller",
        room,
        metadata={"tier": "gold", "profile": {"lang": "es"}},
        dispatch=Dispatch(ECHO, metadata={"job": "from-dispatch"}),
    )
    async with connected_room(livekit_server, token) as joined:
        first = await _view_of(joined, "caller", lambda s: "tier" in s)
        assert first == {"tier": "gold", "profile": {"lang": "es"}}
        call = await _session_of(joined)  # the call session: the job's metadata only
        assert call == {"job": "from-dispatch"}
        async with lk_api(livekit_server) as lk:
            await lk.room.update_participant(
                api.UpdateParticipantRequest(
                    room=room, identity="caller", metadata='{"profile":{"lang":"en"},"case":7}'
                )
            )
            merged = await _view_of(joined, "caller", lambda s: s.get("case") == 7)
            # Shallow merge: new keys added, top-level keys replaced, others kept.
            assert merged == {"tier": "gold", "profile": {"lang": "en"}, "case": 7}
            await lk.room.update_participant(
                api.UpdateParticipantRequest(room=room, identity="caller", attributes={"q": "vip"})
            )
            await _view_of(joined, "caller", lambda a: a.get("q") == "vip", what="attrs")
            assert await _session_of(joined) == {"job": "from-dispatch"}  # no caller's keys
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))


# ------------------------------------------------------------------ scenario 3


async def test_3_client_updates_with_grant_are_synced(
    livekit_server: LiveKitServer, echo_worker: WorkerProcess
) -> None:
    room = unique_room("s3-granted")
    token = _issuer(livekit_server).mint(
        "caller",
        room,
        metadata={"step": 1},
        dispatch=Dispatch(ECHO),
        can_update_own_metadata=True,
    )
    async with connected_room(livekit_server, token) as joined:
        await _view_of(joined, "caller", lambda s: s.get("step") == 1)
        await joined.local_participant.set_metadata('{"step":2,"extra":"x"}')
        view = await _view_of(joined, "caller", lambda s: s.get("step") == 2)
        assert view["extra"] == "x"
        await joined.local_participant.set_attributes({"mood": "happy"})
        await _view_of(joined, "caller", lambda a: a.get("mood") == "happy", what="attrs")
        async with lk_api(livekit_server) as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))


async def test_3_client_updates_without_grant_are_refused(
    livekit_server: LiveKitServer, echo_worker: WorkerProcess
) -> None:
    room = unique_room("s3-denied")
    token = _issuer(livekit_server).mint(
        "caller", room, metadata={"step": 1}, dispatch=Dispatch(ECHO)
    )
    async with connected_room(livekit_server, token) as joined:
        before = await _view_of(joined, "caller", lambda s: s.get("step") == 1)
        # The SDK setters drop the server's refusal silently (livekit.md §10.2).
        await joined.local_participant.set_metadata('{"step":2,"forged":true}')
        await joined.local_participant.set_attributes({"forged": "1"})
        async with lk_api(livekit_server) as lk:
            # A barrier through the server API: events reach the agent in order, so once
            # the barrier is in the session, a (wrongly) accepted update would be too.
            await lk.room.update_participant(
                api.UpdateParticipantRequest(
                    room=room, identity="caller", attributes={"barrier": "1"}
                )
            )
            attrs = await _view_of(
                joined, "caller", lambda a: a.get("barrier") == "1", what="attrs"
            )
            assert "forged" not in attrs
            after = await _view_of(joined, "caller")
            assert after == before == {"step": 1}
            info = await lk.room.get_participant(
                api.RoomParticipantIdentity(room=room, identity="caller")
            )
            assert json.loads(info.metadata) == {"step": 1}
            assert "forged" not in info.attributes
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))


# ------------------------------------------------------------------ scenario 4


async def test_4_oversize_metadata_issuer_first_then_server(
    livekit_server: LiveKitServer,
) -> None:
    limit = livekit_server.max_metadata_size
    issuer = _issuer(livekit_server, max_metadata_bytes=limit)

    def padded(size: int) -> str:
        text = '{"pad":"' + "x" * (size - 10) + '"}'
        assert len(text.encode()) == size
        return text

    room = unique_room("s4")
    # Exactly at the limit: the issuer signs it and the server lets it join.
    async with connected_room(
        livekit_server, issuer.mint("at-limit", room, metadata=padded(limit))
    ):
        pass
    # One byte over: the issuer refuses before anything reaches the server.
    with pytest.raises(MetadataTooLarge) as refused:
        issuer.mint("over", room, metadata=padded(limit + 1))
    assert refused.value.size == limit + 1
    assert refused.value.limit == limit
    # A hand-made token with the same metadata is refused by the server at join.
    forged = plain_token(livekit_server, "over", room, metadata=padded(limit + 1))
    room_obj = rtc.Room()
    with pytest.raises(rtc.ConnectError):
        await room_obj.connect(livekit_server.url, forged)
    async with lk_api(livekit_server) as lk:
        participants = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        assert "over" not in [p.identity for p in participants.participants]
        # The dispatch API enforces the same limit.
        with pytest.raises(api.TwirpError) as server_refused:
            await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(
                    agent_name=ECHO, room=room, metadata=padded(limit + 1)
                )
            )
        assert server_refused.value.code == "invalid_argument"
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))


# ------------------------------------------------------------------ scenario 5


async def test_5_existing_room_ignores_token_dispatch_and_ensure_dispatch_fixes_it_once(
    livekit_server: LiveKitServer, example_worker: WorkerProcess
) -> None:
    from livekit.plugins.metadata.provision.dispatch import ensure_dispatch

    router = _router()
    metadata = ROUTING_CASES[0]
    route = router.route(metadata)
    room = unique_room("s5")
    async with lk_api(livekit_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=room))
        token = _issuer(livekit_server, router=router).mint("caller", room, metadata=metadata)
        async with connected_room(livekit_server, token) as joined:

            async def named() -> list[api.AgentDispatch]:
                # A room created without agents carries LiveKit's automatic dispatch
                # (empty agent name, livekit-server.md §2.3); only named ones count here.
                return [
                    d
                    for d in await lk.agent_dispatch.list_dispatch(room)
                    if d.agent_name == route.agent_name
                ]

            # The room existed, so the token's roomConfig (and its dispatch) was ignored.
            assert await named() == []
            first = await ensure_dispatch(lk, room, route)
            second = await ensure_dispatch(lk, room, route)
            assert first.id == second.id
            assert [d.id for d in await named()] == [first.id]
            assert first.metadata == route.metadata_json()
            _, value = await wait_for_remote_attribute(joined, "route")
            assert value == route.agent

            def agents() -> list[str]:
                return [
                    p.identity
                    for p in joined.remote_participants.values()
                    if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
                ]

            assert len(agents()) == 1
            # A third call after the agent is in the room is still a no-op.
            third = await ensure_dispatch(lk, room, route)
            assert third.id == first.id
            assert len(await named()) == 1
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))


# ------------------------------------------------------------------ scenario 6


@pytest.fixture
def shared_workers(
    livekit_server: LiveKitServer, redis_server: Any, tmp_path: Path
) -> Iterator[list[WorkerProcess]]:
    """Two worker processes, same agent name, one Redis session store."""
    argv = [str(E2E_AGENT), "--agent-name", SHARED, "--mode", "adapter", "--store"]
    with (
        worker_process(
            livekit_server, [*argv, redis_server.url], log_path=tmp_path / "w1.log"
        ) as w1,
        worker_process(
            livekit_server, [*argv, redis_server.url], log_path=tmp_path / "w2.log"
        ) as w2,
    ):
        yield [w1, w2]
        for w in (w1, w2):  # shown by pytest only when the test failed
            print(f"--- worker {w.pid} log tail ---\n{w.log_tail(30)}")


@pytest.fixture
def token_server(livekit_server: LiveKitServer, redis_server: Any, tmp_path: Path) -> Iterator[str]:
    """``lk-metadata serve`` as a real process: reference mode, Redis store; yields its URL."""
    config = {
        "server_url": livekit_server.url,
        "rules": "none",
        "default_agent": SHARED,
        "store": redis_server.url,
        "reference_mode": True,
        "rate_limit": None,
    }
    server = start_serve(
        tmp_path, config, edge_defaults=False, env=livekit_server.env(), startup_timeout=30
    )
    try:
        yield f"{server.base}/token"
    finally:
        stop_serve(server)


async def test_6_two_workers_share_redis_and_load_referenced_metadata(
    livekit_server: LiveKitServer,
    shared_workers: list[WorkerProcess],
    token_server: str,
) -> None:
    full = {
        "department": "support",
        "caller": {"tier": "gold", "history": ["a" * 200] * 20},  # ~4 KB: kept out of the token
    }
    pids = {str(w.pid) for w in shared_workers}
    seen: list[str] = []
    issuer = _issuer(livekit_server)
    async with aiohttp.ClientSession() as http, lk_api(livekit_server) as lk:
        for _ in range(4):
            async with http.post(
                token_server, json={"participant_metadata": json.dumps(full)}
            ) as resp:
                assert resp.status == 201, await resp.text()
                body = await resp.json()
            room = body["room_name"]  # the endpoint chooses the room (#32)
            assert body["server_url"] == livekit_server.url
            verified = issuer.verify(body["participant_token"])
            # Only the token session's reference travels in the token's dispatch.
            assert [d.agent_name for d in verified.dispatches] == [SHARED]
            session_id = verified.attributes[SESSION_KEY]
            assert json.loads(str(verified.dispatches[0].metadata)) == {SESSION_KEY: session_id}
            assert verified.metadata == {}
            assert "history" not in body["participant_token"]
            async with connected_room(livekit_server, body["participant_token"]) as joined:
                identity = verified.identity
                participant, _ = await wait_for_remote_attribute(joined, f"view.{identity}")
                view = json.loads(participant.attributes[f"view.{identity}"])
                assert view["caller"] == full["caller"]  # read from the token session
                assert view["department"] == "support"
                worker = participant.attributes["worker"]
                assert worker in pids
                seen.append(worker)
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    print(f"jobs per worker: { {pid: seen.count(pid) for pid in sorted(pids)} }")
