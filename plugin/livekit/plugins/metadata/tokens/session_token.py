"""A session per token (``TokenIssuer.amint``): create, mint against it, record the owner, write.

The session id comes from ``SessionManager.create_session()`` (never from a
caller); the session holds the public and private metadata and the owner record
:data:`~livekit.plugins.metadata.codec.SESSION_OWNER_KEY`, and is written before
the token is returned, so a token never points at a session that does not exist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from ..codec import SESSION_OWNER_KEY
from ..log import logger

if TYPE_CHECKING:
    from ..sessions.manager import SessionManager

__all__ = [
    "DEFAULT_SESSION_GRACE",
    "Minted",
    "SessionToken",
    "SessionWriter",
    "mint_with_session",
]

DEFAULT_SESSION_GRACE = timedelta(minutes=10)
"""How long a token session outlives its token by default.

A token is checked only when the client connects, and the agent reads the
participant's session when the participant joins, so a session must last the
token's lifetime plus the time from a last-second join (clocks up to a minute
apart) to the agent reading it. A session whose token is never used expires
on its own after ``ttl + grace``."""

SessionWriter = Callable[[str, dict[str, Any], int], Awaitable[None]]
"""Writes a token session: ``(session_id, record, ttl_seconds)``; see ``amint(write_session=)``."""


@dataclasses.dataclass(frozen=True, repr=False)
class SessionToken:
    """A token that owns a session, as :meth:`TokenIssuer.amint` returns it.

    Attributes:
        token: The signed JWT. Its participant attribute and every dispatch's
            job-metadata key ``SESSION_KEY`` hold ``session_id``.
        session_id: The token's own session (at least 128 random bits), already
            written when this object exists.
        expires_at: The token's ``exp`` as an aware UTC datetime (the session
            lives a grace period longer).
    """

    token: str
    session_id: str
    expires_at: datetime

    def __repr__(self) -> str:
        return (
            f"SessionToken(session_id={self.session_id!r}, token=<{len(self.token)} chars>, "
            f"expires_at={self.expires_at.isoformat()})"
        )


class Minted(NamedTuple):
    """A signed token linked to a session, with what that session must hold."""

    token: str
    expires: int
    lifetime: int
    public: dict[str, Any] | None
    private: dict[str, Any]


async def mint_with_session(
    sessions: SessionManager,
    mint: Callable[[str], Minted],
    *,
    identity: str,
    room: str,
    protected_keys: Iterable[str],
    grace: int,
    write_session: SessionWriter | None,
) -> SessionToken:
    """Create a session, ``mint(session_id)``, write the session, return the token.

    The session lives ``grace`` seconds longer than the token. ``write_session``
    replaces ``sessions.token_sessions.update``; what either raises propagates
    and no token is returned.
    """
    session_id = sessions.create_session()
    minted = mint(session_id)
    record = {**(minted.public or {}), **minted.private}
    owner: dict[str, Any] = {"identity": identity, "room": room}
    if minted.private:
        owner["protected"] = sorted(minted.private)
    if protected_keys:  # the private keys are in the owner record already
        owner["protected"] = _protected_list(protected_keys, minted.private)
    record[SESSION_OWNER_KEY] = owner
    ttl = minted.lifetime + grace
    if write_session is None:
        await sessions.token_sessions.update(session_id, record, ttl=ttl)
    else:
        await write_session(session_id, record, ttl)
    logger.debug("stored a token session", extra={"session_id": session_id, "keys": len(record)})
    expires_at = datetime.fromtimestamp(minted.expires, tz=timezone.utc)
    return SessionToken(minted.token, session_id, expires_at)


def _protected_list(keys: Iterable[str], private: Mapping[str, Any]) -> list[str]:
    """The owner record's ``protected`` list: the private keys plus the given public ones."""
    if isinstance(keys, str):
        raise TypeError("protected_keys must be an iterable of keys, not a str")
    named = set()
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"protected_keys must contain str keys, not {type(key).__name__}")
        named.add(key)
    return sorted(named.union(private))
