"""Who joins which room with which rights, and which attributes a client may not claim.

Room and identity are the server's (fresh, 128 random bits) unless the principal opts
in; a rejoin is bound to the previous token (its room and identity), not to a name.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from livekit import api

from .._util import key_label
from ..codec import SERVICE_ATTRIBUTE_PREFIXES, SESSION_KEY, SESSION_OWNER_KEY
from ..errors import StoreError
from .config import Principal
from .refusals import store_unavailable
from .state import AppState, Refusal

__all__ = [
    "choose_identity",
    "choose_room",
    "refuse_protected_attributes",
    "refuse_service_attributes",
    "rejoin_target",
    "video_grants",
]

_RANDOM_BYTES = 16  # 128 bits: a room or identity nobody can guess


def choose_room(requested: str | None, principal: Principal) -> str:
    """The client's room if the principal allows it (else a fresh one); 403
    ``room_not_allowed`` outside ``room_prefix``."""
    prefix = principal.room_prefix
    if requested is None or not principal.client_room:
        return (prefix if prefix is not None else "room-") + secrets.token_urlsafe(_RANDOM_BYTES)
    if prefix is not None and not requested.startswith(prefix):
        raise Refusal(
            403, "room_not_allowed", "room_name must start with this caller's room prefix"
        )
    return requested


def choose_identity(requested: str | None, principal: Principal) -> str:
    """The pinned identity (another requested: 403 ``identity_mismatch``), the client's
    (if allowed), or a fresh one."""
    if principal.identity is not None:
        if requested is not None and requested != principal.identity:
            raise Refusal(403, "identity_mismatch", "participant_identity is fixed for this caller")
        return principal.identity
    if requested is not None and principal.client_identity:
        return requested
    return "user-" + secrets.token_urlsafe(_RANDOM_BYTES)


def video_grants(principal: Principal, room: str) -> api.VideoGrants | None:
    """The principal's narrowed join grant (None: LiveKit's default join grant)."""
    policy = principal.grants
    if policy is None:
        return None
    return api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=policy.publish,
        can_subscribe=policy.subscribe,
        can_publish_data=policy.publish_data,
        can_publish_sources=None
        if policy.publish_sources is None
        else list(policy.publish_sources),
    )


def refuse_service_attributes(attributes: Iterable[str], allowed: frozenset[str]) -> None:
    """422 ``service_attribute_key`` for a key in a namespace LiveKit's services own
    (``sip.``, ``lk.``): from a client a forgery, unless the config names the key."""
    for key in attributes:
        if key.startswith(SERVICE_ATTRIBUTE_PREFIXES) and key not in allowed:
            raise Refusal(
                422,
                "service_attribute_key",
                f"participant_attributes key {key_label(key)} is in a namespace LiveKit's "
                f"services set ({', '.join(SERVICE_ATTRIBUTE_PREFIXES)}); clients may not send "
                "it unless the server allows it by name (metadata.allowed_service_attribute_keys)",
            )


def refuse_protected_attributes(attributes: Iterable[str], protected: Iterable[str]) -> None:
    """422 ``protected_attribute_key`` for an attribute named like a trusted or private key
    (code that looks at both could read it in their place)."""
    names = frozenset(protected)
    for key in attributes:
        if key in names:
            raise Refusal(
                422,
                "protected_attribute_key",
                f"participant_attributes key {key_label(key)} names a key the server decides "
                "(trusted or private metadata); use another attribute name",
            )


def _rejoin_refused(reason: str) -> Refusal:
    return Refusal(403, "rejoin_refused", f"rejoin_token refused: {reason}")


def _decode_previous(token: str, state: AppState) -> dict[str, Any]:
    """PyJWT's signature and issuer checks; ``exp`` against the rejoin window."""
    window = state.config.rejoin_window
    if window is None:
        raise _rejoin_refused("rejoining is turned off on this server (rejoin_window)")
    key, secret, _ = state.config.credentials()
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            key=secret,
            algorithms=["HS256"],
            issuer=key,
            options={"require": ["exp", "iss", "sub"], "verify_exp": False},
        )
    except jwt.InvalidTokenError:
        raise _rejoin_refused("not a token this server issued") from None
    exp = payload.get("exp")
    if not isinstance(exp, (int, float)) or time.time() > exp + window:
        raise _rejoin_refused(f"the token expired more than {window:g} seconds ago")
    return payload


def _claimed(payload: Mapping[str, Any]) -> tuple[str, str, str]:
    """Identity, room and token session id of a verified previous token."""
    video, attributes = payload.get("video"), payload.get("attributes")
    claimed = (
        payload.get("sub"),
        video.get("room") if isinstance(video, dict) else None,
        attributes.get(SESSION_KEY) if isinstance(attributes, dict) else None,
    )
    if not all(isinstance(value, str) and value for value in claimed):
        raise _rejoin_refused("the token has no room, identity or session of this server")
    return claimed  # type: ignore[return-value]


async def rejoin_target(token: str, principal: Principal, state: AppState) -> tuple[str, str]:
    """The room and identity a ``rejoin_token`` (this server's, expired at most
    ``rejoin_window`` s ago, its session alive and matching) leads back to; else 403
    ``rejoin_refused`` naming the failed check."""
    payload = _decode_previous(token, state)
    identity, room, session_id = _claimed(payload)
    try:
        stored = await state.sessions.token_sessions.get(session_id)
    except (TypeError, ValueError):
        raise _rejoin_refused("the token has no session of this server") from None
    except StoreError:
        raise store_unavailable() from None
    owner = stored.get(SESSION_OWNER_KEY)
    if not isinstance(owner, dict):
        raise _rejoin_refused("the previous call's session has expired")
    if owner.get("identity") != identity or owner.get("room") != room:
        raise _rejoin_refused("the token does not match its session")
    if principal.room_prefix is not None and not room.startswith(principal.room_prefix):
        raise _rejoin_refused("the token's room is outside this caller's room prefix")
    if principal.identity is not None and identity != principal.identity:
        raise _rejoin_refused("the token's identity is not this caller's")
    return room, identity
