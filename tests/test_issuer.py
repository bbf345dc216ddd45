"""Unit tests for TokenIssuer: claims parity with AccessToken, validation, verify, token sessions."""

from __future__ import annotations

import base64
import dataclasses
import time
import typing
from datetime import timedelta
from typing import Any

import jwt
import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from jwt.warnings import InsecureKeyLengthWarning
from livekit import api
from livekit.api.access_token import Claims
from pydantic import BaseModel

from livekit.plugins.metadata.codec import SESSION_KEY, SESSION_OWNER_KEY, serialize_metadata
from livekit.plugins.metadata.errors import (
    ConfigError,
    InvalidAttributes,
    InvalidMetadataJSON,
    MetadataNotAnObject,
    MetadataTooLarge,
    NoRouteMatched,
    ReservedKey,
    RoutingError,
    StoreFull,
    StoreUnavailable,
    TokenVerificationError,
)
from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.sessions.memory import MemoryStore
from livekit.plugins.metadata.tokens import minting
from livekit.plugins.metadata.tokens.claims import GRANT_CLAIMS
from livekit.plugins.metadata.tokens.issuer import (
    DEFAULT_TTL,
    Dispatch,
    SessionToken,
    TokenIssuer,
    VerifiedToken,
)
from livekit.plugins.metadata.tokens.minting import MetadataClaim
from tests.strategies import attribute_keys, examples, metadata_keys

pytestmark = pytest.mark.unit

KEY = "APItestkey"
SECRET = "test-secret-" + "s" * 40
SENTINEL = "hunter2-sentinel-value"


def decode(token: str, secret: str = SECRET, key: str = KEY) -> dict[str, Any]:
    return jwt.decode(token, secret, algorithms=["HS256"], issuer=key)


def without_times(claims: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in claims.items() if k not in ("nbf", "exp")}


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(KEY, SECRET)


# --------------------------------------------------------------------------- round trips


def test_round_trip_through_token_verifier(issuer: TokenIssuer) -> None:
    token = issuer.mint(
        "user-1",
        "room-1",
        name="Ada",
        metadata={"tier": "gold", "n": 3},
        attributes={"queue": "vip"},
        dispatch=Dispatch("triage", metadata={"lang": "es"}, deployment="staging"),
    )
    claims = api.TokenVerifier(KEY, SECRET).verify(token)
    assert claims.identity == "user-1"
    assert claims.name == "Ada"
    assert claims.metadata == '{"tier":"gold","n":3}'
    assert claims.attributes == {"queue": "vip"}
    assert claims.video is not None
    assert claims.video.room == "room-1"
    assert claims.video.room_join is True
    assert claims.room_config is not None
    (agent,) = claims.room_config.agents
    assert (agent.agent_name, agent.metadata, agent.deployment) == (
        "triage",
        '{"lang":"es"}',
        "staging",
    )
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}


def test_verify_returns_parsed_metadata_and_dispatches(issuer: TokenIssuer) -> None:
    before = int(time.time())
    token = issuer.mint(
        "user-1",
        "room-1",
        metadata='{"a": {"b": [1, 2]}}',
        attributes={"k": ""},
        dispatch=["one", Dispatch("two", attributes={"x": "y"})],
        job_metadata={"j": True},
        kind="standard",
    )
    v = issuer.verify(token)
    assert isinstance(v, VerifiedToken)
    assert v.identity == "user-1"
    assert v.room == "room-1"
    assert v.kind == "standard"
    assert v.metadata == {"a": {"b": [1, 2]}}
    assert v.attributes == {"k": ""}
    assert [d.agent_name for d in v.dispatches] == ["one", "two"]
    assert [d.metadata for d in v.dispatches] == ['{"j":true}', '{"j":true}']
    assert v.dispatches[1].attributes == {"x": "y"}
    assert v.issuer == KEY
    assert v.not_before is not None
    assert before <= v.expires_at.timestamp() - DEFAULT_TTL.total_seconds() <= time.time() + 1
    assert isinstance(v.claims, Claims)


def test_metadata_claim_is_always_a_compact_string(issuer: TokenIssuer) -> None:
    class Model(BaseModel):
        tier: str
        n: int

    for given_md in (
        {"tier": "gold", "n": 1},
        Model(tier="gold", n=1),
        '{ "tier" : "gold",\n "n": 1 }',
        '{"tier":"gold","n":1}',
    ):
        claims = decode(issuer.mint("u", "r", metadata=given_md))
        assert claims["metadata"] == '{"tier":"gold","n":1}'


def test_compact_string_passes_through_verbatim(issuer: TokenIssuer) -> None:
    text = '{"b":1,"a":"\\u00e9"}'
    assert decode(issuer.mint("u", "r", metadata=text))["metadata"] == text


@pytest.mark.parametrize("empty", ["", "  ", "{}", {}])
def test_empty_metadata_leaves_no_claim(issuer: TokenIssuer, empty: Any) -> None:
    claims = decode(issuer.mint("u", "r", metadata=empty, dispatch="a", job_metadata=empty))
    assert "metadata" not in claims
    assert claims["roomConfig"] == {"agents": [{"agentName": "a"}]}


def test_same_object_for_participant_and_job_metadata_is_reused(issuer: TokenIssuer) -> None:
    md = '{ "x": 1 }'
    claims = decode(issuer.mint("u", "r", metadata=md, dispatch="a", job_metadata=md))
    assert claims["metadata"] == '{"x":1}'
    assert claims["roomConfig"]["agents"][0]["metadata"] == '{"x":1}'
    claims = decode(issuer.mint("u", "r", metadata=md, dispatch=Dispatch("a", metadata=md)))
    assert claims["roomConfig"]["agents"][0]["metadata"] == '{"x":1}'


def test_least_privilege_by_default(issuer: TokenIssuer) -> None:
    claims = decode(issuer.mint("u", "r"))
    assert claims["video"] == {
        "roomJoin": True,
        "room": "r",
        "canPublish": True,
        "canSubscribe": True,
        "canPublishData": True,
    }
    assert set(claims) == {"video", "sub", "iss", "nbf", "exp"}
    flagged = decode(issuer.mint("u", "r", can_update_own_metadata=True))
    assert flagged["video"]["canUpdateOwnMetadata"] is True


def test_explicit_grants(issuer: TokenIssuer) -> None:
    grants = api.VideoGrants(room_join=True, can_publish=False, hidden=True)
    claims = decode(issuer.mint("u", "r", grants=grants, can_update_own_metadata=True))
    assert claims["video"] == {
        "roomJoin": True,
        "room": "r",
        "canPublish": False,
        "canSubscribe": True,
        "canPublishData": True,
        "canUpdateOwnMetadata": True,
        "hidden": True,
    }
    assert grants.room == ""  # the caller's object is not modified


def test_default_ttl_is_ten_minutes_and_overridable() -> None:
    issuer = TokenIssuer(KEY, SECRET, clock=lambda: 1_000_000_000.7)
    claims = jwt.decode(issuer.mint("u", "r"), options={"verify_signature": False})
    assert (claims["nbf"], claims["exp"]) == (1_000_000_000, 1_000_000_600)
    assert issuer.ttl == timedelta(minutes=10)
    claims = jwt.decode(issuer.mint("u", "r", ttl=90), options={"verify_signature": False})
    assert claims["exp"] - claims["nbf"] == 90
    other = TokenIssuer(KEY, SECRET, ttl=timedelta(hours=1), clock=lambda: 5.0)
    claims = jwt.decode(other.mint("u", "r"), options={"verify_signature": False})
    assert claims["exp"] - claims["nbf"] == 3600


def test_dispatch_forms(issuer: TokenIssuer) -> None:
    proto = api.RoomAgentDispatch(
        agent_name="p", metadata='{"m": 1}', restart_policy=api.JRP_NEVER, attributes={"a": "b"}
    )
    claims = decode(issuer.mint("u", "r", dispatch=("s", Dispatch("d", deployment="dev"), proto)))
    assert claims["roomConfig"] == {
        "agents": [
            {"agentName": "s"},
            {"agentName": "d", "deployment": "dev"},
            {
                "agentName": "p",
                "metadata": '{"m":1}',
                "restartPolicy": "JRP_NEVER",
                "attributes": {"a": "b"},
            },
        ]
    }


def test_room_config_settings(issuer: TokenIssuer) -> None:
    rc = api.RoomConfiguration(empty_timeout=30, max_participants=3)
    claims = decode(issuer.mint("u", "r", room_config=rc, dispatch="a"))
    assert claims["roomConfig"] == {
        "emptyTimeout": 30,
        "maxParticipants": 3,
        "agents": [{"agentName": "a"}],
    }


# --------------------------------------------------------------------------- parity property

_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
)
_json = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
# Keys outside the reserved namespaces: refusing those is tested below
# (test_reserved_keys_are_refused_wherever_a_caller_puts_them).
_md = st.dictionaries(metadata_keys(min_size=1), _json, max_size=4)
_attrs = st.dictionaries(attribute_keys(), st.text(max_size=8), max_size=3)


def _field_values(annotation: Any) -> st.SearchStrategy[Any]:
    """Values for one grant field, read from its type (so new livekit-api grants get tested)."""
    args = typing.get_args(annotation)
    if type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return st.none() | _field_values(inner)
    if annotation is bool:
        return st.booleans()
    if annotation is str:
        return st.just("") | _text
    if typing.get_origin(annotation) is list:
        return st.lists(_text, max_size=3)
    raise AssertionError(f"no strategy for grant field type {annotation!r}")


def _grant(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _field_values(hints[f.name]) for f in dataclasses.fields(cls)}
    if cls is api.VideoGrants:
        fields["room"] = st.just("")  # filled in with the token's room
    return st.builds(cls, **fields)


# AccessToken's own setter for each grant type; the test below fails when
# livekit-api gains a grant type this table (and so the property) does not cover.
_SETTERS: dict[type, str] = {
    api.VideoGrants: "with_grants",
    api.SIPGrants: "with_sip_grants",
    api.InferenceGrants: "with_inference_grants",
    api.ObservabilityGrants: "with_observability_grants",
    api.AgentGrants: "with_agent_grants",
    api.AgentEndpointGrants: "with_agent_endpoint_grants",
    api.AgentThreadGrants: "with_agent_thread_grants",
}
_grant_sets = st.fixed_dictionaries({}, optional={cls: _grant(cls) for cls in _SETTERS})


def test_every_grant_type_of_livekit_api_is_supported() -> None:
    installed = {
        value
        for name, value in vars(api).items()
        if name.endswith("Grants") and dataclasses.is_dataclass(value)
    }
    assert installed == set(GRANT_CLAIMS) == set(_SETTERS)
    assert GRANT_CLAIMS[api.SIPGrants] == "sip"
    assert GRANT_CLAIMS[api.AgentEndpointGrants] == "agentEndpoint"


_dispatch = st.builds(
    Dispatch,
    agent_name=_text.filter(str.strip),
    metadata=st.none() | _md,
    deployment=st.none() | st.just("") | _text,
    attributes=st.none() | _attrs,
)


@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    identity=_text,
    room=_text,
    name=st.none() | st.just("") | _text,
    kind=st.sampled_from([None, "standard", "agent", "sip"]),
    metadata=st.none() | _md,
    attributes=st.none() | _attrs,
    dispatches=st.lists(_dispatch, max_size=3),
    flag=st.booleans(),
    grants=st.none() | _grant(api.VideoGrants) | _grant_sets,
    empty_timeout=st.none() | st.integers(0, 600),
)
def test_claims_equal_access_token(
    identity: str,
    room: str,
    name: str | None,
    kind: str | None,
    metadata: dict[str, Any] | None,
    attributes: dict[str, str] | None,
    dispatches: list[Dispatch],
    flag: bool,
    grants: api.VideoGrants | dict[type, Any] | None,
    empty_timeout: int | None,
) -> None:
    """Our claims are exactly AccessToken's for the same inputs (ignoring nbf/exp).

    ``grants`` is none, one video grant, or any subset of every grant type.
    """
    issuer = TokenIssuer(KEY, SECRET)
    room_config = (
        None if empty_timeout is None else api.RoomConfiguration(empty_timeout=empty_timeout)
    )
    ours = issuer.mint(
        identity,
        room,
        name=name,
        kind=kind,
        metadata=metadata,
        attributes=attributes,
        dispatch=dispatches,
        can_update_own_metadata=flag,
        grants=list(grants.values()) if isinstance(grants, dict) else grants,
        room_config=room_config,
    )

    def text(md: dict[str, Any] | None) -> str:
        return serialize_metadata(md) if md else ""

    others = dict(grants) if isinstance(grants, dict) else {}
    video = others.pop(api.VideoGrants, None) if isinstance(grants, dict) else grants
    if video is None:
        effective = api.VideoGrants(room_join=True, room=room, can_update_own_metadata=flag or None)
    else:
        effective = dataclasses.replace(
            video,
            room=room,
            can_update_own_metadata=True if flag else video.can_update_own_metadata,
        )
    at = api.AccessToken(KEY, SECRET).with_identity(identity).with_grants(effective)
    for cls, grant in others.items():
        getattr(at, _SETTERS[cls])(grant)
    if name is not None:
        at.with_name(name)
    if kind is not None:
        at.with_kind(kind)  # type: ignore[arg-type]
    if metadata is not None:
        at.with_metadata(text(metadata))
    if attributes is not None:
        at.with_attributes(attributes)
    if dispatches or room_config is not None:
        rc = api.RoomConfiguration()
        if room_config is not None:
            rc.CopyFrom(room_config)
        for d in dispatches:
            assert not isinstance(d.metadata, str)
            rc.agents.append(
                api.RoomAgentDispatch(
                    agent_name=d.agent_name,
                    metadata=text(d.metadata),  # type: ignore[arg-type]
                    deployment=d.deployment or "",
                    attributes=d.attributes or {},
                )
            )
        at.with_room_config(rc)
    theirs = at.to_jwt()
    ours_claims, their_claims = decode(ours), decode(theirs)
    assert without_times(ours_claims) == without_times(their_claims)
    assert ours_claims["exp"] - ours_claims["nbf"] == 600


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "exc", "fragment"),
    [
        ({"identity": ""}, ValueError, "identity must not be empty"),
        ({"identity": "x" * 257}, ValueError, "identity is 257 bytes"),
        ({"identity": "é" * 129}, ValueError, "identity is 258 bytes"),
        ({"identity": 5}, TypeError, "identity must be a str"),
        ({"identity": "\ud800"}, ValueError, "identity is not valid UTF-8"),
        ({"room": ""}, ValueError, "room must not be empty"),
        ({"room": "r" * 257}, ValueError, "room is 257 bytes"),
        ({"name": "n" * 257}, ValueError, "name is 257 bytes"),
        ({"kind": "admin"}, ValueError, "kind must be one of"),
        ({"ttl": 0}, ValueError, "ttl must be at least one second"),
        ({"ttl": "10m"}, TypeError, "ttl must be a timedelta"),
        ({"metadata": f'{{"k": "{SENTINEL}"'}, InvalidMetadataJSON, "not valid JSON"),
        ({"metadata": f'["{SENTINEL}"]'}, MetadataNotAnObject, "JSON array"),
        ({"metadata": {"k": "x" * 64_001}}, MetadataTooLarge, "over the limit"),
        ({"metadata": '{"k":"' + "x" * 64_000 + '"}'}, MetadataTooLarge, "over the limit"),
        ({"metadata": 12}, TypeError, "metadata must be a mapping"),
        ({"attributes": {"k": 1}}, InvalidAttributes, "must have a str value"),
        ({"attributes": {"lk.agent": SENTINEL}}, InvalidAttributes, "reserves"),
        ({"attributes": {"k": "v" * 65_536}}, InvalidAttributes, "over the limit"),
        ({"attributes": [("k", "v")]}, InvalidAttributes, "mapping"),
        ({"dispatch": ""}, ValueError, "agent_name must be a non-empty string"),
        ({"dispatch": Dispatch("  ")}, ValueError, "agent_name must be a non-empty string"),
        ({"dispatch": [Dispatch(3)]}, TypeError, "agent_name must be a str"),  # type: ignore[arg-type]
        ({"dispatch": {"agent_name": "a"}}, TypeError, "dispatch must be"),
        ({"dispatch": [1]}, TypeError, "each dispatch must be"),
        ({"dispatch": Dispatch("a", metadata=f"[{SENTINEL!r}]")}, InvalidMetadataJSON, "JSON"),
        ({"dispatch": Dispatch("a", attributes={"lk.x": "y"})}, InvalidAttributes, "reserves"),
        ({"dispatch": Dispatch("a", deployment=1)}, TypeError, "deployment must be a str"),  # type: ignore[arg-type]
        ({"job_metadata": {"a": 1}}, ValueError, "job_metadata needs a dispatch"),
        (
            {"dispatch": Dispatch("a", metadata={"x": 1}), "job_metadata": {"y": 2}},
            ValueError,
            "has its own metadata",
        ),
        ({"job_metadata": "[]", "dispatch": "a"}, MetadataNotAnObject, "JSON array"),
        ({"grants": api.VideoGrants(room="other")}, ValueError, "grants.room"),
        ({"grants": {"roomAdmin": True}}, TypeError, "grants must be"),
        ({"grants": [api.SIPGrants(), object()]}, TypeError, "not object"),
        ({"grants": [api.SIPGrants(), api.SIPGrants()]}, ValueError, "more than one SIPGrants"),
        ({"grants": [api.VideoGrants(room="o"), api.SIPGrants()]}, ValueError, "grants.room"),
        (
            {"room_config": api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name="a")])},
            ValueError,
            "room_config.agents must be empty",
        ),
        ({"room_config": {"emptyTimeout": 1}}, TypeError, "room_config must be"),
    ],
)
def test_validation_errors(
    issuer: TokenIssuer, kwargs: dict[str, Any], exc: type[Exception], fragment: str
) -> None:
    args = {"identity": "user", "room": "room", **kwargs}
    identity, room = args.pop("identity"), args.pop("room")
    with pytest.raises(exc) as info:
        issuer.mint(identity, room, **args)
    message = str(info.value)
    assert fragment in message
    assert SENTINEL not in message
    assert SENTINEL not in repr(info.value)


def test_limit_is_configurable() -> None:
    small = TokenIssuer(KEY, SECRET, max_metadata_bytes=10, max_attributes_bytes=4)
    with pytest.raises(MetadataTooLarge) as info:
        small.mint("u", "r", metadata={"key": "value"})
    assert (info.value.size, info.value.limit) == (15, 10)
    with pytest.raises(InvalidAttributes):
        small.mint("u", "r", attributes={"ab": "cde"})
    assert small.mint("u", "r", metadata={"k": 1}, attributes={"ab": "cd"})


# --------------------------------------------------------------------------- configuration


def test_keys_fall_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    issuer = TokenIssuer()
    assert issuer.api_key == KEY
    assert decode(issuer.mint("u", "r"))["iss"] == KEY


@pytest.mark.parametrize(
    ("drop", "name"), [("KEY", "LIVEKIT_API_KEY"), ("SECRET", "LIVEKIT_API_SECRET")]
)
def test_missing_keys_raise_config_error(
    monkeypatch: pytest.MonkeyPatch, drop: str, name: str
) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    monkeypatch.delenv(f"LIVEKIT_API_{drop}")
    with pytest.raises(ConfigError) as info:
        TokenIssuer()
    assert name in info.value.message
    assert SECRET not in info.value.message


def test_secret_never_in_repr(issuer: TokenIssuer) -> None:
    assert SECRET not in repr(issuer)
    assert KEY in repr(issuer)
    assert "ttl=600s" in repr(issuer)


def test_secret_pyjwt_refuses_is_a_config_error() -> None:
    pem = (
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"
    )
    with pytest.raises(ConfigError) as info:
        TokenIssuer(KEY, pem)
    assert "PyJWT" in info.value.message
    assert "MFkw" not in info.value.message


def test_short_secret_warns_through_pyjwt() -> None:
    issuer = TokenIssuer(KEY, "short")
    with pytest.warns(InsecureKeyLengthWarning):
        token = issuer.mint("u", "r")
    with pytest.warns(InsecureKeyLengthWarning):
        assert issuer.verify(token).identity == "u"


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="max_metadata_bytes"):
        TokenIssuer(KEY, SECRET, max_metadata_bytes=0)
    with pytest.raises(TypeError, match="router"):
        TokenIssuer(KEY, SECRET, router=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sessions"):
        TokenIssuer(KEY, SECRET, sessions=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        TokenIssuer(KEY, SECRET, ttl=timedelta(0))


# --------------------------------------------------------------------------- verify errors


def _check_failure(issuer: TokenIssuer, token: str, fragment: str) -> None:
    with pytest.raises(TokenVerificationError) as info:
        issuer.verify(token)
    assert fragment in info.value.message
    assert not token or token not in info.value.message
    assert info.value.__cause__ is None


def test_verify_expired(issuer: TokenIssuer) -> None:
    old = TokenIssuer(KEY, SECRET, clock=lambda: time.time() - 3600)
    _check_failure(issuer, old.mint("u", "r"), "expired")


def test_verify_not_yet_valid(issuer: TokenIssuer) -> None:
    future = TokenIssuer(KEY, SECRET, clock=lambda: time.time() + 3600)
    _check_failure(issuer, future.mint("u", "r"), "not valid yet")


def test_verify_wrong_secret_and_wrong_key(issuer: TokenIssuer) -> None:
    _check_failure(issuer, TokenIssuer(KEY, "x" * 40).mint("u", "r"), "signature check failed")
    _check_failure(issuer, TokenIssuer("APIother", SECRET).mint("u", "r"), "issuer check failed")


def test_verify_malformed_and_missing_exp(issuer: TokenIssuer) -> None:
    _check_failure(issuer, "not-a-token", "malformed")
    _check_failure(issuer, "", "malformed")
    no_exp = jwt.encode({"sub": "u", "iss": KEY}, SECRET, algorithm="HS256")
    _check_failure(issuer, no_exp, "no 'exp' claim")
    none_alg = jwt.encode({"sub": "u", "iss": KEY, "exp": time.time() + 60}, None, algorithm="none")
    _check_failure(issuer, none_alg, "algorithm check failed")


def test_verify_tampered_payload(issuer: TokenIssuer) -> None:
    header, payload, sig = issuer.mint("u", "r", metadata={"role": "user"}).split(".")
    claims = orjson.loads(jwt.utils.base64url_decode(payload))
    claims["metadata"] = '{"role":"admin"}'
    forged = ".".join([header, jwt.utils.base64url_encode(orjson.dumps(claims)).decode(), sig])
    _check_failure(issuer, forged, "signature check failed")


def test_verify_rejects_non_object_metadata_claim(issuer: TokenIssuer) -> None:
    token = (
        api.AccessToken(KEY, SECRET)
        .with_identity("u")
        .with_metadata(SENTINEL)
        .with_grants(api.VideoGrants(room_join=True, room="r"))
        .to_jwt()
    )
    with pytest.raises(TokenVerificationError) as info:
        issuer.verify(token)
    assert info.value.message.startswith("metadata claim:")
    assert SENTINEL not in info.value.message


# --------------------------------------------------------------------------- odd claims (#14.4)


def signed(**claims: Any) -> str:
    """A validly signed token: a joinable base with ``claims`` replacing (``None`` removes)."""
    payload: dict[str, Any] = {
        "sub": "u",
        "iss": KEY,
        "nbf": int(time.time()) - 5,
        "exp": int(time.time()) + 600,
        "video": {"roomJoin": True, "room": "r"},
    }
    for key, value in claims.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return jwt.encode(payload, SECRET, algorithm="HS256")


def refusal(issuer: TokenIssuer, claims: dict[str, Any]) -> str:
    """The message of verify's TokenVerificationError for a token signed with ``claims``."""
    with pytest.raises(TokenVerificationError) as info:
        issuer.verify(signed(**claims))
    assert info.value.__cause__ is None
    return info.value.message


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({"metadata": {"a": SENTINEL}}, "metadata"),
        ({"metadata": 5}, "metadata"),
        ({"metadata": [SENTINEL]}, "metadata"),
        ({"metadata": f"[{SENTINEL!r}]"}, "metadata"),
        ({"exp": 1e20}, "exp"),
        ({"exp": 2**70}, "exp"),
        ({"exp": "soon"}, "exp"),
        ({"exp": [1]}, "exp"),
        ({"nbf": "x"}, "nbf"),
        ({"nbf": -(10**20)}, "nbf"),
        ({"iat": {"a": 1}}, "iat"),
        ({"roomConfig": {"agents": "x"}}, "roomConfig"),
        ({"roomConfig": {"agents": [{"agentName": 5}]}}, "roomConfig"),
        ({"roomConfig": {"emptyTimeout": SENTINEL}}, "roomConfig"),
        ({"roomConfig": [1]}, "roomConfig"),
        ({"roomConfig": "x"}, "roomConfig"),
        ({"attributes": ["k", SENTINEL]}, "attributes"),
        ({"attributes": {"k": 1}}, "attributes"),
        ({"attributes": "k=v"}, "attributes"),
        ({"video": ["roomJoin"]}, "video"),
        ({"video": {"roomJoin": True, "room": 5}}, "video"),
        ({"video": {"roomJoin": "yes", "room": "r"}}, "video"),
        ({"video": {"roomJoin": True, "room": "r", "canPublishSources": "camera"}}, "video"),
        ({"video": {"roomJoin": True, "room": "r", "canPublishSources": [1]}}, "video"),
        ({"sip": "admin"}, "sip"),
        ({"sip": {"call": 1}}, "sip"),
        ({"agent": {"admin": None, "dispatchAdmin": "x"}}, "agent"),
        ({"agentThread": {"threadIds": "t"}}, "agentThread"),
        ({"name": 5}, "name"),
        ({"kind": ["sip"]}, "kind"),
        ({"kind": "superuser"}, "kind"),
        ({"sha256": 1}, "sha256"),
        ({"roomPreset": {}}, "roomPreset"),
        ({"sub": 5}, "sub"),
        ({"sub": "x" * 300}, "sub"),
    ],
)
def test_verify_names_every_malformed_claim(
    issuer: TokenIssuer, claims: dict[str, Any], named: str
) -> None:
    message = refusal(issuer, claims)
    assert f"{named!r}" in message or f"{named} claim" in message
    assert SENTINEL not in message


@pytest.mark.parametrize(
    ("claims", "fragment"),
    [
        ({"sub": None}, "no participant identity"),
        ({"sub": ""}, "no participant identity"),
        ({"video": None}, "no video grant"),
        ({"video": {"room": "r"}}, "no roomJoin"),
        ({"video": {"roomJoin": False, "room": "r"}}, "no roomJoin"),
        ({"video": {"roomJoin": True}}, "names no room"),
    ],
)
def test_verify_reports_tokens_livekit_would_not_let_join(
    issuer: TokenIssuer, claims: dict[str, Any], fragment: str
) -> None:
    message = refusal(issuer, claims)
    assert fragment in message
    assert "LiveKit" in message
    # Not a join token, but well formed: verify(require_join=False) accepts it.
    verified = issuer.verify(signed(**claims), require_join=False)
    assert verified.identity == ((claims["sub"] or "") if "sub" in claims else "u")


def test_verify_accepts_every_grant_and_unknown_fields(issuer: TokenIssuer) -> None:
    grants = [api.VideoGrants(room_join=True, hidden=True), api.SIPGrants(call=True)]
    verified = issuer.verify(issuer.mint("u", "r", grants=grants))
    assert verified.claims.sip == api.SIPGrants(call=True)
    assert verified.claims.inference is None
    assert verified.grants.hidden is True
    assert verified.grant_claims == {
        "video": {
            "roomJoin": True,
            "room": "r",
            "canPublish": True,
            "canSubscribe": True,
            "canPublishData": True,
            "hidden": True,
        },
        "sip": {"admin": False, "call": True},
    }
    # Fields a later LiveKit adds are ignored, as TokenVerifier does.
    later = signed(video={"roomJoin": True, "room": "r", "canTeleport": True}, future={"x": 1})
    assert issuer.verify(later).room == "r"


_odd = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_claim_names = st.sampled_from(
    [
        "sub",
        "name",
        "kind",
        "metadata",
        "attributes",
        "video",
        "sip",
        "inference",
        "observability",
        "agent",
        "agentEndpoint",
        "agentThread",
        "roomConfig",
        "sha256",
        "roomPreset",
        "exp",
        "nbf",
        "iat",
    ]
)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(_claim_names, _odd, min_size=1, max_size=3))
def test_verify_is_total_over_odd_claim_shapes(changes: dict[str, Any]) -> None:
    """Whatever the claims of a signed token, verify returns or raises TokenVerificationError."""
    issuer = TokenIssuer(KEY, SECRET)
    token = signed(**{k: v for k, v in changes.items() if v is not None})
    outcome: VerifiedToken | TokenVerificationError
    try:
        outcome = issuer.verify(token, require_join=False)
    except TokenVerificationError as exc:
        outcome = exc
    if isinstance(outcome, TokenVerificationError):
        assert outcome.__cause__ is None
    else:
        assert isinstance(outcome.metadata, dict)


def test_verify_type_error(issuer: TokenIssuer) -> None:
    with pytest.raises(TypeError, match="token must be a str"):
        issuer.verify(b"abc")  # type: ignore[arg-type]


def test_reprs_hide_values(issuer: TokenIssuer) -> None:
    d = Dispatch("a", metadata={"secret": SENTINEL}, attributes={"k": SENTINEL})
    assert SENTINEL not in repr(d)
    token = issuer.mint("u", "r", metadata={"m": SENTINEL}, dispatch=d)
    v = issuer.verify(token)
    assert SENTINEL not in repr(v)
    assert token not in repr(v)
    claim = issuer.metadata_claim({"m": SENTINEL})
    assert SENTINEL not in repr(claim)


# --------------------------------------------------------------------------- token sessions


def token_sessions(**kwargs: Any) -> tuple[TokenIssuer, SessionManager]:
    sessions = SessionManager(secret_key="k" * 32)
    return TokenIssuer(KEY, SECRET, sessions=sessions, **kwargs), sessions


async def test_amint_records_the_keys_the_server_decided() -> None:
    issuer, sessions = token_sessions()
    minted = await issuer.amint(
        "caller-1",
        "room-1",
        metadata={"department": "support", "channel": "web"},
        private_metadata={"crm_id": "C-42"},
        protected_keys=["channel"],
    )
    stored = await sessions.token_sessions.get(minted.session_id)
    assert stored[SESSION_OWNER_KEY]["protected"] == ["channel", "crm_id"]
    # nothing a client names reaches the token space: the same id is not a named session
    assert await sessions.get_session_metadata(minted.session_id) == {}
    with pytest.raises(TypeError):
        await issuer.amint("caller-1", "room-1", protected_keys="channel")


async def test_amint_gives_each_token_its_own_session() -> None:
    issuer, sessions = token_sessions()
    minted = await issuer.amint(
        "caller-1",
        "support-43",
        metadata={"department": "support"},
        private_metadata={"customer_id": SENTINEL, "tier": "gold"},
        attributes={"queue": "vip"},
        dispatch=Dispatch("triage", metadata={"lang": "es"}),
    )
    assert isinstance(minted, SessionToken)
    assert len(minted.session_id) >= 22  # 128 random bits, base64url
    assert await sessions.token_sessions.get(minted.session_id) == {
        "department": "support",
        "customer_id": SENTINEL,
        "tier": "gold",
        SESSION_OWNER_KEY: {
            "identity": "caller-1",
            "room": "support-43",
            "protected": ["customer_id", "tier"],  # the private keys
        },
    }
    claims = decode(minted.token)
    assert claims["metadata"] == '{"department":"support"}'
    assert claims["attributes"] == {"queue": "vip", SESSION_KEY: minted.session_id}
    (agent,) = claims["roomConfig"]["agents"]
    assert orjson.loads(agent["metadata"]) == {"lang": "es", SESSION_KEY: minted.session_id}
    assert minted.expires_at.timestamp() == claims["exp"]
    # The session id is the only thing that links the token to the private keys.
    raw = orjson.dumps(claims).decode()
    for private in (SENTINEL, "customer_id", "gold"):
        assert private not in raw
    assert SENTINEL not in repr(minted)
    assert minted.token not in repr(minted)

    again = await issuer.amint("caller-1", "support-43", metadata={"department": "support"})
    assert again.session_id != minted.session_id
    assert decode(again.token)["attributes"] == {SESSION_KEY: again.session_id}


async def test_amint_session_ttl_is_token_ttl_plus_grace() -> None:
    now = [1_000_000.0]
    sessions = SessionManager(
        MemoryStore(clock=lambda: now[0]), secret_key="k" * 32, clock=lambda: now[0]
    )
    issuer = TokenIssuer(KEY, SECRET, sessions=sessions, session_grace=30, clock=lambda: now[0])
    assert issuer.session_grace == timedelta(seconds=30)
    minted = await issuer.amint("u", "r", metadata={"a": 1}, ttl=60)
    now[0] += 89
    assert await sessions.token_sessions.get(minted.session_id) != {}
    now[0] += 2
    assert await sessions.token_sessions.get(minted.session_id) == {}


async def test_amint_private_keys_never_reach_the_token() -> None:
    router = MetadataRouter.from_dict(
        {
            "rules": [
                {
                    "when": {"tier": "gold"},
                    "agent": "vip",
                    "job_metadata": ["lang", "tier"],
                }
            ]
        }
    )
    issuer, sessions = token_sessions(router=router)
    minted = await issuer.amint(
        "u", "r", metadata={"lang": "es"}, private_metadata={"tier": "gold"}
    )
    claims = decode(minted.token)
    # Routed on public + private keys; the rule's pick of a private key is left out.
    (agent,) = claims["roomConfig"]["agents"]
    assert agent["agentName"] == "vip"
    assert orjson.loads(agent["metadata"]) == {"lang": "es", SESSION_KEY: minted.session_id}
    assert "gold" not in orjson.dumps(claims).decode()
    stored = await sessions.token_sessions.get(minted.session_id)
    assert stored["tier"] == "gold"
    with pytest.raises(ValueError, match="both metadata and private_metadata"):
        await issuer.amint("u", "r", metadata={"tier": "x"}, private_metadata={"tier": "y"})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"metadata": {SESSION_KEY: "someone-else"}},
        {"metadata": '{"lk-metadata.owner": 1}'},
        {"metadata": '{"lk\\u002dmetadata.session": "x"}'},
        {"private_metadata": {"lk-metadata.x": 1}},
        {"attributes": {SESSION_KEY: "x"}},
        {"dispatch": "a", "job_metadata": {SESSION_KEY: "x"}},
        {"dispatch": Dispatch("a", metadata={"lk-metadata.y": 1})},
        {"dispatch": Dispatch("a", attributes={"lk-metadata.y": "1"})},
    ],
)
async def test_reserved_namespace_is_refused(kwargs: dict[str, Any]) -> None:
    issuer, sessions = token_sessions()
    with pytest.raises(ReservedKey) as info:
        await issuer.amint("u", "r", **kwargs)
    assert info.value.key.startswith("lk-metadata.")
    assert "lk-metadata." in info.value.message
    if "private_metadata" not in kwargs:
        with pytest.raises(ReservedKey):
            issuer.mint("u", "r", **kwargs)
    assert len(sessions.store) == 0  # type: ignore[arg-type]


_reserved_md_keys = st.builds(
    str.__add__, st.sampled_from(["lk-metadata.", "lk-metadata.session"]), st.text(max_size=8)
)
_refused_attrs = st.builds(
    lambda prefix, rest: (prefix + rest, InvalidAttributes if prefix == "lk." else ReservedKey),
    st.sampled_from(["lk.", "lk-metadata."]),
    st.text(max_size=8),
)


@settings(max_examples=examples(100), deadline=None)
@given(
    key=_reserved_md_keys,
    value=_json,
    others=_md,
    where=st.sampled_from(["metadata", "metadata-json", "job_metadata", "dispatch"]),
)
def test_reserved_metadata_keys_are_refused_wherever_a_caller_puts_them(
    key: str, value: Any, others: dict[str, Any], where: str
) -> None:
    """The counterpart of the parity property, whose strategies leave these keys out."""
    md = {**others, key: value}
    kwargs: dict[str, Any] = {
        "metadata": {"metadata": md},
        "metadata-json": {"metadata": orjson.dumps(md).decode()},
        "job_metadata": {"dispatch": "a", "job_metadata": md},
        "dispatch": {"dispatch": Dispatch("a", metadata=md)},
    }[where]
    with pytest.raises(ReservedKey) as info:
        TokenIssuer(KEY, SECRET).mint("u", "r", **kwargs)
    assert info.value.key.startswith("lk-metadata.")


@settings(max_examples=examples(100), deadline=None)
@given(refused=_refused_attrs, others=_attrs, in_dispatch=st.booleans())
def test_reserved_attributes_are_refused_wherever_a_caller_puts_them(
    refused: tuple[str, type[Exception]], others: dict[str, str], in_dispatch: bool
) -> None:
    key, error = refused
    attrs = {**others, key: "v"}
    kwargs: dict[str, Any] = (
        {"dispatch": Dispatch("a", attributes=attrs)} if in_dispatch else {"attributes": attrs}
    )
    with pytest.raises(error):
        TokenIssuer(KEY, SECRET).mint("u", "r", **kwargs)


class RefusingStore(MemoryStore):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def merge(self, *args: Any, **kwargs: Any) -> None:
        raise self.error


@pytest.mark.parametrize("error", [StoreFull("full"), StoreUnavailable("down")])
async def test_amint_propagates_store_refusal(error: Exception) -> None:
    sessions = SessionManager(RefusingStore(error), secret_key="k" * 32)
    issuer = TokenIssuer(KEY, SECRET, sessions=sessions)
    with pytest.raises(type(error)):
        await issuer.amint("u", "r", metadata={"a": 1}, private_metadata={"p": 2})


async def test_amint_needs_sessions_and_stores_nothing_invalid(issuer: TokenIssuer) -> None:
    with pytest.raises(ConfigError, match="sessions="):
        await issuer.amint("u", "r", metadata={"a": 1})
    issuer, sessions = token_sessions()
    with pytest.raises(InvalidAttributes):
        await issuer.amint("u", "r", metadata={"a": 1}, attributes={"lk.x": "y"})
    with pytest.raises(MetadataTooLarge):
        await issuer.amint("u", "r", private_metadata={"a": "x" * 64_001})
    assert len(sessions.store) == 0  # type: ignore[arg-type]


# --------------------------------------------------------------------------- metadata claims


def test_a_metadata_claim_mints_the_same_claims(issuer: TokenIssuer) -> None:
    md = {"tier": "gold", "n": 3}
    claim = issuer.metadata_claim(md)
    assert (claim.text, claim.data) == ('{"tier":"gold","n":3}', md)
    plain = without_times(decode(issuer.mint("u", "r", metadata=md, dispatch=Dispatch("a", md))))
    for dispatch in (Dispatch("a", md), api.RoomAgentDispatch(agent_name="a", metadata=claim.text)):
        token = issuer.mint("u", "r", metadata=claim, dispatch=dispatch)
        assert without_times(decode(token)) == plain


async def test_amint_with_a_metadata_claim_serializes_nothing_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The endpoint's path: the claim's text is the participant claim and, with the
    session key appended, the job metadata; nothing is parsed or serialized again."""
    issuer, sessions = token_sessions()
    md = {"lang": "es", "tier": "gold"}
    claim = issuer.metadata_claim(md)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("metadata serialized or parsed again")

    monkeypatch.setattr(minting, "serialize_metadata", forbidden)
    monkeypatch.setattr(minting, "parse_metadata", forbidden)
    minted = await issuer.amint(
        "u", "r", metadata=claim, protected_keys=["tier"], dispatch=[Dispatch("a", md), "b"]
    )
    claims = decode(minted.token)
    assert claims["metadata"] == claim.text
    first, second = claims["roomConfig"]["agents"]
    sid = minted.session_id
    assert first["metadata"] == orjson.dumps({**md, SESSION_KEY: sid}).decode()
    assert second["metadata"] == orjson.dumps({SESSION_KEY: sid}).decode()
    owner = {"identity": "u", "room": "r", "protected": ["tier"]}
    assert await sessions.token_sessions.get(sid) == {**md, SESSION_OWNER_KEY: owner}


def test_metadata_claims_are_checked_and_made_only_by_an_issuer(issuer: TokenIssuer) -> None:
    with pytest.raises(ReservedKey):
        issuer.metadata_claim({SESSION_KEY: "x"})
    with pytest.raises(MetadataTooLarge):
        issuer.metadata_claim({"a": "x" * 64_001})
    forged = MetadataClaim(orjson.dumps({SESSION_KEY: "x"}).decode(), {SESSION_KEY: "x"})
    with pytest.raises(TypeError, match="metadata_claim"):
        issuer.mint("u", "r", metadata=forged)
    small = TokenIssuer(KEY, SECRET, max_metadata_bytes=10)
    with pytest.raises(MetadataTooLarge):
        small.mint("u", "r", metadata=issuer.metadata_claim({"a": "x" * 20}))


async def test_the_session_key_counts_against_the_job_metadata_limit() -> None:
    issuer, sessions = token_sessions(max_metadata_bytes=40)
    md = {"k": "x" * 20}  # 28 bytes; with the session key well over 40
    with pytest.raises(MetadataTooLarge, match="dispatch 'a' metadata"):
        await issuer.amint("u", "r", metadata=md, dispatch=Dispatch("a", md))
    assert len(sessions.store) == 0  # type: ignore[arg-type]


def test_an_unknown_mint_keyword_is_a_type_error(issuer: TokenIssuer) -> None:
    with pytest.raises(TypeError, match="metdata"):
        issuer.mint("u", "r", metdata={"a": 1})  # type: ignore[call-arg]


# --------------------------------------------------------------------------- routing


@dataclasses.dataclass
class StandInRoute:
    agent: str = ""
    agent_name: str = ""
    deployment: str | None = None
    attributes: dict[str, str] = dataclasses.field(default_factory=dict)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    rule: str | None = None
    rejected: bool = False


class StandInRouter:
    def __init__(self, route: StandInRoute) -> None:
        self.result = route
        self.seen: list[dict[str, Any]] = []

    def route(self, metadata: Any) -> StandInRoute:
        self.seen.append(dict(metadata))
        return self.result


def test_router_chooses_dispatch_when_none_given() -> None:
    router = StandInRouter(
        StandInRoute(
            agent="support",
            agent_name="pool",
            deployment="stg",
            attributes={"q": "1"},
            metadata={"dept": "support"},
        )
    )
    issuer = TokenIssuer(KEY, SECRET, router=router)
    claims = decode(issuer.mint("u", "r", metadata='{"dept": "support", "x": 1}'))
    assert router.seen == [{"dept": "support", "x": 1}]
    assert claims["roomConfig"]["agents"] == [
        {
            "agentName": "pool",
            "metadata": '{"dept":"support"}',
            "deployment": "stg",
            "attributes": {"q": "1"},
        }
    ]
    # job_metadata replaces the rule's job metadata; explicit dispatch skips the router.
    claims = decode(issuer.mint("u", "r", metadata={"a": 1}, job_metadata={"j": 2}))
    assert claims["roomConfig"]["agents"][0]["metadata"] == '{"j":2}'
    assert "roomConfig" not in decode(issuer.mint("u", "r", metadata={"a": 1}, dispatch=[]))
    assert decode(issuer.mint("u", "r", dispatch="other"))["roomConfig"]["agents"] == [
        {"agentName": "other"}
    ]
    assert len(router.seen) == 2


def test_router_rejection_and_no_agent() -> None:
    rejecting = TokenIssuer(
        KEY, SECRET, router=StandInRouter(StandInRoute(rejected=True, rule="b"))
    )
    with pytest.raises(RoutingError, match="rejected by routing rule 'b'"):
        rejecting.mint("u", "r", metadata={"x": SENTINEL})
    no_agent = TokenIssuer(KEY, SECRET, router=StandInRouter(StandInRoute()))
    assert "roomConfig" not in decode(no_agent.mint("u", "r", metadata={"x": 1}))


def test_real_metadata_router() -> None:
    router = MetadataRouter.from_dict(
        {
            "rules": [
                {"name": "blocked", "when": {"tenant": "banned"}, "reject": True},
                {
                    "name": "es",
                    "when": {"lang": "es"},
                    "agent": "support-es",
                    "job_metadata": ["lang"],
                },
            ],
        }
    )
    issuer = TokenIssuer(KEY, SECRET, router=router)
    claims = decode(issuer.mint("u", "r", metadata={"lang": "es", "tier": "gold"}))
    assert claims["roomConfig"]["agents"] == [
        {"agentName": "support-es", "metadata": '{"lang":"es"}'}
    ]
    with pytest.raises(RoutingError, match="blocked"):
        issuer.mint("u", "r", metadata={"tenant": "banned"})
    with pytest.raises(NoRouteMatched):
        issuer.mint("u", "r", metadata={"lang": "fr"})


def test_job_and_dispatch_errors_say_which_metadata(issuer: TokenIssuer) -> None:
    with pytest.raises(MetadataNotAnObject) as info:
        issuer.mint("u", "r", dispatch="a", job_metadata="[1]")
    assert info.value.message == "job_metadata: metadata must be a JSON object, got a JSON array"
    assert info.value.json_type == "array"
    with pytest.raises(MetadataTooLarge) as too_large:
        issuer.mint("u", "r", dispatch=Dispatch("a", metadata={"k": "x" * 64_000}))
    assert too_large.value.message.startswith("dispatch 'a' metadata: ")
    assert too_large.value.limit == 64_000
    with pytest.raises(InvalidAttributes) as attrs:
        issuer.mint("u", "r", dispatch=Dispatch("a", attributes={"lk.x": "y"}))
    assert attrs.value.message.startswith("dispatch 'a': attribute 'lk.x'")


def test_tokens_are_signed_exactly_as_pyjwt_signs_them() -> None:
    """A token is exactly what PyJWT signs for the same payload (PyJWT signs, never us)."""
    issuer = TokenIssuer(KEY, SECRET)
    token = issuer.mint("u", "r", metadata={"a": 1})
    head, payload, _ = token.split(".")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_aud": False})
    assert claims["sub"] == "u"
    padded = payload + "=" * (-len(payload) % 4)
    raw = base64.urlsafe_b64decode(padded)
    assert jwt.PyJWS().encode(raw, SECRET.encode(), algorithm="HS256") == token
    assert head == token.split(".")[0]
