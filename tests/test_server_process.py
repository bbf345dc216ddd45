"""Regression tests for #13 and #18.3 against the real ``lk-metadata serve`` process.

Each test writes a config file, starts ``python -m livekit.plugins.metadata.cli
serve`` on a free loopback port with a real ``redis-server`` as its store (so the
test can read what the process stored), talks to it over HTTP, and stops it by
PID. The attacks are the ones the issue reproduced: poisoning another caller's
session, blocking a room with a 63,984-byte object, overlapping tenant prefixes,
several callers in one room, private values in the token, and a full store.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from livekit import api

from livekit.plugins.metadata.codec import SESSION_KEY, SESSION_OWNER_KEY
from livekit.plugins.metadata.sessions.manager import SessionManager
from tests.fixtures.lk_serve import ServeProcess, launch_serve

pytestmark = [pytest.mark.integration, pytest.mark.store("redis")]
"""``sessions``: what the server processes wrote, read as an agent worker would."""

ROOT = Path(__file__).resolve().parent.parent
KEY = "APIprocesskey"
SECRET = "process-secret-" + "q" * 40
TENANT = "tenant-key-0123456789abcdef"
OPEN = "open-key-0123456789abcdef"
START_TIMEOUT = 30.0


ENV = {"LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET}


Start = Callable[..., ServeProcess]


@pytest.fixture
def serve_process(tmp_path: Path, redis_url: str) -> Iterator[Start]:
    """``serve_process(**config)``: a ready ``lk-metadata serve`` on the test's Redis."""
    started: list[ServeProcess] = []

    def start(**config: Any) -> ServeProcess:
        cfg = {"store": redis_url, "rules": str(ROOT / "examples" / "rules.yaml"), **config}
        proc = launch_serve(tmp_path, cfg, edge_defaults=False, env=ENV)
        started.append(proc)
        proc.wait_ready(START_TIMEOUT)
        return proc

    yield start
    for proc in started:
        proc.stop()


Post = Callable[..., Awaitable[tuple[int, dict[str, Any], Any]]]


@pytest.fixture
async def post() -> AsyncIterator[Post]:
    async with aiohttp.ClientSession() as http:

        async def send(
            server: ServeProcess, body: dict[str, Any], bearer: str | None = None
        ) -> tuple[int, dict[str, Any], Any]:
            headers = {"Content-Type": "application/json"}
            if bearer:
                headers["Authorization"] = f"Bearer {bearer}"
            async with http.post(f"{server.base}/token", json=body, headers=headers) as resp:
                return resp.status, orjson.loads(await resp.read()), resp.headers

        yield send


async def stored(sessions: SessionManager, session_id: str) -> dict[str, Any]:
    """A token session as the agent reads it, without the issuer's owner record."""
    data = await sessions.token_sessions.get(session_id)
    data.pop(SESSION_OWNER_KEY, None)
    return data


def claims_of(answer: dict[str, Any]) -> api.Claims:
    return api.TokenVerifier(KEY, SECRET).verify(answer["participant_token"])


def keys(*entries: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    return {"keys": [{"id": i, "key": k, **extra} for i, k, extra in entries]}


def md(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode()


async def test_poisoning_and_several_callers_keep_separate_sessions(
    serve_process: Start, post: Post, sessions: SessionManager
) -> None:
    server = serve_process(auth=keys(("web-frontend", OPEN, {})))
    room = "support-43"
    status, a, _ = await post(
        server, {"room_name": room, "participant_metadata": md({"department": "support"})}, OPEN
    )
    assert status == 201
    status, m, _ = await post(
        server,
        {"room_name": room, "participant_metadata": md({"department": "sales", "x": "evil"})},
        OPEN,
    )
    assert status == 201
    status, b, _ = await post(
        server,
        {"room_name": room, "participant_metadata": md({"department": "support", "caller": "b"})},
        OPEN,
    )
    assert status == 201
    ids = [claims_of(x).attributes[SESSION_KEY] for x in (a, m, b)]
    assert len(set(ids)) == 3
    assert await stored(sessions, ids[0]) == {"department": "support"}
    assert await stored(sessions, ids[1]) == {"department": "sales", "x": "evil"}
    assert await stored(sessions, ids[2]) == {"department": "support", "caller": "b"}
    assert await stored(sessions, room) == {}


async def test_a_63984_byte_object_blocks_nobody(
    serve_process: Start, post: Post, sessions: SessionManager
) -> None:
    server = serve_process(auth={"allow_anonymous": True}, rules="none")  # no job metadata copy
    room = {"room_name": "support-43"}
    pad = "A" * (63_984 - len('{"department":"support","pad":""}'))
    huge = md({"department": "support", "pad": pad})
    assert len(huge.encode()) == 63_984
    status, answer, _ = await post(server, {**room, "participant_metadata": huge})
    assert status == 201, answer
    status, answer, _ = await post(
        server, {**room, "participant_metadata": md({"department": "support"})}
    )
    assert status == 201, answer
    sid = claims_of(answer).attributes[SESSION_KEY]
    assert await stored(sessions, sid) == {"department": "support"}


def test_overlapping_prefixes_stop_the_process_naming_both_keys(
    tmp_path: Path, redis_url: str
) -> None:
    auth = keys(
        ("acme", TENANT, {"room_prefix": "acme-"}),
        ("acme-corp", OPEN, {"room_prefix": "acme-corp-"}),
    )
    proc = launch_serve(tmp_path, {"store": redis_url, "auth": auth}, edge_defaults=False, env=ENV)
    assert proc.proc.wait(timeout=START_TIMEOUT) != 0
    err = proc.stop()
    assert "overlap" in err
    assert "'acme'" in err
    assert "'acme-corp'" in err


async def test_a_decoded_token_holds_no_private_value(
    serve_process: Start, post: Post, sessions: SessionManager
) -> None:
    trusted = {"crm_id": "CRM-000-PRIVATE", "tier": "platinum-private", "channel": "web"}
    server = serve_process(
        private_keys=["phone"],
        auth=keys(("crm", TENANT, {"trusted_metadata": trusted, "public_keys": ["channel"]})),
    )
    client = {"department": "support", "phone": "+1-555-0100-PRIVATE"}
    status, answer, _ = await post(server, {"participant_metadata": md(client)}, TENANT)
    assert status == 201, answer
    token = answer["participant_token"]
    payload = token.split(".")[1]
    text = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    for private in (
        "CRM-000-PRIVATE",
        "platinum-private",
        "+1-555-0100-PRIVATE",
        "crm_id",
        "phone",
    ):
        assert private not in text
    claims = claims_of(answer)
    sid = claims.attributes[SESSION_KEY]
    assert orjson.loads(claims.metadata) == {"department": "support", "channel": "web"}
    assert claims.room_config is not None
    assert orjson.loads(claims.room_config.agents[0].metadata)[SESSION_KEY] == sid
    assert await stored(sessions, sid) == {**client, **trusted}


async def test_a_full_store_answers_503_and_keeps_every_session(
    serve_process: Start, post: Post, sessions: SessionManager
) -> None:
    server = serve_process(
        auth={"allow_anonymous": True}, max_sessions=2, max_sessions_per_principal=2
    )
    made = []
    for n in (1, 2):
        status, answer, _ = await post(server, {"participant_metadata": md({"n": n})})
        assert status == 201
        made.append(claims_of(answer).attributes[SESSION_KEY])
    status, answer, headers = await post(server, {"participant_metadata": md({"n": 3})})
    assert status == 503
    assert answer["error"]["code"] == "store_full"
    assert int(headers["Retry-After"]) >= 1
    assert [await stored(sessions, s) for s in made] == [{"n": 1}, {"n": 2}]


async def test_two_replicas_share_one_principal_rate_limit(
    serve_process: Start, post: Post
) -> None:
    """#18.3: two processes on one Redis admit R/s (+ one burst) together, not 2R."""
    rate, burst = 5.0, 5
    config = {"auth": keys(("one", TENANT, {})), "rate_limit": {"rate": rate, "burst": burst}}
    replicas = [serve_process(**config), serve_process(**config)]
    admitted = refused = 0
    t0 = time.monotonic()
    for i in range(400):
        status, _, _ = await post(replicas[i % 2], {}, TENANT)
        admitted += status == 201
        refused += status == 429
        if time.monotonic() - t0 > 2.0:
            break
    elapsed = time.monotonic() - t0
    assert admitted + refused == i + 1
    assert refused > 0
    assert burst <= admitted <= burst + rate * elapsed + 1


def test_the_banner_redacts_a_store_password_in_the_query(tmp_path: Path) -> None:
    """#14.6: one URL redactor (``_util.redact_url``) also hides ``?password=``."""
    secret = "Sup3r-Secret-Pw-4711"
    config = {"store": f"redis://127.0.0.1:1/0?password={secret}"}
    proc = launch_serve(tmp_path, config, edge_defaults=False, env=ENV)
    proc.wait_ready(START_TIMEOUT)  # the store connects lazily: the server answers /healthz
    text = proc.stop()
    assert "password=***" in text
    assert secret not in text


# ---------------------------------------------------------------------------- #32, #31, #21


@pytest.mark.parametrize("who", ["anonymous", "shared-key"])
async def test_a_second_caller_cannot_obtain_the_first_callers_room_or_identity(
    serve_process: Start, post: Post, who: str
) -> None:
    """#32: under the default policy the server chooses; a client's names are ignored."""
    auth = {"allow_anonymous": True} if who == "anonymous" else keys(("web", OPEN, {}))
    bearer = None if who == "anonymous" else OPEN
    server = serve_process(auth=auth)
    status, first, _ = await post(
        server, {"participant_metadata": md({"department": "support"})}, bearer
    )
    assert status == 201, first
    alice = claims_of(first)
    assert alice.video is not None
    assert (alice.video.room, alice.identity) == (first["room_name"], first["participant_identity"])
    attack = {
        "room_name": first["room_name"],
        "participant_identity": first["participant_identity"],
    }
    status, second, _ = await post(server, attack, bearer)
    assert status == 201, second
    mallory = claims_of(second)
    assert mallory.video is not None
    assert mallory.video.room != alice.video.room
    assert mallory.identity != alice.identity
    assert (mallory.video.room, mallory.identity) == (
        second["room_name"],
        second["participant_identity"],
    )


async def test_an_explicit_opt_in_lets_callers_share_a_room_within_the_prefix(
    serve_process: Start, post: Post
) -> None:
    server = serve_process(
        auth=keys(
            ("team", TENANT, {"room_prefix": "team-", "client_room": True}),
            ("loose", OPEN, {"client_room": True}),
        )
    )
    status, a, _ = await post(server, {"room_name": "team-standup"}, TENANT)
    assert status == 201, a
    status, b, _ = await post(server, {"room_name": "team-standup"}, TENANT)
    assert status == 201, b
    assert claims_of(a).video.room == claims_of(b).video.room == "team-standup"  # type: ignore[union-attr]
    assert claims_of(a).identity != claims_of(b).identity
    status, refused, _ = await post(server, {"room_name": "other-room"}, TENANT)
    assert status == 403
    assert refused["error"]["code"] == "room_not_allowed"
    log = server.stop()
    assert "'loose'" in log
    assert "without a room_prefix" in log
    assert "'team'" not in log


async def test_forged_service_attributes_are_refused_and_an_allowed_one_accepted(
    serve_process: Start, post: Post
) -> None:
    """#31: a web caller cannot claim a phone number or another LiveKit-set attribute."""
    server = serve_process(
        auth={"allow_anonymous": True},
        metadata={"allowed_service_attribute_keys": ["sip.callTag"]},
    )
    for key in ("sip.trunkPhoneNumber", "sip.phoneNumber", "lk.agent.state"):
        status, answer, _ = await post(server, {"participant_attributes": {key: "+34910000001"}})
        assert status == 422, key
        assert answer["error"]["code"] == "service_attribute_key"
        assert key in answer["error"]["message"]
        assert "+34910000001" not in json.dumps(answer)
    status, answer, _ = await post(server, {"participant_attributes": {"sip.callTag": "t-1"}})
    assert status == 201, answer
    assert claims_of(answer).attributes["sip.callTag"] == "t-1"


async def test_an_attribute_named_like_a_trusted_or_private_key_is_refused(
    serve_process: Start, post: Post, sessions: SessionManager
) -> None:
    """#21: attributes never shadow what the server decided; public trusted keys protected."""
    trusted = {"tier": "basic", "crm_id": "C-42"}
    server = serve_process(
        private_keys=["phone"],
        auth=keys(("crm", TENANT, {"trusted_metadata": trusted, "public_keys": ["tier"]})),
    )
    for key in ("tier", "crm_id", "phone"):
        status, answer, _ = await post(
            server, {"participant_attributes": {key: "forged-9"}}, TENANT
        )
        assert status == 422, key
        assert answer["error"]["code"] == "protected_attribute_key"
        assert key in answer["error"]["message"]
        assert "forged-9" not in json.dumps(answer)
    status, answer, _ = await post(server, {"participant_attributes": {"plan": "pro"}}, TENANT)
    assert status == 201, answer
    sid = claims_of(answer).attributes[SESSION_KEY]
    owner = (await sessions.token_sessions.get(sid))[SESSION_OWNER_KEY]
    assert sorted(owner["protected"]) == ["crm_id", "tier"]


async def test_a_caller_rejoins_only_their_own_room(serve_process: Start, post: Post) -> None:
    """#32: a rejoin is bound to the previous token (and its live session), not to a name."""
    server = serve_process(auth=keys(("web", OPEN, {})))
    _, first, _ = await post(server, {}, OPEN)
    status, again, _ = await post(server, {"rejoin_token": first["participant_token"]}, OPEN)
    assert status == 201, again
    assert (again["room_name"], again["participant_identity"]) == (
        first["room_name"],
        first["participant_identity"],
    )
    assert claims_of(again).attributes[SESSION_KEY] != claims_of(first).attributes[SESSION_KEY]
    forged = (
        api.AccessToken(KEY, "not-the-server-secret-" + "y" * 30)
        .with_identity(first["participant_identity"])
        .with_grants(api.VideoGrants(room_join=True, room=first["room_name"]))
        .with_attributes({SESSION_KEY: claims_of(first).attributes[SESSION_KEY]})
    )
    status, refused, _ = await post(server, {"rejoin_token": forged.to_jwt()}, OPEN)
    assert status == 403
    assert refused["error"]["code"] == "rejoin_refused"
