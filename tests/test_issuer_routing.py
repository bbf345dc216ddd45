"""Unit tests for TokenIssuer with a router, and signing exactly as PyJWT signs."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import jwt
import pytest

from livekit.plugins.metadata.errors import (
    InvalidAttributes,
    MetadataNotAnObject,
    MetadataTooLarge,
    NoRouteMatched,
    RoutingError,
)
from livekit.plugins.metadata.routing.router import MetadataRouter
from livekit.plugins.metadata.tokens.issuer import (
    Dispatch,
    TokenIssuer,
)
from tests.token_helpers import KEY, SECRET, SENTINEL, decode

pytestmark = pytest.mark.unit


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(KEY, SECRET)


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
