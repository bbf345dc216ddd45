"""TokenIssuer: LiveKit access tokens that carry metadata, attributes and agent dispatch.

The claims are exactly those :class:`livekit.api.AccessToken` writes for the same
inputs (HS256), built directly: every input is checked first (:mod:`.minting`),
the claims are signed with PyJWT (:mod:`.signing`), verified with PyJWT and
every claim's shape checked (:mod:`.verifying`); :meth:`TokenIssuer.amint` gives
each token its own session (:mod:`.session_token`). Least privilege by default
(room join only), a 10-minute default TTL, and the ``lk-metadata.`` namespace
reserved for the plugin: see the README's token section and docs/tokens.md.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

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
"""Default token lifetime: long enough to connect, short enough to limit a leaked token.

A token only has to be valid when the client connects (LiveKit hands connected
participants fresh tokens for reconnects); ``lk token create``'s 5 minutes is tight
for a token fetched, shown in a UI and used after a click on clocks a minute apart."""


class TokenIssuer:
    """Mints and verifies LiveKit access tokens that carry metadata and agent dispatch.

    Example::

        issuer = TokenIssuer()  # LIVEKIT_API_KEY / LIVEKIT_API_SECRET
        token = issuer.mint(
            "user-1", "support-42",
            metadata={"tier": "gold", "lang": "es"},
            dispatch=Dispatch("triage", metadata={"lang": "es"}),
        )

    Args:
        api_key: LiveKit API key; falls back to ``LIVEKIT_API_KEY``.
        api_secret: LiveKit API secret; falls back to ``LIVEKIT_API_SECRET``.
        ttl: Default lifetime of minted tokens (:data:`DEFAULT_TTL`, 10 minutes).
        max_metadata_bytes: Largest participant or job metadata, in UTF-8 bytes.
        max_attributes_bytes: Largest attribute map (sum of key and value bytes).
        router: Optional router (e.g. ``MetadataRouter``); when a mint call gives
            no ``dispatch``, ``router.route(metadata)`` chooses it.
        sessions: Optional ``SessionManager``, needed by :meth:`amint` (a
            session per token); :meth:`mint` never touches it.
        session_grace: How long a token session outlives its token
            (:data:`DEFAULT_SESSION_GRACE`; a timedelta or seconds).
        leeway: Clock leeway accepted by :meth:`verify`.
        clock: Returns the current Unix time; injectable for tests.

    Raises:
        ConfigError: The key or secret is missing, or PyJWT rejects the secret.
    """

    __slots__ = (
        "_api_key",
        "_builder",
        "_clock",
        "_leeway",
        "_router",
        "_session_grace",
        "_sessions",
        "_signer",
        "_ttl",
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
        for what, limit in (
            ("max_metadata_bytes", max_metadata_bytes),
            ("max_attributes_bytes", max_attributes_bytes),
        ):
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise ValueError(f"{what} must be a positive int")
        if router is not None and not callable(getattr(router, "route", None)):
            raise TypeError("router must have a route(metadata) method")
        if sessions is not None and not callable(getattr(sessions, "create_session", None)):
            raise TypeError("sessions must be a SessionManager")
        self._signer = Signer(secret)
        self._api_key = key
        self._ttl = ttl_seconds(ttl)
        self._builder = ClaimsBuilder(max_metadata_bytes, max_attributes_bytes, router)
        self._router = router
        self._sessions = sessions
        self._session_grace = ttl_seconds(session_grace, "session_grace")
        self._leeway = leeway.total_seconds()
        self._clock = clock

    def __repr__(self) -> str:
        return (
            f"TokenIssuer(api_key={self._api_key!r}, ttl={self._ttl}s, "
            f"max_metadata_bytes={self._builder.max_metadata_bytes}, "
            f"router={type(self._router).__name__ if self._router else None}, "
            f"sessions={self._sessions is not None})"
        )

    @property
    def api_key(self) -> str:
        """The API key (the ``iss`` claim; not a secret)."""
        return self._api_key

    @property
    def ttl(self) -> timedelta:
        """The default token lifetime."""
        return timedelta(seconds=self._ttl)

    @property
    def max_metadata_bytes(self) -> int:
        """The metadata size limit in UTF-8 bytes."""
        return self._builder.max_metadata_bytes

    @property
    def session_grace(self) -> timedelta:
        """How long a token session outlives its token."""
        return timedelta(seconds=self._session_grace)

    # ------------------------------------------------------------------ minting

    def mint(self, identity: str, room: str, **options: Unpack[MintOptions]) -> str:
        """Mint a join token for ``identity`` in ``room``.

        Args:
            identity: Participant identity (``sub``).
            room: Room to join; the only room the token grants.
            **options: :class:`~livekit.plugins.metadata.tokens.minting.MintOptions`
                (name, metadata, attributes, dispatch, job_metadata,
                can_update_own_metadata, ttl, grants, kind, room_config).

        Returns:
            The signed JWT.

        Raises:
            MetadataError: Metadata is not a JSON object or is too large.
            ReservedKey: A metadata or attribute key in the ``lk-metadata.`` namespace.
            InvalidAttributes: Attributes are not valid LiveKit attributes.
            RoutingError: The router rejected the metadata (``NoRouteMatched`` too).
            ValueError: An empty or too long identity/room/name, an empty agent
                name, a bad ttl, kind or grant room.
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
        """Mint a token that owns a fresh session, and write that session first.

        The session (id from ``sessions.create_session()``, never the caller's)
        holds the public ``metadata``, the ``private_metadata`` and the owner
        record ``SESSION_OWNER_KEY`` = ``{"identity", "room", "protected"}``, with
        a TTL of the token's lifetime plus ``session_grace``; only then is the
        token returned. The token carries the session id as participant attribute
        and job-metadata key ``SESSION_KEY``; private keys are in no claim (a
        router chooses on public and private keys together).

        Args:
            private_metadata: Keys only the store holds (as ``metadata``); no key
                may also be in ``metadata``.
            protected_keys: Public keys the server decided: the agent never lets the
                client's live metadata replace them. Private keys always are.
            write_session: Writes the session instead of
                ``sessions.token_sessions.update(session_id, record, ttl=ttl)``.
                What it raises propagates; no token is returned then.
            **options: As :meth:`mint`.

        Raises:
            ConfigError: The issuer has no ``sessions=`` manager.
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
        ttl = lifetime + self._session_grace
        await write(sessions, session_id, record, ttl, write_session)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "stored a token session", extra={"session_id": session_id, "keys": len(record)}
            )
        return SessionToken(token, session_id, datetime.fromtimestamp(expires, tz=timezone.utc))

    def metadata_claim(self, metadata: MetadataInput) -> MetadataClaim:
        """Check and serialize metadata once, for one or several mints.

        A caller that already holds validated metadata (the token endpoint) passes
        the result as ``metadata`` and as its dispatches' metadata; it is not
        parsed, serialized or checked again.

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
        claims["iss"] = self._api_key
        claims["nbf"] = now
        claims["exp"] = now + lifetime
        return self._signer.sign(claims), now + lifetime, lifetime

    # ------------------------------------------------------------ verification

    def verify(self, token: str, *, require_join: bool = True) -> VerifiedToken:
        """Verify a token with PyJWT, check the shape of every claim, parse its metadata.

        Checks: HS256 signature with this issuer's secret, ``iss`` equal to the
        API key, ``exp`` present and not past, ``nbf`` not in the future (both
        with the issuer's leeway) — all PyJWT's — then the type and shape of
        every claim LiveKit reads (identity, name, kind, metadata, attributes,
        each grant, ``roomConfig``, times within a datetime's range), a
        participant metadata claim that is a JSON object within
        ``max_metadata_bytes``, and (``require_join``) what LiveKit needs to let
        the token join a room: an identity and a video grant with ``roomJoin``
        and the room.

        Args:
            token: The JWT.
            require_join: Also refuse tokens LiveKit would not let join a room
                (pass ``False`` to inspect e.g. server-API tokens).

        Raises:
            TokenVerificationError: Which check failed, naming the claim (never
                the token or a claim's value).
            TypeError: ``token`` is not a str.
        """
        if not isinstance(token, str):
            raise TypeError(f"token must be a str, not {type(token).__name__}")
        payload = decode(token, self._signer.secret, self._api_key, self._leeway)
        return verified_token(
            payload, max_metadata_bytes=self._builder.max_metadata_bytes, require_join=require_join
        )
