"""Unit tests for TokenIssuer.mint: claims parity with AccessToken, validation, configuration."""

from __future__ import annotations

import dataclasses
import time
import typing
from datetime import timedelta
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from jwt.warnings import InsecureKeyLengthWarning
from livekit import api
from livekit.api.access_token import Claims
from pydantic import BaseModel

from livekit.plugins.metadata.codec import serialize_metadata
from livekit.plugins.metadata.errors import (
    ConfigError,
    InvalidAttributes,
    InvalidMetadataJSON,
    MetadataNotAnObject,
    MetadataTooLarge,
)
from livekit.plugins.metadata.tokens.claims import GRANT_CLAIMS
from livekit.plugins.metadata.tokens.issuer import (
    DEFAULT_TTL,
    Dispatch,
    TokenIssuer,
    VerifiedToken,
)
from tests.strategies import examples
from tests.token_helpers import (
    KEY,
    SECRET,
    SENTINEL,
    attribute_maps,
    decode,
    metadata_dicts,
    short_text,
    without_times,
)

pytestmark = pytest.mark.unit


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
    # the header's bytes are PyJWT's own (the signer hands PyJWT its encoding of it)
    assert token.split(".")[0] == jwt.encode({}, "k" * 32, algorithm="HS256").split(".")[0]


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


def _field_values(annotation: Any) -> st.SearchStrategy[Any]:
    """Values for one grant field, read from its type (so new livekit-api grants get tested)."""
    args = typing.get_args(annotation)
    if type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return st.none() | _field_values(inner)
    if annotation is bool:
        return st.booleans()
    if annotation is str:
        return st.just("") | short_text
    if typing.get_origin(annotation) is list:
        return st.lists(short_text, max_size=3)
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
    agent_name=short_text.filter(str.strip),
    metadata=st.none() | metadata_dicts,
    deployment=st.none() | st.just("") | short_text,
    attributes=st.none() | attribute_maps,
)


@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    identity=short_text,
    room=short_text,
    name=st.none() | st.just("") | short_text,
    kind=st.sampled_from([None, "standard", "agent", "sip"]),
    metadata=st.none() | metadata_dicts,
    attributes=st.none() | attribute_maps,
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
