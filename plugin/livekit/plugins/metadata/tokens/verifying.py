"""Verifying a token: PyJWT's checks (told apart by PyJWT's exception types), then claim shapes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import jwt
from livekit import api
from livekit.api.access_token import Claims

from ..codec import parse_metadata
from ..errors import MetadataError, TokenVerificationError
from .claims import claims_grants, join_problem, read_claims
from .minting import Dispatch

__all__ = ["VerifiedToken", "decode", "verified_token"]

_ALGORITHMS = ["HS256"]
_TIME_CLAIMS = ("nbf", "exp")  # PyJWT reads a bad one as a DecodeError, in this order


@dataclasses.dataclass(frozen=True, repr=False)
class VerifiedToken:
    """A token that passed :meth:`TokenIssuer.verify`, with its metadata parsed.

    Attributes:
        identity: The participant identity (``sub``).
        name: The display name (``""`` if absent).
        room: The room of the video grant (``""`` if absent).
        kind: The participant kind (``""`` if absent).
        metadata: The participant metadata, parsed into a dict (``{}`` if absent).
        attributes: The participant attributes.
        dispatches: The agent dispatches of ``roomConfig``; their ``metadata`` is the
            raw job-metadata string exactly as the job will receive it.
        grants: The video grant.
        issuer: The API key the token was issued for (``iss``).
        not_before: ``nbf`` as an aware UTC datetime, when present.
        expires_at: ``exp`` as an aware UTC datetime.
        claims: The claims as :class:`livekit.api.Claims` (grants absent from the
            token are ``None``).
    """

    identity: str
    name: str
    room: str
    kind: str
    metadata: dict[str, Any]
    attributes: dict[str, str]
    dispatches: tuple[Dispatch, ...]
    grants: api.VideoGrants
    issuer: str
    not_before: datetime | None
    expires_at: datetime
    claims: Claims

    @property
    def grant_claims(self) -> dict[str, dict[str, Any]]:
        """Every grant in the token as written in it, e.g. ``{"video": {...}, "sip": {...}}``."""
        return claims_grants(self.claims)

    def __repr__(self) -> str:
        return (
            f"VerifiedToken(identity={self.identity!r}, room={self.room!r}, "
            f"metadata=<keys {sorted(self.metadata)}>, "
            f"dispatches={[d.agent_name for d in self.dispatches]}, "
            f"expires_at={self.expires_at.isoformat()})"
        )


def decode(token: str, key: bytes, api_key: str, leeway: float) -> dict[str, Any]:
    """PyJWT's checks (signature, iss, exp, nbf, iat), each failure as one message.

    Raises:
        TokenVerificationError: Naming the check that failed (never the token).
    """
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=_ALGORITHMS,
            issuer=api_key,
            leeway=leeway,
            options={"require": ["exp", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenVerificationError("token has expired (exp check failed)") from None
    except jwt.ImmatureSignatureError:
        raise TokenVerificationError("token is not valid yet (nbf check failed)") from None
    except jwt.InvalidSignatureError:
        raise TokenVerificationError(
            "signature check failed: the token was not signed with this API secret"
        ) from None
    except jwt.InvalidIssuerError:
        raise TokenVerificationError(
            "issuer check failed: the token was issued for another API key"
        ) from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenVerificationError(f"token has no {exc.claim!r} claim") from None
    except jwt.InvalidAlgorithmError:
        raise TokenVerificationError(
            "algorithm check failed: only HS256 tokens are accepted"
        ) from None
    except jwt.exceptions.InvalidSubjectError:
        raise TokenVerificationError("'sub' claim must be a string") from None
    except jwt.InvalidIssuedAtError:
        raise TokenVerificationError("'iat' claim must be a number (NumericDate)") from None
    except jwt.DecodeError:
        raise _decode_error(token, key) from None
    except jwt.InvalidTokenError as exc:
        raise TokenVerificationError(f"token verification failed ({type(exc).__name__})") from None
    return payload


def _decode_error(token: str, key: bytes) -> TokenVerificationError:
    """A ``DecodeError``: a malformed token, or (signature good) a time claim not a number.

    PyJWT raises ``DecodeError`` for both; decoding again with the time checks off
    tells them apart without reading PyJWT's message text.
    """
    try:
        payload = jwt.decode(
            token,
            key=key,
            algorithms=_ALGORITHMS,
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iss": False,
                "verify_aud": False,
                "verify_sub": False,
                "verify_jti": False,
            },
        )
    except jwt.InvalidTokenError:
        return TokenVerificationError("token is malformed: not a signed JWT")
    for claim in _TIME_CLAIMS:
        if claim in payload and not _is_numeric_date(payload[claim]):
            return TokenVerificationError(f"{claim!r} claim must be a number (NumericDate)")
    return TokenVerificationError("token is malformed: not a signed JWT")


def _is_numeric_date(value: object) -> bool:
    try:
        int(value)  # type: ignore[call-overload]  # PyJWT's own test
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def verified_token(
    payload: dict[str, Any], *, max_metadata_bytes: int, require_join: bool
) -> VerifiedToken:
    """The claims of a payload PyJWT accepted, every claim's shape checked, metadata parsed.

    Raises:
        TokenVerificationError: A claim has the wrong shape, the metadata is not a JSON
            object within ``max_metadata_bytes``, or (``require_join``) LiveKit would
            not let the token join a room.
    """
    claims = read_claims(payload)
    if require_join and (problem := join_problem(claims)) is not None:
        raise TokenVerificationError(problem)
    try:
        metadata = parse_metadata(claims.metadata or None, max_bytes=max_metadata_bytes)
    except MetadataError as exc:
        raise TokenVerificationError(f"metadata claim: {exc}") from None
    expires_at = _timestamp(payload, "exp")
    assert expires_at is not None  # PyJWT required it
    dispatches: tuple[Dispatch, ...] = ()
    if claims.room_config is not None:
        dispatches = tuple(
            Dispatch(
                agent.agent_name,
                metadata=agent.metadata or None,
                deployment=agent.deployment or None,
                attributes=dict(agent.attributes) or None,
            )
            for agent in claims.room_config.agents
        )
    grants = claims.video or api.VideoGrants()
    return VerifiedToken(
        identity=claims.identity,
        name=claims.name,
        room=grants.room or "",
        kind=claims.kind,
        metadata=metadata,
        attributes=dict(claims.attributes or {}),
        dispatches=dispatches,
        grants=grants,
        issuer=payload["iss"],
        not_before=_timestamp(payload, "nbf"),
        expires_at=expires_at,
        claims=claims,
    )


def _timestamp(payload: Mapping[str, Any], claim: str) -> datetime | None:
    """A NumericDate claim PyJWT accepted, as an aware UTC datetime (``None`` if absent)."""
    value = payload.get(claim)
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, ValueError, OSError, TypeError):
        raise TokenVerificationError(f"{claim!r} claim is not a date in range") from None
