"""Both adapters over one core: the same requests, the same statuses, byte-identical JSON.

One side is the aiohttp app behind ``lk-metadata serve`` (``create_app`` on a real
loopback socket); the other is :class:`TokenASGI` mounted in a FastAPI app that has
routes of its own, under a real uvicorn. Each request goes to both; refusals must
match byte for byte (status, ``Content-Type``, ``Retry-After``/``Allow``/
``WWW-Authenticate`` and the body), a success must carry the same fields.
The FastAPI app also hands its own authenticated user to the core as the principal.
Integration tier: two real servers on loopback sockets for each test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
import pytest
import uvicorn
from aiohttp import ClientSession, web
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from livekit import api

from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.server.app import create_app
from livekit.plugins.metadata.server.asgi import TokenASGI
from livekit.plugins.metadata.server.config import Principal, ServerConfig
from livekit.plugins.metadata.sessions.manager import SessionManager
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.integration

KEY = "APItestkey"
SECRET = "test-secret-" + "z" * 40
BEARER = "bearer-key-for-tests-0123456789"
LIMITED = "limited-bearer-key-0123456789"
SHARE = "share-bearer-key-0123456789ab"
RULES: dict[str, Any] = {
    "rules": [
        {"name": "blocked", "when": {"tenant": "banned"}, "reject": True},
        {"name": "sales", "when": {"department": "sales"}, "agent": "sales"},
    ],
    "default": "general",
}


def make_config() -> ServerConfig:
    config = ServerConfig.from_mapping(
        {
            "api_key": KEY,
            "api_secret": SECRET,
            "server_url": "ws://127.0.0.1:7880",
            "max_body_bytes": 4096,
            "metadata": {"max_bytes": 512},
            "allowed_agents": ["sales"],
            "auth_failure_limit": {"rate": 0.01, "burst": 3},
            "auth": {
                "keys": [
                    {"id": "backend", "key": BEARER},
                    {"id": "limited", "key": LIMITED, "rate_limit": {"rate": 0.01, "burst": 2}},
                    {"id": "share", "key": SHARE, "max_sessions": 1},
                ]
            },
        }
    )
    config.router = MetadataRouter.from_dict(RULES)
    config.sessions = SessionManager(secret_key=b"k" * 32)
    return config


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def current_user(x_user: Annotated[str | None, Header()] = None) -> Principal:
    """The host app's own authentication (here: a header its login put there)."""
    if x_user != "alice":
        raise HTTPException(status_code=401, detail="log in first")
    return Principal(id="user:alice", trusted_metadata={"tier": "gold"})


def host_app(tokens: TokenASGI) -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.post("/me/token")
    async def my_token(
        request: Request, user: Annotated[Principal, Depends(current_user)]
    ) -> Response:
        answer = await tokens.respond(request.scope, request.receive, principal=user)
        return Response(answer.body, answer.status, answer.headers)

    app.mount("/lk", tokens)
    return app


@dataclass
class Sides:
    aiohttp_base: str
    asgi_base: str
    http: ClientSession
    asgi_app: TokenASGI

    async def call(
        self,
        base: str,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        async with self.http.request(
            method, base + path, data=body, headers=headers or {}, allow_redirects=False
        ) as resp:
            return Reply(resp.status, dict(resp.headers), await resp.read())

    async def both(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[Reply, Reply]:
        a = await self.call(self.aiohttp_base, method, path, body, headers)
        b = await self.call(self.asgi_base, method, path, body, headers)
        return a, b


@pytest.fixture
async def sides() -> AsyncIterator[Sides]:
    runner = web.AppRunner(create_app(make_config()))
    await runner.setup()
    a_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", a_port).start()
    tokens = TokenASGI(make_config())
    b_port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(host_app(tokens), host="127.0.0.1", port=b_port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    async with ClientSession() as http:
        yield Sides(f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{b_port}/lk", http, tokens)
    server.should_exit = True
    await task
    await tokens.aclose()
    await runner.cleanup()


JSON = {"Content-Type": "application/json"}
AUTH = {**JSON, "Authorization": f"Bearer {BEARER}"}

# (name, method, path, body, headers, expected status, expected error code)
REFUSALS: list[tuple[str, str, str, bytes, dict[str, str], int, str]] = [
    ("no key", "POST", "/token", b"{}", JSON, 401, "unauthorized"),
    ("bad scheme", "POST", "/token", b"{}", {**JSON, "Authorization": "Basic x"}, 401, "unauthorized"),
    ("media type", "POST", "/token", b"{}", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ("charset", "POST", "/token", b"{}", {"Content-Type": "application/json; charset=latin-1"}, 415, "unsupported_media_type"),
    ("not json", "POST", "/token", b"{nope", AUTH, 400, "invalid_json"),
    ("not an object", "POST", "/token", b"[1]", AUTH, 400, "invalid_request"),
    ("unknown field", "POST", "/token", b'{"colour": 1}', AUTH, 400, "invalid_request"),
    ("wrong type", "POST", "/token", b'{"room_name": 5}', AUTH, 400, "invalid_request"),
    ("session named", "POST", "/token", b'{"session_id": "x"}', AUTH, 403, "session_id_not_allowed"),
    ("bad metadata", "POST", "/token", b'{"participant_metadata": "[1"}', AUTH, 400, "invalid_metadata"),
    ("big metadata", "POST", "/token", orjson.dumps({"participant_metadata": orjson.dumps({"a": "x" * 600}).decode()}), AUTH, 413, "metadata_too_large"),
    ("reserved key", "POST", "/token", orjson.dumps({"participant_metadata": '{"lk-metadata.x": 1}'}), AUTH, 422, "reserved_key"),
    ("bad attributes", "POST", "/token", b'{"participant_attributes": {"a": 1}}', AUTH, 400, "invalid_attributes"),
    ("route rejected", "POST", "/token", orjson.dumps({"participant_metadata": '{"tenant": "banned"}'}), AUTH, 403, "route_rejected"),
    ("agent not allowed", "POST", "/token", b'{"room_config": {"agents": [{"agent_name": "spy"}]}}', AUTH, 403, "agent_not_allowed"),
    ("room_config field", "POST", "/token", b'{"room_config": {"max_participants": 3}}', AUTH, 403, "room_config_not_allowed"),
    ("room_config invalid", "POST", "/token", b'{"room_config": {"nope": 1}}', AUTH, 400, "invalid_room_config"),
    ("body over limit", "POST", "/token", b'{"a": "' + b"x" * 5000 + b'"}', AUTH, 413, "body_too_large"),
    ("bad rejoin", "POST", "/token", b'{"rejoin_token": "nope"}', AUTH, 403, "rejoin_refused"),
    ("method on token", "GET", "/token", b"", {}, 405, "method_not_allowed"),
    ("method on healthz", "POST", "/healthz", b"", {}, 405, "method_not_allowed"),
    ("no such path", "GET", "/nope", b"", {}, 404, "not_found"),
    ("route media type", "POST", "/route", b"{}", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ("explain not json", "POST", "/explain", b"{nope", JSON, 400, "invalid_json"),
    ("method on route", "GET", "/route", b"", {}, 405, "method_not_allowed"),
]  # fmt: skip
COMPARED_HEADERS = ("Content-Type", "Cache-Control", "Retry-After", "Allow", "WWW-Authenticate")


def same(a: Reply, b: Reply) -> None:
    assert a.status == b.status
    assert a.body == b.body
    for name in COMPARED_HEADERS:
        assert a.headers.get(name) == b.headers.get(name), name


async def test_refusals_are_byte_identical(sides: Sides) -> None:
    for name, method, path, body, headers, status, code in REFUSALS:
        a, b = await sides.both(method, path, body, headers)
        assert (name, a.status) == (name, status)
        assert a.json()["error"]["code"] == code, name
        same(a, b)


async def test_a_token_from_each_adapter(sides: Sides) -> None:
    body = orjson.dumps({"participant_metadata": '{"department": "sales"}'})
    for reply in await sides.both("POST", "/token", body, AUTH):
        assert reply.status == 201
        assert reply.headers["Cache-Control"] == "no-store"
        answer = reply.json()
        assert set(answer) == {
            "server_url",
            "participant_token",
            "room_name",
            "participant_identity",
        }
        claims = api.TokenVerifier(KEY, SECRET).verify(answer["participant_token"])
        assert claims.video is not None
        assert claims.video.room == answer["room_name"]
        assert claims.room_config is not None
        assert [a.agent_name for a in claims.room_config.agents] == ["sales"]


async def test_limits_refuse_alike(sides: Sides) -> None:
    limited = {**JSON, "Authorization": f"Bearer {LIMITED}"}
    for _ in range(2):
        a, b = await sides.both("POST", "/token", b"{}", limited)
        assert (a.status, b.status) == (201, 201)
    a, b = await sides.both("POST", "/token", b"{}", limited)
    assert a.status == 429
    assert a.json()["error"]["code"] == "rate_limited"
    same(a, b)

    share = {**JSON, "Authorization": f"Bearer {SHARE}"}
    a, b = await sides.both("POST", "/token", b"{}", share)
    assert (a.status, b.status) == (201, 201)
    a, b = await sides.both("POST", "/token", b"{}", share)
    assert a.status == 503
    assert a.json()["error"]["code"] == "store_share_full"
    same(a, b)

    wrong = {**JSON, "Authorization": "Bearer wrong-key-0123456789abcdef"}
    statuses = []
    for _ in range(4):
        a, b = await sides.both("POST", "/token", b"{}", wrong)
        same(a, b)
        statuses.append(a.status)
    assert statuses == [401, 401, 401, 429]
    assert a.json()["error"]["code"] == "auth_rate_limited"


async def test_companions_answer_alike(sides: Sides) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        a, b = await sides.both("GET", path)
        assert a.status == 200
        same(a, b)
    a, b = await sides.both("POST", "/explain", b'{"metadata": {"department": "sales"}}', JSON)
    assert a.status == 200
    assert a.json()["route"]["agent"] == "sales"
    same(a, b)
    a, b = await sides.both("OPTIONS", "/token")
    assert a.status == 204
    assert a.headers["Allow"] == b.headers["Allow"] == "OPTIONS, POST"
    await sides.both("POST", "/token", b"{}", JSON)
    for reply in await sides.both("GET", "/metrics"):
        assert reply.status == 200
        assert b'lk_metadata_http_requests_total{endpoint="token",status="401"} 1.0' in reply.body


async def test_the_host_app_keeps_its_routes_and_hands_over_its_user(
    sides: Sides, caplog: pytest.LogCaptureFixture
) -> None:
    base = sides.asgi_base.removesuffix("/lk")
    hello = await sides.call(base, "GET", "/hello")
    assert hello.status == 200
    assert hello.json() == {"hello": "world"}

    refused = await sides.call(base, "POST", "/me/token", b"{}", JSON)
    assert refused.status == 401
    with caplog.at_level(logging.INFO, logger="livekit.plugins.metadata"):
        ok = await sides.call(base, "POST", "/me/token", b"{}", {**JSON, "X-User": "alice"})
    assert ok.status == 201
    claims = api.TokenVerifier(KEY, SECRET).verify(ok.json()["participant_token"])
    assert ok.json()["participant_identity"] == claims.identity
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("token request")]
    assert len(lines) == 1
    assert "principal=user:alice" in lines[0]
    assert "status=201" in lines[0]
    assert sides.asgi_app.endpoint.state.metrics.sessions_created == 1
