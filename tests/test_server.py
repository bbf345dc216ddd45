"""The token endpoint over real HTTP on 127.0.0.1: statuses, policy, tokens, sessions, fuzzing."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from livekit import api
from pydantic import BaseModel

from livekit.plugins.metadata.errors import ConfigError, StoreUnavailable
from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.server.app import (
    Principal,
    ServerConfig,
    create_app,
    openapi_document,
)
from livekit.plugins.metadata.sessions.manager import SessionManager
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.unit

KEY = "APItestkey"
SECRET = "test-secret-" + "z" * 40
BEARER = "bearer-key-for-tests-0123456789"
OTHER_BEARER = "another-bearer-key-9876543210"
ROOT = Path(__file__).resolve().parent.parent

RULES: dict[str, Any] = {
    "rules": [
        {"name": "blocked", "when": {"tenant": "banned"}, "reject": True},
        {
            "name": "support",
            "when": {"department": "support"},
            "agent": "support",
            "job_metadata": ["department", "language"],
        },
        {"name": "sales", "when": {"department": "sales"}, "agent": "sales"},
    ],
    "default": "general",
}


def verifier() -> api.TokenVerifier:
    return api.TokenVerifier(KEY, SECRET)


def make_config(**overrides: Any) -> ServerConfig:
    base: dict[str, Any] = {
        "api_key": KEY,
        "api_secret": SECRET,
        "server_url": "ws://127.0.0.1:7880",
    }
    python_only = {
        k: overrides.pop(k)
        for k in ("authorize", "metadata_schema", "router", "sessions")
        if k in overrides
    }
    base.update(overrides)
    config = ServerConfig.from_mapping(base)
    if "router" not in python_only:
        python_only["router"] = MetadataRouter.from_dict(RULES)
    for k, v in python_only.items():
        setattr(config, k, v)
    return config


class Client:
    """A tiny client for one running app."""

    def __init__(self, base: str, http: aiohttp.ClientSession, app: web.Application) -> None:
        self.base = base
        self.http = http
        self.app = app

    async def post(
        self,
        body: Any = None,
        *,
        path: str = "/token",
        bearer: str | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
        hdrs = {"Content-Type": "application/json"}
        if bearer:
            hdrs["Authorization"] = f"Bearer {bearer}"
        hdrs.update(headers or {})
        payload = data if data is not None else orjson.dumps({} if body is None else body)
        async with self.http.post(self.base + path, data=payload, headers=hdrs) as resp:
            raw = await resp.read()
            return resp.status, orjson.loads(raw) if raw else {}, resp.headers

    async def request(
        self, method: str, path: str, **kw: Any
    ) -> tuple[int, bytes, aiohttp.typedefs.LooseHeaders]:
        async with self.http.request(method, self.base + path, **kw) as resp:
            return resp.status, await resp.read(), resp.headers


@asynccontextmanager
async def serve(config: ServerConfig) -> AsyncIterator[Client]:
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            yield Client(f"http://127.0.0.1:{port}", http, app)
    finally:
        await runner.cleanup()


def sessions_of(config: ServerConfig) -> SessionManager:
    assert isinstance(config.sessions, SessionManager)
    return config.sessions


def new_sessions() -> SessionManager:
    return SessionManager(secret_key=b"k" * 32)


def error_code(body: dict[str, Any]) -> str:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    code: str = body["error"]["code"]
    return code


# ---------------------------------------------------------------------------- happy paths


async def test_routed_token_verifies_and_session_matches() -> None:
    config = make_config(sessions=new_sessions())
    async with serve(config) as c:
        md = {"department": "support", "language": "es", "tier": "gold"}
        status, body, headers = await c.post(
            {
                "room_name": "room-a",
                "participant_identity": "alice",
                "participant_name": "Alice",
                "participant_metadata": orjson.dumps(md).decode(),
                "participant_attributes": {"plan": "pro"},
            }
        )
        assert status == 201, body
        assert set(body) == {"server_url", "participant_token"}
        assert body["server_url"] == "ws://127.0.0.1:7880"
        assert headers["Cache-Control"] == "no-store"
        claims = verifier().verify(body["participant_token"])
        assert claims.identity == "alice"
        assert claims.name == "Alice"
        assert claims.video is not None
        assert claims.video.room == "room-a"
        assert claims.video.room_join is True
        assert not claims.video.can_update_own_metadata
        assert not claims.video.room_admin
        assert orjson.loads(claims.metadata) == md
        assert claims.attributes == {"plan": "pro"}
        assert claims.room_config is not None
        (agent,) = claims.room_config.agents
        assert agent.agent_name == "support"
        assert orjson.loads(agent.metadata) == {"department": "support", "language": "es"}
        stored = await sessions_of(config).get_session_metadata("room-a")
        assert stored == orjson.loads(claims.metadata)


async def test_default_route_and_generated_names_are_unguessable() -> None:
    config = make_config(sessions=new_sessions())
    async with serve(config) as c:
        seen = set()
        for _ in range(3):
            status, body, _ = await c.post({})
            assert status == 201
            claims = verifier().verify(body["participant_token"])
            assert claims.video is not None
            assert claims.identity.startswith("user-")
            assert claims.video.room.startswith("room-")
            assert len(claims.identity) >= 5 + 20
            assert len(claims.video.room) >= 5 + 20
            assert claims.room_config is not None
            assert [a.agent_name for a in claims.room_config.agents] == ["general"]
            seen.add((claims.identity, claims.video.room))
        assert len(seen) == 3


async def test_can_update_own_metadata_only_when_configured() -> None:
    async with serve(make_config(sessions=new_sessions(), allow_update_own_metadata=True)) as c:
        status, body, _ = await c.post({})
        assert status == 201
        claims = verifier().verify(body["participant_token"])
        assert claims.video is not None
        assert claims.video.can_update_own_metadata is True


async def test_client_agent_from_allowlist_camel_case() -> None:
    config = make_config(sessions=new_sessions(), allowed_agents=["sales", "vip"])
    async with serve(config) as c:
        status, body, _ = await c.post(
            {
                "room_name": "r-client",
                "participant_metadata": '{"department": "support"}',
                "room_config": {"agents": [{"agentName": "vip", "metadata": '{"topic": "x"}'}]},
            }
        )
        assert status == 201, body
        claims = verifier().verify(body["participant_token"])
        assert claims.room_config is not None
        (agent,) = claims.room_config.agents
        assert agent.agent_name == "vip"
        assert orjson.loads(agent.metadata) == {"department": "support", "topic": "x"}
        stored = await sessions_of(config).get_session_metadata("r-client")
        assert stored == {"department": "support", "topic": "x"}


async def test_protobuf_json_names_are_accepted_at_the_top_level() -> None:
    async with serve(make_config(sessions=new_sessions())) as c:
        status, body, _ = await c.post(
            {"roomName": "camel", "participantIdentity": "cam", "participantMetadata": "{}"}
        )
        assert status == 201, body
        claims = verifier().verify(body["participant_token"])
        assert claims.identity == "cam"
        assert claims.video is not None
        assert claims.video.room == "camel"
        status, body, _ = await c.post({"roomName": "a", "room_name": "b"})
        assert status == 400
        assert "twice" in body["error"]["message"]


async def test_client_agent_outside_allowlist_is_refused() -> None:
    async with serve(make_config(sessions=new_sessions(), allowed_agents=["sales"])) as c:
        status, body, _ = await c.post({"room_config": {"agents": [{"agent_name": "admin-bot"}]}})
        assert status == 403
        assert error_code(body) == "agent_not_allowed"


async def test_room_config_fields_need_allowlist() -> None:
    async with serve(make_config(sessions=new_sessions(), allowed_agents=["sales"])) as c:
        for rc in (
            {"empty_timeout": 30},
            {"maxParticipants": 2},
            {"agents": [{"agent_name": "sales", "deployment": "staging"}]},
            {"agents": [{"agent_name": "sales"}, {"agent_name": "sales"}]},
        ):
            status, body, _ = await c.post({"room_config": rc})
            assert status == 403, rc
            assert error_code(body) == "room_config_not_allowed"
    config = make_config(
        sessions=new_sessions(),
        allowed_agents=["sales"],
        allowed_room_config=["agents.deployment"],
    )
    async with serve(config) as c:
        status, body, _ = await c.post(
            {"room_config": {"agents": [{"agent_name": "sales", "deployment": "staging"}]}}
        )
        assert status == 201, body
        claims = verifier().verify(body["participant_token"])
        assert claims.room_config is not None
        assert claims.room_config.agents[0].deployment == "staging"


async def test_reference_mode_stores_full_metadata() -> None:
    config = make_config(sessions=new_sessions(), reference_mode=True)
    async with serve(config) as c:
        status, body, _ = await c.post(
            {"room_name": "ref-room", "participant_metadata": '{"department": "sales", "n": 1}'}
        )
        assert status == 201, body
        claims = verifier().verify(body["participant_token"])
        assert claims.metadata == ""
        assert claims.room_config is not None
        (agent,) = claims.room_config.agents
        assert agent.agent_name == "sales"
        assert orjson.loads(agent.metadata) == {"session": "ref-room"}
        stored = await sessions_of(config).get_session_metadata("ref-room")
        assert stored == {"department": "sales", "n": 1}


async def test_routing_disabled_dispatches_default_agent_or_none() -> None:
    config = make_config(sessions=new_sessions(), rules="none", router=None)
    async with serve(config) as c:
        status, body, _ = await c.post({})
        assert status == 201
        assert verifier().verify(body["participant_token"]).room_config is None
    config = make_config(sessions=new_sessions(), rules="none", router=None, default_agent="solo")
    async with serve(config) as c:
        status, body, _ = await c.post({"participant_metadata": '{"a": 1}'})
        claims = verifier().verify(body["participant_token"])
        assert claims.room_config is not None
        assert claims.room_config.agents[0].agent_name == "solo"


# ---------------------------------------------------------------------------- authentication


async def test_bearer_keys_pin_identity_and_override_metadata() -> None:
    config = make_config(
        sessions=new_sessions(),
        auth={
            "keys": [
                {
                    "id": "web",
                    "key": BEARER,
                    "identity": "user-42",
                    "trusted_metadata": {"tenant": "acme", "department": "sales"},
                },
                {"id": "other", "key": OTHER_BEARER},
            ]
        },
    )
    async with serve(config) as c:
        status, body, headers = await c.post({})
        assert status == 401
        assert error_code(body) == "unauthorized"
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, body, _ = await c.post({}, bearer="wrong-key-wrong-key-wrong")
        assert status == 401
        status, body, _ = await c.post({}, headers={"Authorization": "Basic abc"})
        assert status == 401

        status, body, _ = await c.post(
            {"room_name": "pinned", "participant_metadata": '{"department": "support", "x": 1}'},
            bearer=BEARER,
        )
        assert status == 201, body
        claims = verifier().verify(body["participant_token"])
        assert claims.identity == "user-42"
        md = orjson.loads(claims.metadata)
        assert md == {"department": "sales", "x": 1, "tenant": "acme"}
        assert claims.room_config is not None
        assert claims.room_config.agents[0].agent_name == "sales"
        assert await sessions_of(config).get_session_metadata("pinned") == md

        status, body, _ = await c.post({"participant_identity": "someone-else"}, bearer=BEARER)
        assert status == 403
        assert error_code(body) == "identity_mismatch"
        status, body, _ = await c.post({"participant_identity": "user-42"}, bearer=BEARER)
        assert status == 201

        status, body, _ = await c.post({"participant_identity": "bob"}, bearer=OTHER_BEARER)
        assert status == 201
        assert verifier().verify(body["participant_token"]).identity == "bob"


async def test_room_prefix_confines_a_caller_to_its_rooms() -> None:
    """A principal with room_prefix gets tokens only for its rooms; others' sessions stay."""
    sessions = new_sessions()
    config = make_config(
        sessions=sessions,
        auth={
            "keys": [
                {"id": "tenant-a", "key": BEARER, "room_prefix": "acme-"},
                {"id": "open", "key": OTHER_BEARER},
            ]
        },
    )
    md = '{"department": "support"}'
    async with serve(config) as c:
        status, body, _ = await c.post(
            {"room_name": "globex-1", "participant_metadata": md}, bearer=OTHER_BEARER
        )
        assert status == 201
        before = await sessions.get_session_metadata("globex-1")
        assert before == {"department": "support"}

        hostile = '{"department": "sales", "customer": "attacker"}'
        status, body, _ = await c.post(
            {"room_name": "globex-1", "participant_metadata": hostile}, bearer=BEARER
        )
        assert status == 403
        assert error_code(body) == "room_not_allowed"
        assert "globex" not in orjson.dumps(body).decode()
        assert await sessions.get_session_metadata("globex-1") == before

        status, body, _ = await c.post({"room_name": "acme-7"}, bearer=BEARER)
        assert status == 201
        assert verifier().verify(body["participant_token"]).video.room == "acme-7"

        status, body, _ = await c.post({}, bearer=BEARER)
        assert status == 201
        generated = verifier().verify(body["participant_token"]).video.room
        assert generated.startswith("acme-")
        assert len(generated) > len("acme-") + 15


@pytest.mark.parametrize("prefix", ["", "x" * 129])
def test_room_prefix_is_validated(prefix: str) -> None:
    """An empty or over-long room_prefix is a config error, for keys and for Principals."""
    with pytest.raises(ConfigError, match=r"auth\.keys\.0\.room_prefix"):
        make_config(auth={"keys": [{"id": "k", "key": BEARER, "room_prefix": prefix}]})
    with pytest.raises(ValueError, match="room_prefix"):
        Principal(id="p", room_prefix=prefix)


async def test_hashed_keys_are_accepted() -> None:
    import hashlib

    digest = hashlib.sha256(BEARER.encode()).hexdigest()
    config = make_config(
        sessions=new_sessions(), auth={"keys": [{"id": "h", "key_sha256": digest}]}
    )
    async with serve(config) as c:
        assert (await c.post({}, bearer=BEARER))[0] == 201
        assert (await c.post({}, bearer=OTHER_BEARER))[0] == 401


@pytest.mark.parametrize("is_async", [False, True])
async def test_authorize_hook(is_async: bool) -> None:
    def decide(request: web.Request) -> Principal | None:
        who = request.headers.get("X-User")
        if who is None:
            return None
        if who == "mallory":
            raise web.HTTPForbidden(reason="banned user")
        if who == "crash":
            raise RuntimeError("db password=hunter2 leaked in a message")
        return Principal(
            id=f"user:{who}",
            identity=who,
            trusted_metadata={"user_id": who},
            allowed_agents=frozenset({"support"}),
        )

    async def adecide(request: web.Request) -> Principal | None:
        await asyncio.sleep(0)
        return decide(request)

    hook: Callable[[web.Request], Principal | Awaitable[Principal | None] | None]
    hook = adecide if is_async else decide
    config = make_config(sessions=new_sessions(), authorize=hook)
    async with serve(config) as c:
        status, body, _ = await c.post({})
        assert status == 401
        status, body, _ = await c.post({}, headers={"X-User": "mallory"})
        assert status == 403
        assert body["error"]["message"] == "banned user"
        status, body, _ = await c.post(
            {"participant_metadata": '{"department": "support", "user_id": "forged"}'},
            headers={"X-User": "carol"},
        )
        assert status == 201, body
        claims = verifier().verify(body["participant_token"])
        assert claims.identity == "carol"
        assert orjson.loads(claims.metadata)["user_id"] == "carol"
        # The routed agent must be one this principal may use.
        status, body, _ = await c.post(
            {"participant_metadata": '{"department": "sales"}'}, headers={"X-User": "carol"}
        )
        assert status == 403
        assert error_code(body) == "agent_not_allowed"
        status, raw, _ = await c.request(
            "POST",
            "/token",
            data=b"{}",
            headers={"Content-Type": "application/json", "X-User": "crash"},
        )
        assert status == 500
        assert orjson.loads(raw) == {"error": {"code": "internal", "message": "internal error"}}
        assert b"hunter2" not in raw


def test_no_auth_on_public_host_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="authenticate"):
        create_app(make_config(host="0.0.0.0", sessions=new_sessions()))
    create_app(make_config(host="0.0.0.0", sessions=new_sessions(), auth={"allow_anonymous": True}))


def test_missing_credentials_only_fall_back_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEKIT_API_KEY", raising=False)
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)
    cfg = ServerConfig.from_mapping({"host": "0.0.0.0", "auth": {"allow_anonymous": True}})
    cfg.sessions = new_sessions()
    with pytest.raises(ConfigError, match="LIVEKIT_API_KEY"):
        create_app(cfg)
    with pytest.raises(ConfigError, match="both"):
        create_app(ServerConfig.from_mapping({"api_key": "only-key"}))


async def test_dev_keys_on_loopback_with_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import warnings

    monkeypatch.delenv("LIVEKIT_API_KEY", raising=False)
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)
    cfg = ServerConfig()
    cfg.sessions = new_sessions()
    with caplog.at_level(logging.WARNING, logger="livekit.plugins.metadata"):
        async with serve(cfg) as c:
            status, body, _ = await c.post({"participant_metadata": '{"department": "sales"}'})
    assert status == 201
    assert any("dev-server keys" in r.getMessage() for r in caplog.records)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        claims = api.TokenVerifier("devkey", "secret").verify(body["participant_token"])
    assert claims.room_config is not None
    (agent,) = claims.room_config.agents  # the bundled example rules: one worker hosts all
    assert agent.agent_name == "router-demo"
    assert orjson.loads(agent.metadata) == {"department": "sales"}


# ---------------------------------------------------------------------------- error statuses


async def test_malformed_requests_are_400() -> None:
    async with serve(make_config(sessions=new_sessions())) as c:
        cases: list[tuple[bytes, str]] = [
            (b"{not json", "invalid_json"),
            (b"[1, 2]", "invalid_request"),
            (b'"x"', "invalid_request"),
            (orjson.dumps({"bogus": 1}), "invalid_request"),
            (orjson.dumps({"room_name": 5}), "invalid_request"),
            (orjson.dumps({"room_name": "r" * 257}), "invalid_request"),
            (orjson.dumps({"participant_metadata": "{oops"}), "invalid_metadata"),
            (orjson.dumps({"participant_metadata": "[1]"}), "invalid_metadata"),
            (orjson.dumps({"participant_metadata": {"a": 1}}), "invalid_request"),
            (orjson.dumps({"participant_attributes": {"a": 1}}), "invalid_attributes"),
            (orjson.dumps({"participant_attributes": {"lk.x": "y"}}), "invalid_attributes"),
            (orjson.dumps({"participant_attributes": ["a"]}), "invalid_attributes"),
            (orjson.dumps({"room_config": {"nope": 1}}), "invalid_room_config"),
            (orjson.dumps({"room_config": {"agents": "x"}}), "invalid_room_config"),
            (orjson.dumps({"room_config": {"empty_timeout": -1}}), "invalid_room_config"),
            (orjson.dumps({"room_config": []}), "invalid_room_config"),
            (
                orjson.dumps({"room_config": {"agents": [{"agent_name": "sales", "bad": 1}]}}),
                "invalid_room_config",
            ),
        ]
        for raw, code in cases:
            status, body, _ = await c.post(data=raw)
            assert status == 400, raw
            assert error_code(body) == code, raw


async def test_body_and_metadata_size_limits_are_413() -> None:
    config = make_config(sessions=new_sessions(), max_body_bytes=2048, metadata={"max_bytes": 100})
    async with serve(config) as c:
        big = orjson.dumps({"participant_metadata": orjson.dumps({"a": "x" * 4000}).decode()})
        status, body, _ = await c.post(data=big)
        assert status == 413
        assert error_code(body) == "body_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1000

        status, raw, _ = await c.request(
            "POST", "/token", data=chunks(), headers={"Content-Type": "application/json"}
        )
        assert status == 413
        assert error_code(orjson.loads(raw)) == "body_too_large"

        md = orjson.dumps({"a": "x" * 200}).decode()
        status, body, _ = await c.post({"participant_metadata": md})
        assert status == 413
        assert error_code(body) == "metadata_too_large"
        assert "x" * 20 not in body["error"]["message"]


async def test_content_type_must_be_json() -> None:
    async with serve(make_config(sessions=new_sessions())) as c:
        for ctype in ("text/plain", "application/x-www-form-urlencoded"):
            status, body, _ = await c.post({}, headers={"Content-Type": ctype})
            assert status == 415
            assert error_code(body) == "unsupported_media_type"
        status, _raw, _ = await c.request("POST", "/token", data=b"{}")
        assert status == 415
        status, body, _ = await c.post(
            {}, headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert status == 201


class Caller(BaseModel):
    department: str
    language: str = "en"


async def test_metadata_policy_is_422() -> None:
    config = make_config(
        sessions=new_sessions(),
        metadata={"allowed_keys": ["department", "language"], "allowed_attribute_keys": ["plan"]},
    )
    async with serve(config) as c:
        status, body, _ = await c.post({"participant_metadata": '{"department": "x", "admin": 1}'})
        assert status == 422
        assert error_code(body) == "metadata_key_not_allowed"
        assert "'admin'" in body["error"]["message"]
        status, body, _ = await c.post({"participant_attributes": {"role": "root"}})
        assert status == 422
        assert error_code(body) == "attribute_key_not_allowed"
        status, body, _ = await c.post(
            {"participant_metadata": '{"department": "x"}', "participant_attributes": {"plan": "a"}}
        )
        assert status == 201

    async with serve(make_config(sessions=new_sessions(), metadata_schema=Caller)) as c:
        status, body, _ = await c.post({"participant_metadata": '{"language": "secret-value"}'})
        assert status == 422
        assert error_code(body) == "schema_violation"
        assert "department" in body["error"]["message"]
        assert "secret-value" not in body["error"]["message"]
        status, body, _ = await c.post({"participant_metadata": '{"department": "support"}'})
        assert status == 201


async def test_schema_from_config_string() -> None:
    config = make_config(sessions=new_sessions(), metadata={"schema": "tests.test_server:Caller"})
    async with serve(config) as c:
        assert (await c.post({"participant_metadata": "{}"}))[0] == 422
    with pytest.raises(ConfigError, match="schema"):
        create_app(make_config(sessions=new_sessions(), metadata={"schema": "nope.missing:X"}))


async def test_routing_outcomes_403_and_422() -> None:
    async with serve(make_config(sessions=new_sessions())) as c:
        status, body, _ = await c.post({"participant_metadata": '{"tenant": "banned"}'})
        assert status == 403
        assert error_code(body) == "route_rejected"
    strict = MetadataRouter.from_dict({"rules": [{"when": {"department": "sales"}, "agent": "s"}]})
    async with serve(make_config(sessions=new_sessions(), router=strict)) as c:
        status, body, _ = await c.post({"participant_metadata": '{"department": "hr"}'})
        assert status == 422
        assert error_code(body) == "no_route"


async def test_rate_limit_per_principal_is_429() -> None:
    config = make_config(
        sessions=new_sessions(),
        rate_limit={"rate": 0.01, "burst": 2},
        auth={"keys": [{"id": "a", "key": BEARER}, {"id": "b", "key": OTHER_BEARER}]},
    )
    async with serve(config) as c:
        assert (await c.post({}, bearer=BEARER))[0] == 201
        assert (await c.post({}, bearer=BEARER))[0] == 201
        status, body, headers = await c.post({}, bearer=BEARER)
        assert status == 429
        assert error_code(body) == "rate_limited"
        assert int(headers["Retry-After"]) >= 1
        assert (await c.post({}, bearer=OTHER_BEARER))[0] == 201


async def test_principal_rate_limit_override() -> None:
    def hook(request: web.Request) -> Principal:
        from livekit.plugins.metadata.server.app import RateLimit

        return Principal(id="tight", rate_limit=RateLimit(rate=0.01, burst=1))

    async with serve(make_config(sessions=new_sessions(), authorize=hook)) as c:
        assert (await c.post({}))[0] == 201
        assert (await c.post({}))[0] == 429


async def test_wrong_method_405_and_unknown_path_404() -> None:
    async with serve(make_config(sessions=new_sessions())) as c:
        status, raw, headers = await c.request("GET", "/token")
        assert status == 405
        assert error_code(orjson.loads(raw)) == "method_not_allowed"
        assert "POST" in headers["Allow"]
        status, raw, headers = await c.request("DELETE", "/healthz")
        assert status == 405
        assert "GET" in headers["Allow"]
        status, raw, _ = await c.request("GET", "/nope")
        assert status == 404
        assert error_code(orjson.loads(raw)) == "not_found"


async def test_store_unavailable_is_503() -> None:
    class DownStore:
        async def set_session_metadata(self, sid: str, mapping: Any) -> None:
            raise StoreUnavailable("redis at redis://***@127.0.0.1:1 is unreachable")

    async with serve(make_config(sessions=DownStore())) as c:
        status, body, _ = await c.post({})
        assert status == 503
        assert error_code(body) == "store_unavailable"


# ---------------------------------------------------------------------------- CORS, companions


async def test_cors_allowlist() -> None:
    config = make_config(sessions=new_sessions(), cors_origins=["https://app.example.com"])
    async with serve(config) as c:
        pre = {
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        status, _, headers = await c.request("OPTIONS", "/token", headers=pre)
        assert status == 204
        assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in headers["Access-Control-Allow-Headers"]

        status, raw, headers = await c.request(
            "OPTIONS", "/token", headers={**pre, "Origin": "https://evil.example"}
        )
        assert status == 403
        assert "Access-Control-Allow-Origin" not in headers
        assert error_code(orjson.loads(raw)) == "origin_not_allowed"

        status, _, headers = await c.post({}, headers={"Origin": "https://app.example.com"})
        assert status == 201
        assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        status, _, headers = await c.post({}, headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in headers
    async with serve(make_config(sessions=new_sessions())) as c:  # default: no origin at all
        status, _, headers = await c.request("OPTIONS", "/token", headers=pre)
        assert status == 403
        assert "Access-Control-Allow-Origin" not in headers


async def test_healthz_metrics_openapi() -> None:
    config = make_config(sessions=new_sessions())
    async with serve(config) as c:
        status, raw, _ = await c.request("GET", "/healthz")
        assert status == 200
        assert orjson.loads(raw) == {"status": "ok"}
        await c.post({"participant_metadata": '{"department": "support"}'})
        await c.post(data=b"{bad")
        status, raw, headers = await c.request("GET", "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain")
        text = raw.decode()
        assert 'lk_metadata_http_requests_total{endpoint="token",status="201"} 1.0' in text
        assert 'lk_metadata_http_requests_total{endpoint="token",status="400"} 1.0' in text
        assert 'lk_metadata_routes_total{agent="support",source="router"} 1.0' in text
        assert "lk_metadata_mint_seconds_count 1.0" in text
        status, raw, _ = await c.request("GET", "/openapi.json")
        assert status == 200
        doc = orjson.loads(raw)
        assert doc["openapi"].startswith("3.")
        assert set(doc["paths"]) == {"/token", "/healthz", "/metrics", "/openapi.json"}
        assert doc == orjson.loads(orjson.dumps(openapi_document(config.path)))


async def test_custom_path() -> None:
    async with serve(make_config(sessions=new_sessions(), path="/api/livekit/token")) as c:
        assert (await c.post({}, path="/api/livekit/token"))[0] == 201
        assert (await c.post({}))[0] == 404


async def test_one_log_line_per_request_without_values(caplog: pytest.LogCaptureFixture) -> None:
    async with serve(make_config(sessions=new_sessions())) as c:
        with caplog.at_level(logging.INFO, logger="livekit.plugins.metadata"):
            caplog.clear()
            status, body, _ = await c.post(
                {
                    "room_name": "logged-room",
                    "participant_metadata": '{"department": "support", "ssn": "123-45-6789"}',
                }
            )
            assert status == 201
            status2, _, _ = await c.post({"participant_metadata": '{"ssn": 999-}'})
            assert status2 == 400
    lines = [r for r in caplog.records if getattr(r, "status", None) is not None]
    assert len(lines) == 2
    first = lines[0]
    assert first.principal == "anonymous"  # type: ignore[attr-defined]
    assert first.room == "logged-room"  # type: ignore[attr-defined]
    assert first.agent == "support"  # type: ignore[attr-defined]
    assert first.status == 201  # type: ignore[attr-defined]
    assert first.latency_ms >= 0  # type: ignore[attr-defined]
    assert lines[1].status == 400  # type: ignore[attr-defined]
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert "123-45-6789" not in text
    assert body["participant_token"] not in text


async def test_200_concurrent_requests() -> None:
    config = make_config(sessions=new_sessions(), rate_limit=None)
    async with serve(config) as c:

        async def one(i: int) -> tuple[int, dict[str, Any]]:
            md = orjson.dumps({"department": "sales" if i % 2 else "support", "i": i}).decode()
            status, body, _ = await c.post({"room_name": f"conc-{i}", "participant_metadata": md})
            return status, body

        results = await asyncio.gather(*(one(i) for i in range(200)))
        assert [s for s, _ in results] == [201] * 200
        for i, (_, body) in enumerate(results):
            claims = verifier().verify(body["participant_token"])
            assert claims.video is not None
            assert claims.video.room == f"conc-{i}"
            assert claims.room_config is not None
            expected = "sales" if i % 2 else "support"
            assert claims.room_config.agents[0].agent_name == expected
            stored = await sessions_of(config).get_session_metadata(f"conc-{i}")
            assert stored == orjson.loads(claims.metadata)


# ---------------------------------------------------------------------------- config files


def test_config_files(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("rules: []\ndefault: general\n")
    (tmp_path / "a.yaml").write_text(
        "port: 9001\nrules: rules.yaml\ncors_origins: [https://x.example]\n"
        "auth:\n  keys:\n    - {id: web, key_sha256: '" + "ab" * 32 + "'}\n"
    )
    (tmp_path / "b.toml").write_text('port = 9002\nstore = "memory"\n[rate_limit]\nrate = 2.0\n')
    (tmp_path / "c.json").write_text('{"port": 9003, "metadata": {"allowed_keys": ["a"]}}')
    a = ServerConfig.from_file(tmp_path / "a.yaml", port=9100)
    assert a.port == 9100
    assert a.rules == str(tmp_path / "rules.yaml")
    assert a.auth.keys[0].id == "web"
    assert ServerConfig.from_file(tmp_path / "b.toml").rate_limit is not None
    assert ServerConfig.from_file(tmp_path / "c.json").metadata.allowed_keys == ["a"]
    (tmp_path / "bad.yaml").write_text("port: [1]\nsurprise: 1\n")
    with pytest.raises(ConfigError, match="port") as info:
        ServerConfig.from_file(tmp_path / "bad.yaml")
    assert "surprise" in str(info.value)
    (tmp_path / "secret.yaml").write_text("auth:\n  keys:\n    - {id: w, key: short-secret}\n")
    with pytest.raises(ConfigError) as info:
        ServerConfig.from_file(tmp_path / "secret.yaml")
    assert "short-secret" not in str(info.value)
    (tmp_path / "x.ini").write_text("[x]\n")
    with pytest.raises(ConfigError, match="format"):
        ServerConfig.from_file(tmp_path / "x.ini")
    with pytest.raises(ConfigError, match="cannot read"):
        ServerConfig.from_file(tmp_path / "missing.yaml")


def test_example_config_loads() -> None:
    cfg = ServerConfig.from_file(ROOT / "examples" / "token_server.yaml")
    assert cfg.path == "/token"
    assert cfg.host == "127.0.0.1"


def test_bundled_rules_match_examples() -> None:
    bundled = ROOT / "plugin" / "livekit" / "plugins" / "metadata" / "server" / "default_rules.yaml"
    example = ROOT / "examples" / "rules.yaml"
    assert bundled.read_bytes() == example.read_bytes()


# ---------------------------------------------------------------------------- schemathesis


@contextmanager
def threaded_server(config: ServerConfig) -> Iterator[str]:
    """The app on its own event loop in a thread, for blocking clients."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(create_app(config), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]

    def target() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(holder["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"http://127.0.0.1:{holder['port']}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_schemathesis_finds_no_server_errors() -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    conformance = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]

    config = make_config(
        sessions=new_sessions(),
        rate_limit=None,
        allowed_agents=["sales"],
        cors_origins=["https://app.example.com"],
    )
    failures: list[str] = []
    calls = 0
    with threaded_server(config) as base:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()
            has_body = operation.method.upper() == "POST"
            modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if has_body else []
            for mode in modes or [GenerationMode.POSITIVE]:
                strategy = operation.as_strategy(generation_mode=mode)

                @settings(
                    max_examples=30 if has_body else 5,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def check(case: Any) -> None:
                    nonlocal calls
                    calls += 1
                    response = case.call(base_url=base, timeout=10)
                    if response.status_code >= 500:
                        failures.append(f"{case.method} {case.path}: {response.status_code}")
                    case.validate_response(response, checks=conformance)

                check()
    assert calls > 60
    assert failures == []


# ---------------------------------------------------------------------------- real process


def test_serve_command_as_a_subprocess() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugin"), str(ROOT)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "livekit.plugins.metadata.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        body = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                import urllib.request

                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/token",
                    data=orjson.dumps({"participant_metadata": '{"department": "sales"}'}),
                    headers={"Content-Type": "application/json"},
                    method="POST",
                )
                with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310 - loopback http
                    assert resp.status == 201
                    body = orjson.loads(resp.read())
                    break
            except OSError:
                time.sleep(0.2)
        assert body is not None, "the server never answered"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            claims = api.TokenVerifier("devkey", "secret").verify(body["participant_token"])
        assert claims.room_config is not None
        assert claims.room_config.agents[0].agent_name == "router-demo"
    finally:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    stdout = out.decode()
    assert f"http://127.0.0.1:{port}/token" in stdout
    assert "curl" in stdout
    assert "devkey" in err.decode()
    assert body["participant_token"] not in stdout + err.decode()
