"""Unit tests for TokenIssuer.verify: PyJWT's checks, every claim's shape, reprs."""

from __future__ import annotations

import time
from typing import Any

import jwt
import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from livekit import api

from livekit.plugins.metadata.errors import (
    TokenVerificationError,
)
from livekit.plugins.metadata.tokens.issuer import (
    Dispatch,
    TokenIssuer,
    VerifiedToken,
)
from tests.strategies import examples
from tests.token_helpers import KEY, SECRET, SENTINEL

pytestmark = pytest.mark.unit


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(KEY, SECRET)


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
