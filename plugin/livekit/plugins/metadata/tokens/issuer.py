"""TokenIssuer: LiveKit access tokens that carry metadata, attributes and agent dispatch.

The claims :class:`livekit.api.AccessToken` writes for the same inputs, every input
checked first; the wing's modules and defaults: docs/tokens.md.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Final

from .._util import positive_int
from ..codec import DEFAULT_MAX_ATTRIBUTES_BYTES, DEFAULT_MAX_METADATA_BYTES
from ..errors import ConfigError
from ..log import logger
from .claims import ttl_seconds
from .minting import ClaimsBuilder, Dispatch, MetadataClaim, MetadataInput, MintOptions, _Router
from .session_token import (
    DEFAULT_SESSION_GRACE,
    SessionToken,
    SessionWriter,
    session_record,
    write,
)
from .signing import Signer
from .verifying import VerifiedToken, decode, verified_token

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..sessions.manager import SessionManager

__all__ = [
    "DEFAULT_TTL",
    "Dispatch",
    "SessionToken",
    "TokenIssuer",
    "VerifiedToken",
]

DEFAULT_TTL = timedelta(minutes=10)
"""Default token lifetime: long enough to connect (docs/tokens.md, "Default TTL")."""


class TokenIssuer:
    """Mints and verifies LiveKit access tokens that carry metadata and agent dispatch.

    Example::

        issuer = TokenIssuer()  # LIVEKIT_API_KEY / LIVEKIT_API_SECRET
        token = issuer.mint("user-1", "support-42", metadata={"tier": "gold"}, dispatch="triage")

    Args:
        api_key, api_secret: Default ``LIVEKIT_API_KEY`` and ``LIVEKIT_API_SECRET``.
        ttl: Default lifetime of minted tokens (timedelta or seconds).
        max_metadata_bytes: Largest participant or job metadata, in UTF-8 bytes.
        max_attributes_bytes: Largest attribute map (sum of key and value bytes).
        router: Chooses the dispatch (``router.route(metadata)``) when a mint names none.
        sessions: A ``SessionManager``, needed by :meth:`amint` only.
        session_grace: How long a token session outlives its token.
        leeway: Clock leeway accepted by :meth:`verify`.
        clock: Returns the current Unix time; injectable for tests.

    Raises:
        ConfigError: The key or secret is missing, or PyJWT rejects the secret.
    """

    __slots__ = (
        "_builder",
        "_clock",
        "_grace",
        "_leeway",
        "_sessions",
        "_signer",
        "_ttl",
        "api_key",
        "max_metadata_bytes",
        "session_grace",
        "ttl",
    )

    def __init__(
        self,
        api_key: str | None = None,
        api_secret: str | None = None,
        *,
        ttl: timedelta | float = DEFAULT_TTL,
        max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
        max_attributes_bytes: int = DEFAULT_MAX_ATTRIBUTES_BYTES,
        router: _Router | None = None,
        sessions: SessionManager | None = None,
        session_grace: timedelta | float = DEFAULT_SESSION_GRACE,
        leeway: timedelta = timedelta(minutes=1),
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = api_key or os.environ.get("LIVEKIT_API_KEY")
        secret = api_secret or os.environ.get("LIVEKIT_API_SECRET")
        if not key:
            raise ConfigError("LiveKit API key is not set: pass api_key= or set LIVEKIT_API_KEY")
        if not secret:
            raise ConfigError(
                "LiveKit API secret is not set: pass api_secret= or set LIVEKIT_API_SECRET"
            )
        if not isinstance(key, str) or not isinstance(secret, str):
            raise TypeError("api_key and api_secret must be str")
        positive_int(max_metadata_bytes, "max_metadata_bytes")
        positive_int(max_attributes_bytes, "max_attributes_bytes")
        if router is not None and not callable(getattr(router, "route", None)):
            raise TypeError("router must have a route(metadata) method")
        if sessions is not None and not callable(getattr(sessions, "create_session", None)):
            raise TypeError("sessions must be a SessionManager")
        self._signer = Signer(secret)
        self.api_key: Final = key
        """The API key (the ``iss`` claim; not a secret)."""
        self._ttl = ttl_seconds(ttl)
        self.ttl: Final = timedelta(seconds=self._ttl)
        self.max_metadata_bytes: Final = max_metadata_bytes
        self._builder = ClaimsBuilder(max_metadata_bytes, max_attributes_bytes, router)
        self._sessions = sessions
        self._grace = ttl_seconds(session_grace, "session_grace")
        self.session_grace: Final = timedelta(seconds=self._grace)
        self._leeway = leeway.total_seconds()
        self._clock = clock

    def __repr__(self) -> str:
        router = self._builder.router
        return (
            f"TokenIssuer(api_key={self.api_key!r}, ttl={self._ttl}s, "
            f"max_metadata_bytes={self.max_metadata_bytes}, "
            f"router={type(router).__name__ if router else None}, "
            f"sessions={self._sessions is not None})"
        )

    def mint(self, identity: str, room: str, **options: Unpack[MintOptions]) -> str:
        """Mint a join token for ``identity`` in ``room``; ``options``: :class:`MintOptions`.

        Raises:
            MetadataError: Metadata is not a JSON object or too large; ``ReservedKey``: a
                key in the ``lk-metadata.`` namespace; ``InvalidAttributes``.
            RoutingError: The router rejected the metadata (``NoRouteMatched`` too).
            ValueError: A bad identity, room, name, agent name, ttl, kind or grant room.
            TypeError: An argument has the wrong type, or an unknown keyword.
        """
        claims = self._builder.build(identity, room, options)[0]
        return self._sign(claims, identity, options.get("ttl"))[0]

    async def amint(
        self,
        identity: str,
        room: str,
        *,
        private_metadata: MetadataInput | None = None,
        protected_keys: Iterable[str] = (),
        write_session: SessionWriter | None = None,
        **options: Unpack[MintOptions],
    ) -> SessionToken:
        """Mint a token that owns a fresh session, written before the token is returned.

        The session (a new id, never the caller's) holds ``metadata``, ``private_metadata``
        (in no claim) and the owner record ``SESSION_OWNER_KEY`` for the token's lifetime
        plus ``session_grace``; the token carries its id (docs/tokens.md, "amint").

        Args:
            private_metadata: Keys only the store holds; none may also be in ``metadata``.
            protected_keys: Public keys the client's live metadata never replaces.
            write_session: Writes the session instead of ``sessions.token_sessions.update``;
                what it raises propagates (no token).

        Raises:
            ConfigError: The issuer has no ``sessions=``.
            StoreFull, StoreUnavailable: The store refused; no token exists.
            (others): As :meth:`mint`; nothing is stored when minting fails.
        """
        sessions = self._sessions
        if sessions is None:
            raise ConfigError("amint needs a session manager: pass sessions= to TokenIssuer")
        session_id = sessions.create_session()
        claims, public, private = self._builder.build(
            identity, room, options, session_id=session_id, private_metadata=private_metadata
        )
        token, expires, lifetime = self._sign(claims, identity, options.get("ttl"))
        record = session_record(identity, room, public, private, protected_keys)
        ttl = lifetime + self._grace
        await write(sessions, session_id, record, ttl, write_session)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "stored a token session", extra={"session_id": session_id, "keys": len(record)}
            )
        return SessionToken(token, session_id, datetime.fromtimestamp(expires, tz=timezone.utc))

    def metadata_claim(self, metadata: MetadataInput) -> MetadataClaim:
        """Check and serialize metadata once, to pass as ``metadata`` to one or several mints.

        Raises:
            As :meth:`mint` for ``metadata``.
        """
        return self._builder.metadata_claim(metadata)

    def _sign(
        self, claims: dict[str, Any], identity: str, ttl: timedelta | float | None
    ) -> tuple[str, int, int]:
        """The token, its ``exp`` and its lifetime in seconds."""
        now = int(self._clock())
        lifetime = self._ttl if ttl is None else ttl_seconds(ttl)
        claims["sub"] = identity
        claims["iss"] = self.api_key
        claims["nbf"] = now
        claims["exp"] = now + lifetime
        return self._signer.sign(claims), now + lifetime, lifetime

    def verify(self, token: str, *, require_join: bool = True) -> VerifiedToken:
        """Verify a token with PyJWT, check the shape of every claim, parse its metadata.

        PyJWT checks the HS256 signature, ``iss``, ``exp`` and ``nbf`` (with the leeway);
        then every claim LiveKit reads is type-checked, the metadata must be a JSON object
        within ``max_metadata_bytes`` and (``require_join``; ``False`` to inspect e.g.
        server-API tokens) the token must be able to join a room.

        Raises:
            TokenVerificationError: Which check failed, naming the claim (never a value).
            TypeError: ``token`` is not a str.
        """
        if not isinstance(token, str):
            raise TypeError(f"token must be a str, not {type(token).__name__}")
        payload = decode(token, self._signer.secret, self.api_key, self._leeway)
        return verified_token(
            payload, max_metadata_bytes=self.max_metadata_bytes, require_join=require_join
        )
