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
_REASONS: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (  # by PyJWT's exception type
    (jwt.ExpiredSignatureError, "token has expired (exp check failed)"),
    (jwt.ImmatureSignatureError, "token is not valid yet (nbf check failed)"),
    (
        jwt.InvalidSignatureError,
        "signature check failed: the token was not signed with this API secret",
    ),
    (jwt.InvalidIssuerError, "issuer check failed: the token was issued for another API key"),
    (jwt.InvalidAlgorithmError, "algorithm check failed: only HS256 tokens are accepted"),
    (jwt.exceptions.InvalidSubjectError, "'sub' claim must be a string"),
    (jwt.InvalidIssuedAtError, "'iat' claim must be a number (NumericDate)"),
)


@dataclasses.dataclass(frozen=True, repr=False)
class VerifiedToken:
    """A token that passed :meth:`TokenIssuer.verify`, with its metadata parsed.

    Absent strings are ``""``, absent metadata ``{}``. ``dispatches`` keep the raw
    job-metadata string as the job will receive it; ``issuer`` is ``iss`` (the API key);
    ``not_before``/``expires_at`` are aware UTC datetimes; ``claims`` are LiveKit's
    :class:`livekit.api.Claims` (absent grants ``None``).
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
        """Every grant as written in the token, e.g. ``{"video": {...}, "sip": {...}}``."""
        return claims_grants(self.claims)

    def __repr__(self) -> str:
        return (
            f"VerifiedToken(identity={self.identity!r}, room={self.room!r}, "
            f"metadata=<keys {sorted(self.metadata)}>, "
            f"dispatches={[d.agent_name for d in self.dispatches]}, "
            f"expires_at={self.expires_at.isoformat()})"
        )


def decode(token: str, key: bytes, api_key: str, leeway: float) -> dict[str, Any]:
    """PyJWT's checks (signature, iss, exp, nbf, iat); TokenVerificationError names the one failed."""
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=_ALGORITHMS,
            issuer=api_key,
            leeway=leeway,
            options={"require": ["exp", "iss"]},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise TokenVerificationError(f"token has no {exc.claim!r} claim") from None
    except jwt.InvalidTokenError as exc:
        for kind, reason in _REASONS:
            if isinstance(exc, kind):
                raise TokenVerificationError(reason) from None
        if isinstance(exc, jwt.DecodeError):
            raise _decode_error(token, key) from None
        raise TokenVerificationError(f"token verification failed ({type(exc).__name__})") from None
    return payload


def _decode_error(token: str, key: bytes) -> TokenVerificationError:
    """A malformed token, or (signature good) a time claim not a number: PyJWT raises
    ``DecodeError`` for both; decoding again with the checks off tells them apart."""
    try:
        payload = jwt.decode(
            token,
            key=key,
            algorithms=_ALGORITHMS,
            options=dict.fromkeys(  # type: ignore[arg-type]
                (
                    "verify_exp",
                    "verify_nbf",
                    "verify_iss",
                    "verify_aud",
                    "verify_sub",
                    "verify_jti",
                ),
                False,
            ),
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
        TokenVerificationError: A claim's shape, the metadata, or (``require_join``) LiveKit
            would not let the token join a room.
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
    value = payload.get(claim)
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, ValueError, OSError, TypeError):
        raise TokenVerificationError(f"{claim!r} claim is not a date in range") from None
