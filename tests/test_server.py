"""The token endpoint over real HTTP on 127.0.0.1: statuses, policy, tokens, token sessions.

Every test starts the app through the ``serve`` fixture (aiohttp's ``TestServer`` and
``TestClient`` on loopback) and reads what a client or an agent would: the answer,
the decoded token, and the token's own session in the store.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from livekit import api
from pydantic import BaseModel

from livekit.plugins.metadata.codec import SESSION_KEY, SESSION_OWNER_KEY
from livekit.plugins.metadata.errors import ConfigError, StoreUnavailable
from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.server.app import create_app
from livekit.plugins.metadata.server.config import GrantPolicy, Principal, RateLimit, ServerConfig
from livekit.plugins.metadata.server.limits import MemoryLimits
from livekit.plugins.metadata.server.models import TokenRequest
from livekit.plugins.metadata.server.openapi import openapi_document
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.sessions.memory import MemoryStore

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
            "job_metadata": ["department", "language", "customer"],
        },
        {"name": "sales", "when": {"department": "sales"}, "agent": "sales"},
    ],
    "default": "general",
}


def verifier() -> api.TokenVerifier:
    return api.TokenVerifier(KEY, SECRET)


def make_config(**overrides: Any) -> ServerConfig:
    """Test defaults (fixed keys, the RULES router, a fresh memory store) plus ``overrides``."""
    base: dict[str, Any] = {
        "api_key": KEY,
        "api_secret": SECRET,
        "server_url": "ws://127.0.0.1:7880",
    }
    python_only = {
        k: overrides.pop(k)
        for k in ("authorize", "metadata_schema", "router", "sessions", "limits")
        if k in overrides
    }
    base.update(overrides)
    config = ServerConfig.from_mapping(base)
    python_only.setdefault("router", MetadataRouter.from_dict(RULES))
    python_only.setdefault("sessions", SessionManager(secret_key=b"k" * 32))
    for k, v in python_only.items():
        setattr(config, k, v)
    return config


Answer = tuple[int, dict[str, Any], Any]


class Client:
    """A caller of one running app, and a reader of the sessions its tokens own."""

    def __init__(self, http: TestClient[web.Request, web.Application], config: ServerConfig):
        self.http = http
        self.config = config

    @property
    def sessions(self) -> SessionManager:
        assert self.config.sessions is not None
        return self.config.sessions

    async def post(
        self,
        body: Any = None,
        *,
        path: str = "/token",
        bearer: str | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        hdrs = {"Content-Type": "application/json"}
        if bearer:
            hdrs["Authorization"] = f"Bearer {bearer}"
        hdrs.update(headers or {})
        payload = data if data is not None else orjson.dumps({} if body is None else body)
        async with self.http.post(path, data=payload, headers=hdrs) as resp:
            raw = await resp.read()
            return resp.status, orjson.loads(raw) if raw else {}, resp.headers

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, bytes, Any]:
        async with self.http.request(method, path, **kw) as resp:
            return resp.status, await resp.read(), resp.headers

    async def token(self, body: Any = None, **kw: Any) -> api.Claims:
        """POST, expect 201, and return the verified claims."""
        status, answer, _ = await self.post(body, **kw)
        assert status == 201, answer
        return verifier().verify(answer["participant_token"])

    async def session_of(self, claims: api.Claims) -> dict[str, Any]:
        """What the token's own session holds for the agent (its owner record checked apart)."""
        stored = await self.sessions.token_sessions.get(claims.attributes[SESSION_KEY])
        owner = stored.pop(SESSION_OWNER_KEY, None)
        if stored:
            assert claims.video is not None
            assert isinstance(owner, dict)
            assert {k: owner[k] for k in ("identity", "room")} == {
                "identity": claims.identity,
                "room": claims.video.room,
            }
        return stored


Serve = Callable[..., Awaitable[Client]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(**config_overrides)`` (or ``serve(config)``): a running app and its client."""
    started: list[TestClient[web.Request, web.Application]] = []

    async def start(config: ServerConfig | None = None, **overrides: Any) -> Client:
        cfg = config if config is not None else make_config(**overrides)
        http = TestClient(TestServer(create_app(cfg), host="127.0.0.1"))
        await http.start_server()
        started.append(http)
        return Client(http, cfg)

    yield start
    for http in started:
        await http.close()


def error_code(body: dict[str, Any]) -> str:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    code: str = body["error"]["code"]
    return code


def jwt_payload(token: str) -> str:
    """The JWT's claims as text, exactly as any holder of the token can read them."""
    part = token.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()


# ---------------------------------------------------------------------------- happy paths


async def test_routed_token_verifies_and_owns_a_session(serve: Serve) -> None:
    c = await serve()
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
    assert set(body) == {"server_url", "participant_token", "room_name", "participant_identity"}
    assert body["server_url"] == "ws://127.0.0.1:7880"
    assert headers["Cache-Control"] == "no-store"
    claims = verifier().verify(body["participant_token"])
    # #32: the server chose the room and identity (the client's are ignored) and says which.
    assert claims.identity == body["participant_identity"]
    assert claims.identity.startswith("user-")
    assert claims.name == "Alice"
    assert claims.video is not None
    assert claims.video.room == body["room_name"]
    assert claims.video.room.startswith("room-")
    assert claims.video.room_join is True
    assert not claims.video.can_update_own_metadata
    assert not claims.video.room_admin
    assert orjson.loads(claims.metadata) == md
    session_id = claims.attributes[SESSION_KEY]
    assert claims.attributes == {"plan": "pro", SESSION_KEY: session_id}
    assert len(session_id) >= 22  # 128 random bits
    assert claims.room_config is not None
    (agent,) = claims.room_config.agents
    assert agent.agent_name == "support"
    job = {"department": "support", "language": "es", SESSION_KEY: session_id}
    assert orjson.loads(agent.metadata) == job
    assert await c.session_of(claims) == md
    assert await c.sessions.get_session_metadata("room-a") == {}  # the room keys nothing


async def test_default_route_and_generated_names_are_unguessable(serve: Serve) -> None:
    c = await serve()
    seen = set()
    for _ in range(3):
        claims = await c.token({})
        assert claims.video is not None
        assert claims.identity.startswith("user-")
        assert claims.video.room.startswith("room-")
        assert len(claims.identity) >= 5 + 20
        assert len(claims.video.room) >= 5 + 20
        assert claims.room_config is not None
        assert [a.agent_name for a in claims.room_config.agents] == ["general"]
        seen.add((claims.identity, claims.video.room, claims.attributes[SESSION_KEY]))
    assert len(seen) == 3


async def test_can_update_own_metadata_only_when_configured(serve: Serve) -> None:
    c = await serve(allow_update_own_metadata=True)
    claims = await c.token({})
    assert claims.video is not None
    assert claims.video.can_update_own_metadata is True


async def test_client_agent_from_allowlist_camel_case(serve: Serve) -> None:
    c = await serve(allowed_agents=["sales", "vip"])
    claims = await c.token(
        {
            "room_name": "r-client",
            "participant_metadata": '{"department": "support"}',
            "room_config": {"agents": [{"agentName": "vip", "metadata": '{"topic": "x"}'}]},
        }
    )
    assert claims.room_config is not None
    (agent,) = claims.room_config.agents
    assert agent.agent_name == "vip"
    sid = claims.attributes[SESSION_KEY]
    assert orjson.loads(agent.metadata) == {"department": "support", "topic": "x", SESSION_KEY: sid}
    assert await c.session_of(claims) == {"department": "support", "topic": "x"}


async def test_protobuf_json_names_are_accepted_at_the_top_level(serve: Serve) -> None:
    c = await serve(
        auth={
            "keys": [
                {
                    "id": "backend",
                    "key": BEARER,
                    "client_room": True,
                    "client_identity": True,
                    "room_prefix": "cam",
                }
            ]
        }
    )
    claims = await c.token(
        {"roomName": "camel", "participantIdentity": "cam", "participantMetadata": "{}"},
        bearer=BEARER,
    )
    assert claims.identity == "cam"
    assert claims.video is not None
    assert claims.video.room == "camel"
    status, body, _ = await c.post({"roomName": "a", "room_name": "b"}, bearer=BEARER)
    assert status == 400
    assert "twice" in body["error"]["message"]


async def test_client_agent_outside_allowlist_is_refused(serve: Serve) -> None:
    c = await serve(allowed_agents=["sales"])
    status, body, _ = await c.post({"room_config": {"agents": [{"agent_name": "admin-bot"}]}})
    assert status == 403
    assert error_code(body) == "agent_not_allowed"


async def test_room_config_fields_need_allowlist(serve: Serve) -> None:
    c = await serve(allowed_agents=["sales"])
    for rc in (
        {"empty_timeout": 30},
        {"maxParticipants": 2},
        {"egress": {"room": {"room_name": "x"}}},
        {"agents": [{"agent_name": "sales", "deployment": "staging"}]},
        {"agents": [{"agent_name": "sales"}, {"agent_name": "sales"}]},
    ):
        status, body, _ = await c.post({"room_config": rc})
        assert status == 403, rc
        assert error_code(body) == "room_config_not_allowed"
    c = await serve(allowed_agents=["sales"], allowed_room_config=["agents.deployment"])
    claims = await c.token(
        {"room_config": {"agents": [{"agent_name": "sales", "deployment": "staging"}]}}
    )
    assert claims.room_config is not None
    assert claims.room_config.agents[0].deployment == "staging"


async def test_reference_mode_token_carries_only_the_session_reference(serve: Serve) -> None:
    c = await serve(reference_mode=True)
    claims = await c.token(
        {"room_name": "ref-room", "participant_metadata": '{"department": "sales", "n": 1}'}
    )
    assert claims.metadata == ""
    assert claims.room_config is not None
    (agent,) = claims.room_config.agents
    assert agent.agent_name == "sales"
    sid = claims.attributes[SESSION_KEY]
    assert orjson.loads(agent.metadata) == {SESSION_KEY: sid}
    assert await c.session_of(claims) == {"department": "sales", "n": 1}


async def test_routing_disabled_dispatches_default_agent_or_none(serve: Serve) -> None:
    c = await serve(rules="none", router=None)
    assert (await c.token({})).room_config is None
    c = await serve(rules="none", router=None, default_agent="solo")
    claims = await c.token({"participant_metadata": '{"a": 1}'})
    assert claims.room_config is not None
    assert claims.room_config.agents[0].agent_name == "solo"
    sid = claims.attributes[SESSION_KEY]
    assert orjson.loads(claims.room_config.agents[0].metadata) == {"a": 1, SESSION_KEY: sid}


async def test_the_endpoint_serializes_the_metadata_once(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint parsed and checked the client's metadata: the issuer serializes the
    public metadata once (the claim) and reuses it for the default agent's job metadata."""
    from livekit.plugins.metadata.tokens import minting

    calls: list[str] = []

    def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(fn.__name__)
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(minting, "serialize_metadata", counted(minting.serialize_metadata))
    monkeypatch.setattr(minting, "parse_metadata", counted(minting.parse_metadata))
    c = await serve(rules="none", router=None, default_agent="solo")
    claims = await c.token({"participant_metadata": '{"a": 1, "b": "x"}'})
    assert calls == ["serialize_metadata"]
    assert claims.metadata == '{"a":1,"b":"x"}'
    assert claims.room_config is not None
    sid = claims.attributes[SESSION_KEY]
    job = orjson.loads(claims.room_config.agents[0].metadata)
    assert job == {"a": 1, "b": "x", SESSION_KEY: sid}


# ---------------------------------------------------------------------------- token sessions


async def test_callers_of_one_room_cannot_touch_each_others_sessions(serve: Serve) -> None:
    """#13 poisoning, blocking and several callers: the room name keys nothing a client writes."""
    c = await serve(
        auth={"keys": [{"id": "open", "key": OTHER_BEARER}], "allow_anonymous": True},
        sessions=SessionManager(secret_key=b"k" * 32, max_session_bytes=65_000),  # + owner record
    )
    room = {"room_name": "support-43"}
    alice = await c.token({**room, "participant_metadata": '{"department": "support"}'})
    hostile = orjson.dumps({"department": "sales", "customer": "attacker"}).decode()
    mallory = await c.token({**room, "participant_metadata": hostile}, bearer=OTHER_BEARER)
    padding = "A" * (63_984 - len('{"department":"support","pad":""}'))
    big = orjson.dumps({"department": "support", "pad": padding}).decode()
    await c.token({**room, "participant_metadata": big})  # once blocked the room for 1 h
    bob = await c.token({**room, "participant_metadata": '{"department": "support", "b": 2}'})
    assert await c.session_of(alice) == {"department": "support"}
    assert await c.session_of(mallory) == {"department": "sales", "customer": "attacker"}
    assert await c.session_of(bob) == {"department": "support", "b": 2}
    ids = {t.attributes[SESSION_KEY] for t in (alice, mallory, bob)}
    assert len(ids) == 3


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param({"session_id": "abc"}, 403, "session_id_not_allowed", id="session_id-field"),
        pytest.param({"session": "abc"}, 403, "session_id_not_allowed", id="session-field"),
        pytest.param(
            {"participant_metadata": orjson.dumps({SESSION_KEY: "abc"}).decode()},
            422,
            "reserved_key",
            id="metadata-key",
        ),
        pytest.param(
            {"participant_attributes": {SESSION_KEY: "abc"}},
            422,
            "reserved_key",
            id="attribute",
        ),
        pytest.param(
            {"participant_attributes": {"lk-metadata.other": "x"}},
            422,
            "reserved_key",
            id="namespaced-attribute",
        ),
        pytest.param(
            {
                "room_config": {
                    "agents": [{"agent_name": "sales", "metadata": '{"lk-metadata.session": "x"}'}]
                }
            },
            422,
            "reserved_key",
            id="job-metadata-key",
        ),
    ],
)
async def test_a_client_can_never_choose_the_session(
    serve: Serve, body: dict[str, Any], status: int, code: str
) -> None:
    c = await serve(allowed_agents=["sales"])
    got, answer, _ = await c.post(body)
    assert got == status
    assert error_code(answer) == code


async def test_private_keys_live_only_in_the_store(serve: Serve) -> None:
    """#13 privacy: private and (by default) trusted keys appear nowhere in the token."""
    c = await serve(
        private_keys=["customer"],
        auth={
            "keys": [
                {
                    "id": "crm",
                    "key": BEARER,
                    "trusted_metadata": {"crm_id": "CRM-SECRET-4711", "channel": "web"},
                    "public_keys": ["channel"],
                }
            ]
        },
    )
    md = {"department": "support", "language": "en", "customer": "Jane Q. Private"}
    status, body, _ = await c.post(
        {"participant_metadata": orjson.dumps(md).decode()}, bearer=BEARER
    )
    assert status == 201, body
    token = body["participant_token"]
    payload = jwt_payload(token)
    for secret in ("CRM-SECRET-4711", "crm_id", "Jane Q. Private", "customer"):
        assert secret not in payload
    claims = verifier().verify(token)
    assert orjson.loads(claims.metadata) == {
        "department": "support",
        "language": "en",
        "channel": "web",
    }
    assert await c.session_of(claims) == {**md, "crm_id": "CRM-SECRET-4711", "channel": "web"}


async def test_store_full_is_503_and_touches_no_session(serve: Serve) -> None:
    c = await serve(max_sessions=2, max_sessions_per_principal=2)
    first = await c.token({"participant_metadata": '{"n": 1}'})
    second = await c.token({"participant_metadata": '{"n": 2}'})
    status, body, headers = await c.post({"participant_metadata": '{"n": 3}'})
    assert status == 503
    assert error_code(body) == "store_full"
    assert int(headers["Retry-After"]) >= 1
    assert await c.session_of(first) == {"n": 1}
    assert await c.session_of(second) == {"n": 2}
    assert len(c.sessions.store) == 2  # type: ignore[arg-type]
    status, raw, _ = await c.request("GET", "/metrics")
    assert 'lk_metadata_refusals_total{reason="store_full"} 1.0' in raw.decode()


def test_token_sessions_live_as_long_as_the_token_plus_grace() -> None:
    assert make_config(token_ttl=120, session_grace=30).token_session_ttl() == 150
    assert make_config().token_session_ttl() == 600 + 600  # the issuer's 10 min + 10 min


async def test_unused_token_sessions_expire_on_their_own(serve: Serve) -> None:
    now = [0.0]
    sessions = SessionManager(MemoryStore(clock=lambda: now[0]), secret_key=b"k" * 32)
    c = await serve(sessions=sessions, token_ttl=60, session_grace=30)
    claims = await c.token({"participant_metadata": '{"a": 1}'})
    now[0] = 89.0
    assert await c.session_of(claims) == {"a": 1}
    now[0] = 91.0
    assert await c.session_of(claims) == {}


# ---------------------------------------------------------------------------- authentication


async def test_bearer_keys_pin_identity_and_override_metadata(serve: Serve) -> None:
    c = await serve(
        auth={
            "keys": [
                {
                    "id": "web",
                    "key": BEARER,
                    "identity": "user-42",
                    "trusted_metadata": {"tenant": "acme", "department": "sales"},
                    "public_keys": ["tenant", "department"],
                },
                {"id": "other", "key": OTHER_BEARER, "client_identity": True},
            ]
        },
    )
    status, body, headers = await c.post({})
    assert status == 401
    assert error_code(body) == "unauthorized"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert (await c.post({}, bearer="wrong-key-wrong-key-wrong"))[0] == 401
    assert (await c.post({}, headers={"Authorization": "Basic abc"}))[0] == 401

    claims = await c.token(
        {"room_name": "pinned", "participant_metadata": '{"department": "support", "x": 1}'},
        bearer=BEARER,
    )
    assert claims.identity == "user-42"
    md = orjson.loads(claims.metadata)
    assert md == {"department": "sales", "x": 1, "tenant": "acme"}
    assert claims.room_config is not None
    assert claims.room_config.agents[0].agent_name == "sales"
    assert await c.session_of(claims) == md

    status, body, _ = await c.post({"participant_identity": "someone-else"}, bearer=BEARER)
    assert status == 403
    assert error_code(body) == "identity_mismatch"
    assert (await c.post({"participant_identity": "user-42"}, bearer=BEARER))[0] == 201
    claims = await c.token({"participant_identity": "bob"}, bearer=OTHER_BEARER)
    assert claims.identity == "bob"


async def test_room_prefix_confines_a_caller_to_its_rooms(serve: Serve) -> None:
    """A principal with room_prefix gets tokens only for its rooms."""
    c = await serve(
        auth={
            "keys": [
                {"id": "tenant-a", "key": BEARER, "room_prefix": "acme-", "client_room": True},
                {"id": "open", "key": OTHER_BEARER, "client_room": True},
            ]
        },
    )
    md = '{"department": "support"}'
    (await c.token({"room_name": "globex-1", "participant_metadata": md}, bearer=OTHER_BEARER))
    status, body, _ = await c.post(
        {"room_name": "globex-1", "participant_metadata": md}, bearer=BEARER
    )
    assert status == 403
    assert error_code(body) == "room_not_allowed"
    assert "globex" not in orjson.dumps(body).decode()
    claims = await c.token({"room_name": "acme-7"}, bearer=BEARER)
    assert claims.video is not None
    assert claims.video.room == "acme-7"
    claims = await c.token({}, bearer=BEARER)
    assert claims.video is not None
    assert claims.video.room.startswith("acme-")
    assert len(claims.video.room) > len("acme-") + 15


@pytest.mark.parametrize("prefix", ["", "x" * 129])
def test_room_prefix_is_validated(prefix: str) -> None:
    """An empty or over-long room_prefix is a config error, for keys and for Principals."""
    with pytest.raises(ConfigError, match=r"auth\.keys\.0\.room_prefix"):
        make_config(auth={"keys": [{"id": "k", "key": BEARER, "room_prefix": prefix}]})
    with pytest.raises(ValueError, match="room_prefix"):
        Principal(id="p", room_prefix=prefix)


@pytest.mark.parametrize(("a", "b"), [("acme-", "acme-corp-"), ("acme-corp-", "acme-"), ("x", "x")])
def test_overlapping_room_prefixes_are_a_config_error_naming_both_keys(a: str, b: str) -> None:
    keys = [
        {"id": "tenant-one", "key": BEARER, "room_prefix": a},
        {"id": "tenant-two", "key": OTHER_BEARER, "room_prefix": b},
    ]
    with pytest.raises(ConfigError, match="overlap") as info:
        make_config(auth={"keys": keys})
    assert "'tenant-one'" in str(info.value)
    assert "'tenant-two'" in str(info.value)
    keys[1]["room_prefix"] = "globex-"
    make_config(auth={"keys": keys} if a != "x" else {"keys": keys[:1]})


async def test_hashed_keys_are_accepted(serve: Serve) -> None:
    digest = hashlib.sha256(BEARER.encode()).hexdigest()
    c = await serve(auth={"keys": [{"id": "h", "key_sha256": digest}]})
    assert (await c.post({}, bearer=BEARER))[0] == 201
    assert (await c.post({}, bearer=OTHER_BEARER))[0] == 401


@pytest.mark.parametrize("is_async", [False, True])
async def test_authorize_hook(serve: Serve, is_async: bool) -> None:
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
    c = await serve(authorize=hook)
    assert (await c.post({}))[0] == 401
    status, body, _ = await c.post({}, headers={"X-User": "mallory"})
    assert status == 403
    assert body["error"]["message"] == "banned user"
    claims = await c.token(
        {"participant_metadata": '{"department": "support", "user_id": "forged"}'},
        headers={"X-User": "carol"},
    )
    assert claims.identity == "carol"
    assert "user_id" not in orjson.loads(claims.metadata)  # trusted keys are private
    assert (await c.session_of(claims))["user_id"] == "carol"
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
        create_app(make_config(host="0.0.0.0"))
    create_app(make_config(host="0.0.0.0", auth={"allow_anonymous": True}))


def test_missing_credentials_only_fall_back_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEKIT_API_KEY", raising=False)
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)
    cfg = ServerConfig.from_mapping({"host": "0.0.0.0", "auth": {"allow_anonymous": True}})
    with pytest.raises(ConfigError, match="LIVEKIT_API_KEY"):
        create_app(cfg)
    with pytest.raises(ConfigError, match="both"):
        create_app(ServerConfig.from_mapping({"api_key": "only-key"}))


async def test_dev_keys_on_loopback_with_warning(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import warnings

    monkeypatch.delenv("LIVEKIT_API_KEY", raising=False)
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)
    cfg = ServerConfig()
    cfg.sessions = SessionManager(secret_key=b"k" * 32)
    with caplog.at_level(logging.WARNING, logger="livekit.plugins.metadata"):
        c = await serve(cfg)
        status, body, _ = await c.post({"participant_metadata": '{"department": "sales"}'})
    assert status == 201
    assert any("dev-server keys" in r.getMessage() for r in caplog.records)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        claims = api.TokenVerifier("devkey", "secret").verify(body["participant_token"])
    assert claims.room_config is not None
    (agent,) = claims.room_config.agents  # the bundled example rules: one worker hosts all
    assert agent.agent_name == "router-demo"
    sid = claims.attributes[SESSION_KEY]
    assert orjson.loads(agent.metadata) == {"department": "sales", SESSION_KEY: sid}


async def test_failed_authentication_is_limited_per_peer_and_counted(serve: Serve) -> None:
    c = await serve(
        auth={"keys": [{"id": "a", "key": BEARER}]},
        auth_failure_limit={"rate": 0.01, "burst": 3},
    )
    for _ in range(3):
        assert (await c.post({}, bearer="wrong-key-wrong-key-wrong"))[0] == 401
    status, body, headers = await c.post({}, bearer="wrong-key-wrong-key-wrong")
    assert status == 429
    assert error_code(body) == "auth_rate_limited"
    assert int(headers["Retry-After"]) >= 1
    status, body, _ = await c.post({}, bearer=BEARER)  # a blocked peer waits, key or not
    assert status == 429
    _, raw, _ = await c.request("GET", "/metrics")
    text = raw.decode()
    assert 'lk_metadata_refusals_total{reason="failed_auth"} 4.0' in text
    assert 'lk_metadata_refusals_total{reason="auth_limited"} 2.0' in text


# ---------------------------------------------------------------------------- error statuses


async def test_malformed_requests_are_400(serve: Serve) -> None:
    c = await serve()
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


async def test_body_and_metadata_size_limits_are_413(serve: Serve) -> None:
    c = await serve(max_body_bytes=2048, metadata={"max_bytes": 100})
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


async def test_content_type_must_be_json_in_utf8(serve: Serve) -> None:
    c = await serve()
    for ctype in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
    ):
        status, body, _ = await c.post({}, headers={"Content-Type": ctype})
        assert status == 415, ctype
        assert error_code(body) == "unsupported_media_type"
    status, _raw, _ = await c.request("POST", "/token", data=b"{}")
    assert status == 415
    for ok in ("application/json; charset=utf-8", "application/json; charset=UTF-8"):
        assert (await c.post({}, headers={"Content-Type": ok}))[0] == 201


class Caller(BaseModel):
    department: str
    language: str = "en"


async def test_metadata_policy_is_422(serve: Serve) -> None:
    c = await serve(
        metadata={"allowed_keys": ["department", "language"], "allowed_attribute_keys": ["plan"]},
    )
    status, body, _ = await c.post({"participant_metadata": '{"department": "x", "admin": 1}'})
    assert status == 422
    assert error_code(body) == "metadata_key_not_allowed"
    assert "'admin'" in body["error"]["message"]
    status, body, _ = await c.post({"participant_attributes": {"role": "root"}})
    assert status == 422
    assert error_code(body) == "attribute_key_not_allowed"
    await c.token(
        {"participant_metadata": '{"department": "x"}', "participant_attributes": {"plan": "a"}}
    )

    c = await serve(metadata_schema=Caller)
    status, body, _ = await c.post({"participant_metadata": '{"language": "secret-value"}'})
    assert status == 422
    assert error_code(body) == "schema_violation"
    assert "department" in body["error"]["message"]
    assert "secret-value" not in body["error"]["message"]
    await c.token({"participant_metadata": '{"department": "support"}'})


async def test_schema_from_config_string(serve: Serve) -> None:
    c = await serve(metadata={"schema": "tests.test_server:Caller"})
    assert (await c.post({"participant_metadata": "{}"}))[0] == 422
    with pytest.raises(ConfigError, match="schema"):
        create_app(make_config(metadata={"schema": "nope.missing:X"}))


async def test_routing_outcomes_403_and_422(serve: Serve) -> None:
    c = await serve()
    status, body, _ = await c.post({"participant_metadata": '{"tenant": "banned"}'})
    assert status == 403
    assert error_code(body) == "route_rejected"
    strict = MetadataRouter.from_dict({"rules": [{"when": {"department": "sales"}, "agent": "s"}]})
    c = await serve(router=strict)
    status, body, _ = await c.post({"participant_metadata": '{"department": "hr"}'})
    assert status == 422
    assert error_code(body) == "no_route"


async def test_rate_limit_per_principal_is_429(serve: Serve) -> None:
    c = await serve(
        rate_limit={"rate": 0.01, "burst": 2},
        auth={"keys": [{"id": "a", "key": BEARER}, {"id": "b", "key": OTHER_BEARER}]},
    )
    assert (await c.post({}, bearer=BEARER))[0] == 201
    assert (await c.post({}, bearer=BEARER))[0] == 201
    status, body, headers = await c.post({}, bearer=BEARER)
    assert status == 429
    assert error_code(body) == "rate_limited"
    assert int(headers["Retry-After"]) >= 1
    assert (await c.post({}, bearer=OTHER_BEARER))[0] == 201


async def test_principal_rate_limit_override(serve: Serve) -> None:
    def hook(request: web.Request) -> Principal:
        return Principal(id="tight", rate_limit=RateLimit(rate=0.01, burst=1))

    c = await serve(authorize=hook)
    assert (await c.post({}))[0] == 201
    assert (await c.post({}))[0] == 429


async def test_peer_rate_limit_applies_whoever_the_principal_is(serve: Serve) -> None:
    c = await serve(
        rate_limit=None,
        peer_rate_limit={"rate": 0.01, "burst": 2},
        auth={"keys": [{"id": "a", "key": BEARER}, {"id": "b", "key": OTHER_BEARER}]},
    )
    assert (await c.post({}, bearer=BEARER))[0] == 201
    assert (await c.post({}, bearer=OTHER_BEARER))[0] == 201
    assert (await c.post({}, bearer=BEARER))[0] == 429


class CountingLimits(MemoryLimits):
    """MemoryLimits that records which calls a request made (one replica's stand-in)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def hit(self, key: str, rate: float, burst: int) -> float:
        self.calls.append("hit")
        return await super().hit(key, rate, burst)

    async def reserve_session(self, session_id: str, ttl: float, max_sessions: int) -> bool:
        self.calls.append("reserve_session")
        return await super().reserve_session(session_id, ttl, max_sessions)

    async def admit(self, buckets: Any, reservation: Any = None) -> Any:
        self.calls.append("admit")
        return await super().admit(buckets, reservation)


async def test_one_limits_call_per_request(serve: Serve) -> None:
    """Rates (principal and peer) and the session cap: one call, so one Redis round trip."""
    limits = CountingLimits()
    c = await serve(limits=limits, peer_rate_limit={"rate": 100, "burst": 100})
    assert (await c.post({"room_name": "r1"}))[0] == 201
    assert limits.calls == ["admit"]
    limits.calls.clear()
    assert (await c.post(data=b"{not json"))[0] == 400
    assert limits.calls == ["admit"]


async def test_a_refused_request_counts_against_the_rate(serve: Serve) -> None:
    """Invalid requests cannot be sent for free: they take a token, and then 429 comes first."""
    c = await serve(rate_limit={"rate": 0.01, "burst": 2})
    assert (await c.post(data=b"{not json"))[0] == 400
    assert (await c.post({"room_name": "r1"}))[0] == 201
    status, body, _ = await c.post(data=b"{not json")
    assert status == 429
    assert error_code(body) == "rate_limited"


async def test_wrong_method_405_and_unknown_path_404(serve: Serve) -> None:
    c = await serve()
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


class DownStore(MemoryStore):
    """A store whose writes fail as an unreachable Redis would."""

    async def merge(self, session_id: str, fields: Any, **kw: Any) -> None:
        raise StoreUnavailable("redis at redis://***@127.0.0.1:1 is unreachable")


async def test_store_unavailable_is_503(serve: Serve) -> None:
    c = await serve(sessions=SessionManager(DownStore(), secret_key=b"k" * 32))
    status, body, _ = await c.post({"participant_metadata": '{"a": 1}'})
    assert status == 503
    assert error_code(body) == "store_unavailable"


# ---------------------------------------------------------------------------- CORS, companions


async def test_cors_allowlist(serve: Serve) -> None:
    c = await serve(cors_origins=["https://app.example.com"])
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
    c = await serve()  # default: no origin at all
    status, _, headers = await c.request("OPTIONS", "/token", headers=pre)
    assert status == 403
    assert "Access-Control-Allow-Origin" not in headers


async def test_healthz_metrics_openapi(serve: Serve) -> None:
    c = await serve()
    status, raw, _ = await c.request("GET", "/healthz")
    assert status == 200
    assert orjson.loads(raw) == {"status": "ok"}
    status, raw, _ = await c.request("GET", "/readyz")
    assert status == 200
    assert orjson.loads(raw) == {"status": "ready"}
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
    assert "lk_metadata_token_sessions_total 1.0" in text
    status, raw, _ = await c.request("GET", "/openapi.json")
    assert status == 200
    doc = orjson.loads(raw)
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/token",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/route",
        "/explain",
    }
    assert doc == orjson.loads(orjson.dumps(openapi_document("/token")))


def test_openapi_lists_every_field_the_server_accepts() -> None:
    """The document is generated from the models the handler validates with (egress included)."""
    schemas = openapi_document()["components"]["schemas"]
    assert set(schemas["TokenRequest"]["properties"]) == set(TokenRequest.model_fields)
    room_config = set(schemas["RoomConfigRequest"]["properties"])
    assert room_config == {f.name for f in api.RoomConfiguration.DESCRIPTOR.fields}
    agent = set(schemas["AgentDispatchRequest"]["properties"])
    assert agent == {f.name for f in api.RoomAgentDispatch.DESCRIPTOR.fields}


@web.middleware
async def from_afar(request: web.Request, handler: Any) -> web.StreamResponse:
    """Make the app see the request as coming from a non-loopback address (TEST-NET-1)."""
    return await handler(request.clone(remote="192.0.2.7"))


async def test_operator_endpoints_are_loopback_only_or_need_the_metrics_key(serve: Serve) -> None:
    remote = make_config()
    app = create_app(remote)
    app.middlewares.insert(0, from_afar)
    http = TestClient(TestServer(app, host="127.0.0.1"))
    await http.start_server()
    try:
        for path in ("/metrics", "/openapi.json"):
            async with http.get(path) as resp:
                assert resp.status == 403
                assert error_code(await resp.json()) == "loopback_only"
        async with http.get("/healthz") as resp:
            assert resp.status == 200
    finally:
        await http.close()
    c = await serve(metrics_key="metrics-key-0123456789")
    for path in ("/metrics", "/openapi.json"):
        assert (await c.request("GET", path))[0] == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await c.request("GET", path, headers=wrong))[0] == 401
        right = {"Authorization": "Bearer metrics-key-0123456789"}
        assert (await c.request("GET", path, headers=right))[0] == 200


async def test_custom_path(serve: Serve) -> None:
    c = await serve(path="/api/livekit/token")
    assert (await c.post({}, path="/api/livekit/token"))[0] == 201
    assert (await c.post({}))[0] == 404


async def test_one_log_line_per_request_without_values(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    c = await serve()
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
    assert first.room == body["room_name"] != "logged-room"  # type: ignore[attr-defined]
    assert first.agent == "support"  # type: ignore[attr-defined]
    assert first.status == 201  # type: ignore[attr-defined]
    assert first.latency_ms >= 0  # type: ignore[attr-defined]
    assert lines[1].status == 400  # type: ignore[attr-defined]
    assert lines[1].code == "invalid_metadata"  # type: ignore[attr-defined]
    assert "code=invalid_metadata" in lines[1].getMessage()
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert "123-45-6789" not in text
    assert body["participant_token"] not in text


async def test_200_concurrent_requests(serve: Serve) -> None:
    c = await serve(rate_limit=None)

    async def one(i: int) -> Answer:
        md = orjson.dumps({"department": "sales" if i % 2 else "support", "i": i}).decode()
        return await c.post({"room_name": f"conc-{i}", "participant_metadata": md})

    results = await asyncio.gather(*(one(i) for i in range(200)))
    assert [s for s, _, _ in results] == [201] * 200
    for i, (_, body, _) in enumerate(results):
        claims = verifier().verify(body["participant_token"])
        assert claims.video is not None
        assert claims.video.room == body["room_name"] != f"conc-{i}"
        assert claims.room_config is not None
        expected = "sales" if i % 2 else "support"
        assert claims.room_config.agents[0].agent_name == expected
        assert await c.session_of(claims) == orjson.loads(claims.metadata)


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
    with pytest.raises(ConfigError, match="unknown file type"):
        ServerConfig.from_file(tmp_path / "x.ini")
    with pytest.raises(ConfigError, match="cannot read"):
        ServerConfig.from_file(tmp_path / "missing.yaml")


def test_server_config_reads_yaml_like_every_other_file(tmp_path: Path) -> None:
    """#14.5: YAML 1.2 scalars; duplicate keys and dates refused with file, line and field."""
    keys = "auth:\n  keys:\n    - id: web\n      key_sha256: '" + "ab" * 32 + "'\n"
    (tmp_path / "no.yaml").write_text(keys + "      trusted_metadata: {language: no}\n")
    cfg = ServerConfig.from_file(tmp_path / "no.yaml")
    assert cfg.auth.keys[0].trusted_metadata == {"language": "no"}
    (tmp_path / "date.yaml").write_text(
        keys + "      trusted_metadata: {member_since: 2024-01-01}\n"
    )
    with pytest.raises(ConfigError, match=r"date\.yaml") as info:
        ServerConfig.from_file(tmp_path / "date.yaml")
    assert "line 5" in str(info.value)
    assert "member_since" in str(info.value)
    (tmp_path / "dup.yaml").write_text("port: 1\nhost: 127.0.0.1\nport: 2\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml") as info:
        ServerConfig.from_file(tmp_path / "dup.yaml")
    assert "line 3" in str(info.value)
    assert "port" in str(info.value)


async def test_config_content_never_turns_a_request_into_a_500(serve: Serve) -> None:
    """A date (or any non-JSON value) in code-built config is refused at load, not per request."""
    import datetime

    trusted = {"member_since": datetime.date(2024, 1, 1)}
    with pytest.raises(ConfigError, match="trusted_metadata"):
        make_config(auth={"keys": [{"id": "w", "key": BEARER, "trusted_metadata": trusted}]})
    with pytest.raises(ValueError, match="trusted_metadata"):
        Principal(id="p", trusted_metadata=trusted)
    c = await serve(
        auth={"keys": [{"id": "w", "key": BEARER, "trusted_metadata": {"since": "2024-01-01"}}]}
    )
    claims = await c.token({}, bearer=BEARER)
    assert (await c.session_of(claims))["since"] == "2024-01-01"


def test_example_config_loads() -> None:
    cfg = ServerConfig.from_file(ROOT / "examples" / "token_server.yaml")
    assert cfg.path == "/token"
    assert cfg.host == "127.0.0.1"


def test_bundled_rules_match_examples() -> None:
    bundled = ROOT / "plugin" / "livekit" / "plugins" / "metadata" / "server" / "default_rules.yaml"
    example = ROOT / "examples" / "rules.yaml"
    assert bundled.read_bytes() == example.read_bytes()


@pytest.mark.parametrize(
    ("key", "secret", "said"), [("k1", "short-secret", 1), ("devkey", "secret", 0)]
)
async def test_a_short_secret_is_said_once_cleanly(
    serve: Serve, caplog: pytest.LogCaptureFixture, key: str, secret: str, said: int
) -> None:
    """A short explicit secret: one clean warning line, never PyJWT's (with a file path).

    The suite turns warnings into errors, so PyJWT's InsecureKeyLengthWarning would fail
    the mint; the documented dev pair set on purpose is not warned about at all.
    """
    with caplog.at_level(logging.WARNING, logger="livekit.plugins.metadata"):
        client = await serve(api_key=key, api_secret=secret)
        status, answer, _ = await client.post({"room_name": "r1"})
    assert status == 201, answer
    notes = [r.getMessage() for r in caplog.records if "HS256 needs at least 32" in r.getMessage()]
    assert len(notes) == said
    assert all(secret not in n for n in notes)


# ---------------------------------------------------------------------------- #32 #31 #21


SHARED_KEY = {"id": "web-frontend", "key": BEARER}


@pytest.mark.parametrize("bearer", [None, BEARER], ids=["anonymous", "shared-key"])
async def test_a_second_caller_cannot_name_the_first_callers_room_or_identity(
    serve: Serve, bearer: str | None
) -> None:
    """#32: the default policy ignores a client's room_name and identity and says what it chose."""
    auth = {"keys": [SHARED_KEY], "allow_anonymous": True} if bearer else {}
    c = await serve(auth=auth) if auth else await serve()
    status, first, _ = await c.post({}, bearer=bearer)
    assert status == 201, first
    victim = {
        "room_name": first["room_name"],
        "participant_identity": first["participant_identity"],
    }
    status, second, _ = await c.post(victim, bearer=bearer)
    assert status == 201, second
    claims = verifier().verify(second["participant_token"])
    assert claims.video is not None
    assert claims.video.room == second["room_name"] != first["room_name"]
    assert claims.identity == second["participant_identity"] != first["participant_identity"]
    assert claims.video.room.startswith("room-")
    assert len(claims.video.room) >= 5 + 22
    assert claims.identity.startswith("user-")
    assert len(claims.identity) >= 5 + 22


async def test_opt_in_lets_clients_choose_rooms_within_the_prefix(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    keys = [
        {"id": "team", "key": BEARER, "room_prefix": "team-", "client_room": True},
        {"id": "open", "key": OTHER_BEARER, "client_room": True},
    ]
    with caplog.at_level(logging.WARNING, logger="livekit.plugins.metadata"):
        c = await serve(auth={"keys": keys})
    warned = [r.getMessage() for r in caplog.records if "client_room" in r.getMessage()]
    assert len(warned) == 1
    assert "'open'" in warned[0]
    assert "room_prefix" in warned[0]
    a = await c.token({"room_name": "team-standup"}, bearer=BEARER)
    b = await c.token({"room_name": "team-standup"}, bearer=BEARER)
    assert a.video is not None
    assert b.video is not None
    assert a.video.room == b.video.room == "team-standup"
    assert a.identity != b.identity  # the identity is still the server's
    status, body, _ = await c.post({"room_name": "other-standup"}, bearer=BEARER)
    assert status == 403
    assert error_code(body) == "room_not_allowed"


async def test_client_identity_only_with_an_explicit_opt_in(serve: Serve) -> None:
    keys = [
        {"id": "backend", "key": BEARER, "client_identity": True},
        {"id": "browser", "key": OTHER_BEARER},
    ]
    c = await serve(auth={"keys": keys})
    assert (await c.token({"participant_identity": "alice"}, bearer=BEARER)).identity == "alice"
    other = await c.token({"participant_identity": "alice"}, bearer=OTHER_BEARER)
    assert other.identity != "alice"


async def test_grants_default_to_a_voice_caller_and_can_be_narrowed(serve: Serve) -> None:
    keys = [
        {"id": "full", "key": BEARER},
        {
            "id": "listener-less",
            "key": OTHER_BEARER,
            "grants": {"subscribe": True, "publish_data": False, "publish_sources": ["microphone"]},
        },
    ]
    c = await serve(auth={"keys": keys})
    _, body, _ = await c.post({}, bearer=BEARER)
    video = orjson.loads(jwt_payload(body["participant_token"]))["video"]
    assert video == {"roomJoin": True, "room": body["room_name"], "canPublish": True,
                     "canSubscribe": True, "canPublishData": True}  # fmt: skip
    claims = await c.token({}, bearer=OTHER_BEARER)
    assert claims.video is not None
    assert claims.video.can_publish is True
    assert claims.video.can_subscribe is True
    assert claims.video.can_publish_data is False
    assert claims.video.can_publish_sources == ["microphone"]
    assert not claims.video.room_admin
    assert not claims.video.room_create


@pytest.mark.parametrize("key", ["sip.phoneNumber", "sip.trunkPhoneNumber", "lk.agent.state"])
async def test_service_namespace_attributes_are_refused_by_name(serve: Serve, key: str) -> None:
    """#31: a web caller cannot claim a phone number (or any LiveKit-set attribute)."""
    c = await serve()
    status, body, _ = await c.post({"participant_attributes": {key: "+34600000000"}})
    assert status == 422
    assert error_code(body) == "service_attribute_key"
    assert key in body["error"]["message"]
    assert "+34600000000" not in orjson.dumps(body).decode()


async def test_an_explicitly_allowed_service_attribute_is_accepted(serve: Serve) -> None:
    c = await serve(
        metadata={
            "allowed_service_attribute_keys": ["sip.callTag"],
            "allowed_attribute_keys": ["plan"],
        }
    )
    claims = await c.token({"participant_attributes": {"sip.callTag": "t1", "plan": "pro"}})
    assert claims.attributes["sip.callTag"] == "t1"
    status, body, _ = await c.post({"participant_attributes": {"sip.phoneNumber": "+1"}})
    assert (status, error_code(body)) == (422, "service_attribute_key")


@pytest.mark.parametrize("key", ["lk.agent.state", "plan", ""])
def test_allowed_service_attribute_keys_are_validated(key: str) -> None:
    with pytest.raises(ConfigError, match="allowed_service_attribute_keys"):
        make_config(metadata={"allowed_service_attribute_keys": [key]})


@pytest.mark.parametrize("key", ["tier", "crm_id", "customer", SESSION_KEY])
async def test_an_attribute_named_like_a_server_decided_key_is_refused(
    serve: Serve, key: str
) -> None:
    """#21: trusted (public or private), configured private and reserved keys."""
    c = await serve(
        private_keys=["customer"],
        auth={
            "keys": [
                {
                    "id": "crm",
                    "key": BEARER,
                    "trusted_metadata": {"tier": "basic", "crm_id": "C-42"},
                    "public_keys": ["tier"],
                }
            ]
        },
    )
    status, body, _ = await c.post({"participant_attributes": {key: "forged-x"}}, bearer=BEARER)
    assert status == 422
    expected = "reserved_key" if key == SESSION_KEY else "protected_attribute_key"
    assert error_code(body) == expected
    assert key in body["error"]["message"]
    assert "forged-x" not in orjson.dumps(body).decode()


async def test_public_trusted_keys_are_recorded_as_protected(serve: Serve) -> None:
    """#21: the owner record lists the public trusted keys, so the agent keeps them."""
    c = await serve(
        auth={
            "keys": [
                {
                    "id": "crm",
                    "key": BEARER,
                    "trusted_metadata": {"tier": "basic", "crm_id": "C-42"},
                    "public_keys": ["tier"],
                }
            ]
        },
    )
    claims = await c.token({"participant_metadata": '{"tier": "vip", "a": 1}'}, bearer=BEARER)
    assert orjson.loads(claims.metadata) == {"tier": "basic", "a": 1}
    stored = await c.sessions.token_sessions.get(claims.attributes[SESSION_KEY])
    assert sorted(stored[SESSION_OWNER_KEY]["protected"]) == ["crm_id", "tier"]


async def _mint_previous(c: Client, age: float) -> tuple[str, str, str, str]:
    from livekit.plugins.metadata.tokens.issuer import TokenIssuer

    issuer = TokenIssuer(KEY, SECRET, sessions=c.sessions, clock=lambda: time.time() - age)
    room, identity = "room-" + os.urandom(8).hex(), "user-" + os.urandom(8).hex()
    minted = await issuer.amint(identity, room, dispatch=[])
    return minted.token, room, identity, minted.session_id


async def test_a_caller_rejoins_their_own_room_with_the_previous_token(serve: Serve) -> None:
    c = await serve()
    status, first, _ = await c.post({})
    assert status == 201
    again = await c.token({"rejoin_token": first["participant_token"]})
    assert again.video is not None
    assert (again.video.room, again.identity) == (first["room_name"], first["participant_identity"])
    # Expired a while ago, within rejoin_window (600 s), its session still there: fine.
    token, room, identity, _ = await _mint_previous(c, age=700)
    status, body, _ = await c.post({"rejoin_token": token})
    assert status == 201, body
    assert (body["room_name"], body["participant_identity"]) == (room, identity)


async def test_a_rejoin_leads_nowhere_else(serve: Serve) -> None:
    c = await serve()
    _, first, _ = await c.post({})
    token = first["participant_token"]
    status, body, _ = await c.post({"rejoin_token": token, "room_name": "victim-room"})
    assert (status, error_code(body)) == (400, "rejoin_conflict")
    # Expired beyond the window.
    old, _, _, _ = await _mint_previous(c, age=1300)
    status, body, _ = await c.post({"rejoin_token": old})
    assert (status, error_code(body)) == (403, "rejoin_refused")
    # Signed with another secret (a forged token for the victim's room).
    forged = api.AccessToken(KEY, "another-secret-" + "x" * 40).with_identity(
        first["participant_identity"]
    )
    forged = forged.with_grants(api.VideoGrants(room_join=True, room=first["room_name"]))
    forged = forged.with_attributes({SESSION_KEY: "whatever"})
    status, body, _ = await c.post({"rejoin_token": forged.to_jwt()})
    assert (status, error_code(body)) == (403, "rejoin_refused")
    assert first["room_name"] not in orjson.dumps(body).decode()
    # A valid token whose session is gone.
    gone, _, _, session_id = await _mint_previous(c, age=0)
    assert await c.sessions.token_sessions.delete(session_id)
    status, body, _ = await c.post({"rejoin_token": gone})
    assert (status, error_code(body)) == (403, "rejoin_refused")
    # Turned off.
    off = await serve(rejoin_window=None)
    _, mine, _ = await off.post({})
    status, body, _ = await off.post({"rejoin_token": mine["participant_token"]})
    assert (status, error_code(body)) == (403, "rejoin_refused")


async def test_a_rejoin_keeps_the_principals_limits(serve: Serve) -> None:
    keys = [
        {"id": "a", "key": BEARER, "room_prefix": "a-"},
        {"id": "b", "key": OTHER_BEARER, "room_prefix": "b-"},
    ]
    c = await serve(auth={"keys": keys})
    _, mine, _ = await c.post({}, bearer=BEARER)
    status, body, _ = await c.post({"rejoin_token": mine["participant_token"]}, bearer=OTHER_BEARER)
    assert (status, error_code(body)) == (403, "rejoin_refused")
    status, body, _ = await c.post({"rejoin_token": mine["participant_token"]}, bearer=BEARER)
    assert status == 201
    assert body["room_name"] == mine["room_name"]


async def test_an_authorize_hook_vouches_for_the_identity_and_sets_the_policy(
    serve: Serve,
) -> None:
    """The library API: the host app's own login hands in the user and what it may do."""

    def decide(request: web.Request) -> Principal | None:
        user = request.headers.get("X-User")
        if user is None:
            return None
        return Principal(
            id="app",
            identity=user,
            room_prefix=f"{user}-",
            client_room=True,
            grants=GrantPolicy(subscribe=False),
        )

    c = await serve(authorize=decide)
    claims = await c.token({"room_name": "ada-notes"}, headers={"X-User": "ada"})
    assert claims.identity == "ada"
    assert claims.video is not None
    assert claims.video.room == "ada-notes"
    assert claims.video.can_subscribe is False
    status, body, _ = await c.post({"room_name": "bob-notes"}, headers={"X-User": "ada"})
    assert (status, error_code(body)) == (403, "room_not_allowed")
    with pytest.raises(TypeError, match="GrantPolicy"):
        Principal(id="p", grants={"subscribe": False})  # type: ignore[arg-type]
