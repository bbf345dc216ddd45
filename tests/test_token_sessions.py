"""Unit tests for TokenIssuer.amint (a session per token) and metadata claims."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings, strategies as st
from livekit import api

from livekit.plugins.metadata.codec import SESSION_KEY, SESSION_OWNER_KEY
from livekit.plugins.metadata.errors import (
    ConfigError,
    InvalidAttributes,
    MetadataTooLarge,
    ReservedKey,
    StoreFull,
    StoreUnavailable,
)
from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.sessions.manager import SessionManager
from livekit.plugins.metadata.sessions.memory import MemoryStore
from livekit.plugins.metadata.tokens import minting
from livekit.plugins.metadata.tokens.issuer import (
    Dispatch,
    SessionToken,
    TokenIssuer,
)
from livekit.plugins.metadata.tokens.minting import MetadataClaim
from tests.strategies import examples
from tests.token_helpers import (
    KEY,
    SECRET,
    SENTINEL,
    attribute_maps,
    decode,
    json_values,
    metadata_dicts,
    without_times,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(KEY, SECRET)


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
    value=json_values,
    others=metadata_dicts,
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
@given(refused=_refused_attrs, others=attribute_maps, in_dispatch=st.booleans())
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
