"""ensure_dispatch: list first, create only when the routed agent is absent, clear errors.

A plain in-memory stand-in plays ``lkapi.agent_dispatch`` (unit tier); the real
server behaviour is covered by the e2e tier.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from livekit import api

from livekit.plugins.metadata.errors import (
    DispatchError,
    InvalidAttributes,
    InvalidMetadataJSON,
    MetadataTooLarge,
    RoutingError,
)
from livekit.plugins.metadata.provision.dispatch import ensure_dispatch
from livekit.plugins.metadata.routing.router import MetadataRouter

pytestmark = pytest.mark.unit

SECRET = "pin-4242-never-echoed"


class FakeDispatchService:
    """Records calls; keeps dispatches per room like the server does."""

    def __init__(self) -> None:
        self.rooms: dict[str, list[api.AgentDispatch]] = {}
        self.calls: list[str] = []
        self.list_error: BaseException | None = None
        self.create_error: BaseException | None = None
        self.created: list[api.CreateAgentDispatchRequest] = []

    async def list_dispatch(self, room_name: str) -> list[api.AgentDispatch]:
        self.calls.append("list")
        if self.list_error is not None:
            raise self.list_error
        return list(self.rooms.get(room_name, []))

    async def create_dispatch(self, req: api.CreateAgentDispatchRequest) -> api.AgentDispatch:
        self.calls.append("create")
        if self.create_error is not None:
            raise self.create_error
        self.created.append(req)
        d = api.AgentDispatch(
            id=f"AD_{len(self.created)}",
            agent_name=req.agent_name,
            room=req.room,
            metadata=req.metadata,
            deployment=req.deployment,
            attributes=dict(req.attributes),
        )
        self.rooms.setdefault(req.room, []).append(d)
        return d


class FakeAPI:
    def __init__(self) -> None:
        self.agent_dispatch = FakeDispatchService()


@pytest.fixture
def lk() -> FakeAPI:
    return FakeAPI()


ROUTER = MetadataRouter.from_dict(
    {
        "rules": [
            {
                "name": "es",
                "when": {"language": "es"},
                "agent": "support-es",
                "deployment": "staging",
                "attributes": {"queue": "es"},
                "job_metadata": ["language", "customer"],
            }
        ],
        "default": "general",
    }
)


async def test_creates_once_then_returns_the_existing_dispatch(lk: FakeAPI) -> None:
    route = ROUTER.route({"language": "es", "customer": "c1", "pin": SECRET})
    first = await ensure_dispatch(lk, "room-1", route)
    second = await ensure_dispatch(lk, "room-1", route)
    assert first.id == second.id == "AD_1"
    assert lk.agent_dispatch.calls == ["list", "create", "list"]
    (req,) = lk.agent_dispatch.created
    assert req.agent_name == "support-es"
    assert req.room == "room-1"
    assert req.deployment == "staging"
    assert dict(req.attributes) == {"queue": "es"}
    assert req.metadata == '{"language":"es","customer":"c1"}'
    assert json.loads(req.metadata) == route.metadata


async def test_other_agents_rooms_and_deployments_do_not_count(lk: FakeAPI) -> None:
    await ensure_dispatch(lk, "room-1", "sales")
    await ensure_dispatch(lk, "room-1", "support")
    await ensure_dispatch(lk, "room-2", "sales")
    await ensure_dispatch(lk, "room-1", "sales", deployment="canary")
    await ensure_dispatch(lk, "room-1", "sales", deployment="")
    names = [(r.room, r.agent_name, r.deployment) for r in lk.agent_dispatch.created]
    assert names == [
        ("room-1", "sales", ""),
        ("room-1", "support", ""),
        ("room-2", "sales", ""),
        ("room-1", "sales", "canary"),
    ]


async def test_deleted_dispatches_are_ignored(lk: FakeAPI) -> None:
    gone = api.AgentDispatch(id="AD_old", agent_name="sales", room="r")
    gone.state.deleted_at = 123
    lk.agent_dispatch.rooms["r"] = [gone]
    d = await ensure_dispatch(lk, "r", "sales")
    assert d.id != "AD_old"
    assert lk.agent_dispatch.calls == ["list", "create"]


async def test_worker_route_dispatches_to_the_worker_name(lk: FakeAPI) -> None:
    router = MetadataRouter.from_dict({"worker": "pool", "default": "general"})
    await ensure_dispatch(lk, "r", router.route({}))
    assert lk.agent_dispatch.created[0].agent_name == "pool"
    assert lk.agent_dispatch.created[0].metadata == ""


async def test_explicit_arguments_override_the_route(lk: FakeAPI) -> None:
    route = ROUTER.route({"language": "es"})
    await ensure_dispatch(
        lk, "r", route, metadata='{"a": 1}', attributes={"k": "v"}, deployment="prod-eu"
    )
    req = lk.agent_dispatch.created[0]
    assert (req.metadata, dict(req.attributes), req.deployment) == (
        '{"a": 1}',
        {"k": "v"},
        "prod-eu",
    )


async def test_metadata_forms(lk: FakeAPI) -> None:
    await ensure_dispatch(lk, "a", "x", metadata={"b": [1, 2]})
    await ensure_dispatch(lk, "b", "x", metadata={})
    await ensure_dispatch(lk, "c", "x")
    assert [r.metadata for r in lk.agent_dispatch.created] == ['{"b":[1,2]}', "", ""]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"metadata": "{'python': 'repr'}"}, InvalidMetadataJSON),
        ({"metadata": {"big": "x" * 100}, "max_metadata_bytes": 50}, MetadataTooLarge),
        ({"attributes": {"lk.agent.name": "x"}}, InvalidAttributes),
        ({"attributes": {"n": 1}}, InvalidAttributes),
    ],
)
async def test_bad_inputs_fail_before_any_request(
    lk: FakeAPI, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await ensure_dispatch(lk, "r", "x", **kwargs)
    assert lk.agent_dispatch.calls == []


async def test_argument_errors(lk: FakeAPI) -> None:
    with pytest.raises(ValueError, match="room"):
        await ensure_dispatch(lk, "", "x")
    with pytest.raises(ValueError, match="agent name"):
        await ensure_dispatch(lk, "r", "")
    with pytest.raises(TypeError, match="Route or an agent name"):
        await ensure_dispatch(lk, "r", 3)  # type: ignore[arg-type]
    rejecting = MetadataRouter.from_dict({"default": "reject"})
    with pytest.raises(RoutingError, match="reject"):
        await ensure_dispatch(lk, "r", rejecting.route({}))
    assert lk.agent_dispatch.calls == []


@pytest.mark.parametrize(
    ("code", "status", "hint"),
    [
        ("unauthenticated", 401, "LIVEKIT_API_KEY"),
        ("permission_denied", 403, "roomAdmin"),
        ("not_found", 404, "room does not exist"),
        ("invalid_argument", 400, "size limits"),
        ("resource_exhausted", 429, "limits"),
        ("weird", 418, "server logs"),
    ],
)
@pytest.mark.parametrize("stage", ["list", "create"])
async def test_server_errors_become_dispatch_errors(
    lk: FakeAPI, code: str, status: int, hint: str, stage: str
) -> None:
    err = api.TwirpError(code, f"bad metadata {SECRET}", status=status)
    if stage == "list":
        lk.agent_dispatch.list_error = err
    else:
        lk.agent_dispatch.create_error = err
    with pytest.raises(DispatchError) as info:
        await ensure_dispatch(lk, "r", "x", metadata={"pin": SECRET})
    message = str(info.value)
    assert repr(code) in message
    assert f"HTTP {status}" in message
    assert hint in message
    assert ("list" if stage == "list" else "create") in message
    assert SECRET not in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.parametrize(
    ("exc", "what"),
    [
        (aiohttp.ClientConnectionError("refused"), "ClientConnectionError"),
        (asyncio.TimeoutError(), "timed out"),
    ],
)
async def test_transport_errors_become_dispatch_errors(
    lk: FakeAPI, exc: BaseException, what: str
) -> None:
    lk.agent_dispatch.create_error = exc
    with pytest.raises(DispatchError, match="LIVEKIT_URL") as info:
        await ensure_dispatch(lk, "r", "x")
    assert what in str(info.value)
