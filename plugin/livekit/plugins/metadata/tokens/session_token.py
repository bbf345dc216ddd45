"""A session per token (``TokenIssuer.amint``): what the session holds, and its write.

The session id comes from ``SessionManager.create_session()`` (never a caller), and the
session is written before the token is returned: a token never points at a missing session.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..codec import SESSION_OWNER_KEY

if TYPE_CHECKING:
    from ..sessions.manager import SessionManager

__all__ = [
    "DEFAULT_SESSION_GRACE",
    "SessionToken",
    "SessionWriter",
    "session_record",
    "write",
]

DEFAULT_SESSION_GRACE = timedelta(minutes=10)
"""How long a token session outlives its token: a last-second join (clocks up to a minute
apart) plus dispatch must still find it. An unused session expires after ``ttl + grace``."""

SessionWriter = Callable[[str, dict[str, Any], int], Awaitable[None]]
"""Writes a token session: ``(session_id, record, ttl_seconds)``; see ``amint(write_session=)``."""


@dataclasses.dataclass(frozen=True, repr=False)
class SessionToken:
    """A token that owns a session (``session_id``: 128+ random bits, already written), as
    :meth:`TokenIssuer.amint` returns it; ``expires_at`` is the token's aware UTC ``exp``."""

    token: str
    session_id: str
    expires_at: datetime

    def __repr__(self) -> str:
        return (
            f"SessionToken(session_id={self.session_id!r}, token=<{len(self.token)} chars>, "
            f"expires_at={self.expires_at.isoformat()})"
        )


def session_record(
    identity: str,
    room: str,
    public: Mapping[str, Any] | None,
    private: Mapping[str, Any],
    protected_keys: Iterable[str],
) -> dict[str, Any]:
    """Public and private keys, and the owner record: who may use the session, and
    (``protected``) the private keys and ``protected_keys`` (TypeError: not str keys)."""
    owner: dict[str, Any] = {"identity": identity, "room": room}
    named: list[str] = []
    if protected_keys:
        if isinstance(protected_keys, str):
            raise TypeError("protected_keys must be an iterable of keys, not a str")
        named = list(protected_keys)
        for key in named:
            if not isinstance(key, str):
                raise TypeError(f"protected_keys must contain str keys, not {type(key).__name__}")
    if protected_keys or private:
        owner["protected"] = sorted({*named, *private})
    return {**(public or {}), **private, SESSION_OWNER_KEY: owner}


def write(
    sessions: SessionManager,
    session_id: str,
    record: dict[str, Any],
    ttl: int,
    write_session: SessionWriter | None,
) -> Awaitable[None]:
    """Write the session with ``write_session``, else ``sessions.token_sessions.update``."""
    if write_session is None:
        return sessions.token_sessions.update(session_id, record, ttl=ttl)
    return write_session(session_id, record, ttl)
