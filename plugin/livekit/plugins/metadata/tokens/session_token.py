"""A session per token (``TokenIssuer.amint``): what the session holds, and its write.

``amint`` takes the session id from ``SessionManager.create_session()`` (never from
a caller), mints against it, and writes :func:`session_record` (public and
private metadata, the owner record
:data:`~livekit.plugins.metadata.codec.SESSION_OWNER_KEY`) with :func:`write`
before the token is returned: a token never points at a session that does not exist.
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


def session_record(
    identity: str,
    room: str,
    public: Mapping[str, Any] | None,
    private: Mapping[str, Any],
    protected_keys: Iterable[str],
) -> dict[str, Any]:
    """What a token session holds: public and private keys, and the owner record.

    The owner record names the identity and room that may use the session and
    (``protected``) the keys the server decided: the private keys and
    ``protected_keys``.

    Raises:
        TypeError: ``protected_keys`` is a str or holds a non-str.
    """
    record = {**(public or {}), **private}
    owner: dict[str, Any] = {"identity": identity, "room": room}
    if protected_keys:
        owner["protected"] = _protected_list(protected_keys, private)
    elif private:
        owner["protected"] = sorted(private)
    record[SESSION_OWNER_KEY] = owner
    return record


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
