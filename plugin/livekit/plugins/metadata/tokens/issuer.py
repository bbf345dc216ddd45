"""TokenIssuer: LiveKit access tokens that carry metadata, attributes and agent dispatch.

A :class:`TokenIssuer` mints exactly the JWT claims :class:`livekit.api.AccessToken`
would produce for the same inputs (same keys, camelCase names, ``None``/``""``
dropped, ``roomConfig`` as protobuf ``MessageToDict`` writes it, HS256), but builds
the claims dict directly instead of going through ``dataclasses.asdict`` and
``MessageToDict`` on every call, serializes it with orjson and signs it with
PyJWT (:class:`jwt.PyJWS`). Every grant type of the installed livekit-api
(video, SIP, inference, observability, agent, ...) can be given; see
:mod:`~livekit.plugins.metadata.tokens.claims`. Secrets are validated by PyJWT once, when the issuer
is created, not on every token.

Before anything is signed every input is checked, each failure with its own
error:

* identity and room: non-empty strings of at most 256 UTF-8 bytes (LiveKit's
  ``max_participant_identity_length`` / ``max_room_name_length``; the server
  counts bytes, which is stricter than characters); the name likewise;
* metadata (participant and job): a JSON object within ``max_metadata_bytes``
  (:class:`~livekit.plugins.metadata.errors.MetadataError` leaves); the claim is
  always the compact JSON **string**, never a dict;
* attributes: ``str -> str``, at most 64 KiB in total, no ``lk.`` prefix
  (:class:`~livekit.plugins.metadata.errors.InvalidAttributes`);
* agent names: non-empty strings (``ValueError``).

Least privilege by default: the video grant is ``VideoGrants(room_join=True,
room=room)`` and nothing else — no admin, create, list or record grants, and
``canUpdateOwnMetadata`` only when ``can_update_own_metadata=True``. Extra grants
must be passed explicitly (``grants=VideoGrants(...)`` or
``grants=[VideoGrants(...), SIPGrants(call=True)]``).

**Default TTL: 10 minutes** (:data:`DEFAULT_TTL`). A LiveKit token only has to
be valid when the client *connects*: the server hands connected participants
fresh tokens for reconnects ("expiration time only impacts the initial
connection, and not subsequent reconnects", LiveKit docs). The SDK's 6 hours
leaves a leaked token usable for a working day; ``lk token create``'s 5 minutes
is tight for a token that is fetched, handed to a UI and used after a click, on
clocks that may be a minute apart. Ten minutes is the smallest window with
headroom for both.

**Short secrets.** PyJWT emits :class:`jwt.warnings.InsecureKeyLengthWarning`
(a ``UserWarning``) for HMAC secrets under 32 bytes; this module does not add a
second warning, and does not refuse short secrets (``livekit-server --dev``
uses a 6-byte one).

**Each token owns a session.** Given a
:class:`~livekit.plugins.metadata.sessions.manager.SessionManager`,
:meth:`TokenIssuer.amint` creates a fresh session per token (an unguessable id
from ``create_session()``, never one a caller names), writes the participant's
public metadata, its ``private_metadata`` (keys that live *only* in the store)
and an owner record (:data:`SESSION_OWNER_KEY`) there, and mints a token whose
participant attribute :data:`~livekit.plugins.metadata.codec.SESSION_ATTRIBUTE`
and every dispatch's job-metadata key
:data:`~livekit.plugins.metadata.codec.SESSION_KEY` carry the session id. What
each party sees:

* the client (holds the JWT) and every participant in the room (participant
  metadata and attributes are broadcast): the public metadata and the session id;
* the agent: the public metadata and job metadata from the token, and through
  the session id the private keys and the owner record;
* nobody else: the private keys are in no claim of the token.

The ``lk-metadata.`` namespace belongs to the plugin: a caller's metadata or
attribute key there is refused with
:class:`~livekit.plugins.metadata.errors.ReservedKey`, in every mint.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Union

import jwt
import orjson
from google.protobuf.json_format import MessageToDict
from jwt.algorithms import HMACAlgorithm
from livekit import api
from livekit.api.access_token import Claims

from .._util import key_label
from ..codec import (
    DEFAULT_MAX_ATTRIBUTES_BYTES,
    DEFAULT_MAX_METADATA_BYTES,
    PLUGIN_ATTRIBUTE_PREFIX,
    SESSION_ATTRIBUTE,
    SESSION_KEY,
    attributes_size,
    parse_metadata,
    serialize_metadata,
    validate_attributes,
)
from ..errors import (
    ConfigError,
    InvalidAttributes,
    MetadataError,
    ReservedKey,
    RoutingError,
    TokenError,
    TokenVerificationError,
)
from ..log import logger
from .claims import (
    MAX_IDENTITY_BYTES,
    PARTICIPANT_KINDS,
    GrantsInput,
    check_name,
    claims_grants,
    grants_claims,
    join_problem,
    participant_claims,
    read_claims,
    room_config_claim,
    ttl_seconds,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..sessions.manager import SessionManager

__all__ = [
    "DEFAULT_SESSION_GRACE",
    "DEFAULT_TTL",
    "MAX_IDENTITY_BYTES",
    "PARTICIPANT_KINDS",
    "SESSION_OWNER_KEY",
    "Dispatch",
    "DispatchSpec",
    "MetadataInput",
    "ReferenceToken",
    "SessionToken",
    "TokenIssuer",
    "VerifiedToken",
]

DEFAULT_TTL = timedelta(minutes=10)
"""Default token lifetime: long enough to connect, short enough to limit a leaked token."""

DEFAULT_SESSION_GRACE = timedelta(minutes=10)
"""How long a token session outlives its token by default.

A token is checked only when the client connects, and the agent reads the
participant's session when the participant joins, so a session must last the
token's lifetime plus the time from a last-second join (clocks up to a minute
apart) to the agent reading it. A session whose token is never used expires
on its own after ``ttl + grace``."""

SESSION_OWNER_KEY = PLUGIN_ATTRIBUTE_PREFIX + "owner"
"""Session key of a token session's owner record,
``{"identity": ..., "room": ..., "protected": [...]}``.

Written by :meth:`TokenIssuer.amint` next to the metadata, so an agent can check
that a session reference belongs to the participant (and room) presenting it,
and knows which keys the server decided (``protected``: the private keys and
the ``protected_keys`` given to ``amint``), which nothing the client sends may
replace."""

_LEGACY_REFERENCE_KEY = "session"
"""The job-metadata key of :meth:`TokenIssuer.mint_reference` (deprecated)."""

_RESERVED_IN_JSON = '"' + PLUGIN_ATTRIBUTE_PREFIX

MetadataInput = Union[Mapping[str, Any], "BaseModel", str]
"""Metadata as accepted by :meth:`TokenIssuer.mint`: a mapping, a pydantic model or a JSON string."""


@dataclasses.dataclass(frozen=True, repr=False)
class Dispatch:
    """One agent dispatch for a token's ``roomConfig.agents``.

    Args:
        agent_name: The worker's registered ``agent_name`` (non-empty).
        metadata: Job metadata (``ctx.job.metadata``): a mapping, pydantic model
            or JSON-object string; serialized compactly. ``None`` for none.
        deployment: Target deployment; ``None``/empty means production.
        attributes: Job attributes, set on the dispatched agent participant.
    """

    agent_name: str
    metadata: MetadataInput | None = None
    deployment: str | None = None
    attributes: Mapping[str, str] | None = None

    def __repr__(self) -> str:
        parts = [f"agent_name={self.agent_name!r}"]
        if self.metadata is not None:
            parts.append(f"metadata=<{_describe(self.metadata)}>")
        if self.deployment:
            parts.append(f"deployment={self.deployment!r}")
        if self.attributes:
            parts.append(f"attributes=<keys {sorted(self.attributes)}>")
        return f"Dispatch({', '.join(parts)})"


DispatchSpec = Dispatch | api.RoomAgentDispatch | str
"""One dispatch: a :class:`Dispatch`, a ``livekit.api.RoomAgentDispatch`` or an agent name."""


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


@dataclasses.dataclass(frozen=True, repr=False)
class SessionToken:
    """A token that owns a session, as :meth:`TokenIssuer.amint` returns it.

    Attributes:
        token: The signed JWT. Its participant attribute ``SESSION_ATTRIBUTE``
            and every dispatch's job-metadata key ``SESSION_KEY`` hold
            ``session_id``.
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


class _Minted(NamedTuple):
    token: str
    stored: dict[str, Any] | None
    expires: int
    lifetime: int


@dataclasses.dataclass(frozen=True, repr=False)
class ReferenceToken:
    """Deprecated: a :meth:`TokenIssuer.mint_reference` token; use :meth:`TokenIssuer.amint`.

    Store ``metadata`` under ``session_id`` (``await
    sessions.set_session_metadata(ref.session_id, ref.metadata)``) **before**
    handing ``token`` out; :meth:`TokenIssuer.amint` does both.

    Attributes:
        token: The signed JWT; its dispatches carry ``{"session": session_id}``.
        session_id: The session id the metadata belongs under.
        metadata: The full metadata to store (participant metadata, then job
            metadata merged over it, shallowly).
    """

    token: str
    session_id: str
    metadata: dict[str, Any]

    def __repr__(self) -> str:
        return (
            f"ReferenceToken(session_id={self.session_id!r}, token=<{len(self.token)} chars>, "
            f"metadata=<keys {sorted(self.metadata)}>)"
        )


SessionWriter = Callable[[str, dict[str, Any], int], Awaitable[None]]
"""Writes a token session: ``(session_id, record, ttl_seconds)``; see ``amint(write_session=)``."""


class _Router(Protocol):
    def route(self, metadata: Mapping[str, Any], /) -> Any: ...


def _describe(value: object) -> str:
    if isinstance(value, str):
        return f"{len(value)} chars"
    if isinstance(value, Mapping):
        return f"keys {sorted(map(str, value))}"
    return type(value).__name__


def _is_compact(text: str) -> bool:
    """True if ``text`` has no JSON whitespace at all (so none between tokens)."""
    return " " not in text and "\n" not in text and "\r" not in text and "\t" not in text


class _PreparedHMAC(HMACAlgorithm):
    """PyJWT's HS256 with the issuer's secret validated once instead of on every token.

    ``HMACAlgorithm.prepare_key`` re-checks the secret (PEM, SSH, DER, JWK shapes)
    on each call, which is most of PyJWT's per-token cost for small tokens. The
    secret of an issuer never changes, so it is checked once here; any other key
    still goes through PyJWT's full check. Signing is PyJWT's own ``sign``.
    """

    def __init__(self, secret: bytes) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._prepared = super().prepare_key(secret)

    @property
    def prepared(self) -> bytes:
        return self._prepared

    def prepare_key(self, key: str | bytes) -> bytes:
        if key is self._prepared:
            return self._prepared
        return super().prepare_key(key)


def _prefix(exc: MetadataError, what: str) -> MetadataError:
    """Prefix an error's message in place (its typed attributes stay as they are)."""
    exc.message = f"{what}: {exc.message}"
    exc.args = (exc.message,)
    return exc


def _dispatch_parts(
    spec: DispatchSpec,
) -> tuple[dict[str, Any], str, object, str | None, Mapping[str, str] | None]:
    """A dispatch's extra claim fields, agent name, own metadata, deployment and attributes."""
    if isinstance(spec, str):
        spec = Dispatch(spec)
    if isinstance(spec, Dispatch):
        extra: dict[str, Any] = {}
        agent_name, own, deployment = spec.agent_name, spec.metadata, spec.deployment
        attrs = spec.attributes
    elif isinstance(spec, api.RoomAgentDispatch):
        extra = MessageToDict(spec)
        agent_name, own, deployment = spec.agent_name, spec.metadata or None, spec.deployment
        attrs = dict(spec.attributes) if spec.attributes else None
    else:
        raise TypeError(
            "each dispatch must be a Dispatch, a RoomAgentDispatch or an agent name, "
            f"not {type(spec).__name__}"
        )
    if not isinstance(agent_name, str):
        raise TypeError(f"agent_name must be a str, not {type(agent_name).__name__}")
    if not agent_name or not agent_name.strip():
        raise ValueError("agent_name must be a non-empty string")
    return extra, agent_name, own, deployment, attrs


def _reused(
    text: str, parsed: dict[str, Any] | None, want_dict: bool
) -> tuple[str, dict[str, Any] | None]:
    """Metadata already checked as the participant's, reused (parsed now if needed)."""
    if want_dict and parsed is None:
        parsed = orjson.loads(text) if text else {}
    return text, parsed


def _protected_list(keys: Iterable[str], stored: Mapping[str, Any]) -> list[str]:
    """The owner record's ``protected`` list: private keys plus the given public ones."""
    if isinstance(keys, str):
        raise TypeError("protected_keys must be an iterable of keys, not a str")
    named = set()
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"protected_keys must contain str keys, not {type(key).__name__}")
        named.add(key)
    owner = stored[SESSION_OWNER_KEY]
    return sorted(named.union(owner.get("protected", ())))


def _refuse_reserved(keys: Iterable[str], what: str) -> None:
    """Raise :class:`ReservedKey` for the first key in the plugin's own namespace."""
    for key in keys:
        if key.startswith(PLUGIN_ATTRIBUTE_PREFIX):
            raise ReservedKey(
                f"{what}: key {key_label(key)} is in the namespace {PLUGIN_ATTRIBUTE_PREFIX!r}, "
                "which only this plugin writes (it carries the token-session reference); "
                "use another key",
                key=key_label(key, quote=False),
            )


_TIME_CLAIM = re.compile(r"\((exp|nbf|iat)\)")


def _timestamp(payload: Mapping[str, Any], claim: str) -> datetime | None:
    """A NumericDate claim PyJWT accepted, as an aware UTC datetime (``None`` if absent)."""
    value = payload.get(claim)
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, ValueError, OSError, TypeError):
        raise TokenVerificationError(f"{claim!r} claim is not a date in range") from None


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
        "_clock",
        "_jws",
        "_key",
        "_leeway",
        "_max_attributes_bytes",
        "_max_metadata_bytes",
        "_router",
        "_session_grace",
        "_sessions",
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
        try:
            algorithm = _PreparedHMAC(secret.encode("utf-8"))
        except jwt.InvalidKeyError as exc:
            raise ConfigError(f"LiveKit API secret rejected by PyJWT: {exc}") from None
        except UnicodeEncodeError:
            raise ConfigError("LiveKit API secret is not valid UTF-8") from None
        self._jws = jwt.PyJWS(algorithms=[])
        self._jws.register_algorithm("HS256", algorithm)
        self._key = algorithm.prepared
        self._api_key = key
        self._ttl = ttl_seconds(ttl)
        self._max_metadata_bytes = max_metadata_bytes
        self._max_attributes_bytes = max_attributes_bytes
        self._router = router
        self._sessions = sessions
        self._session_grace = ttl_seconds(session_grace, "session_grace")
        self._leeway = leeway.total_seconds()
        self._clock = clock

    def __repr__(self) -> str:
        return (
            f"TokenIssuer(api_key={self._api_key!r}, ttl={self._ttl}s, "
            f"max_metadata_bytes={self._max_metadata_bytes}, "
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
        return self._max_metadata_bytes

    @property
    def session_grace(self) -> timedelta:
        """How long a token session outlives its token."""
        return timedelta(seconds=self._session_grace)

    # ------------------------------------------------------------------ minting

    def mint(
        self,
        identity: str,
        room: str,
        *,
        name: str | None = None,
        metadata: MetadataInput | None = None,
        attributes: Mapping[str, str] | None = None,
        dispatch: DispatchSpec | Iterable[DispatchSpec] | None = None,
        job_metadata: MetadataInput | None = None,
        can_update_own_metadata: bool = False,
        ttl: timedelta | float | None = None,
        grants: GrantsInput | None = None,
        kind: str | None = None,
        room_config: api.RoomConfiguration | None = None,
    ) -> str:
        """Mint a join token for ``identity`` in ``room``.

        Args:
            identity: Participant identity (``sub``).
            room: Room to join; the only room the token grants.
            name: Display name.
            metadata: Participant metadata: mapping, pydantic model or JSON-object
                string; the claim is its compact JSON string.
            attributes: Participant attributes (``str -> str``).
            dispatch: One dispatch or several (:class:`Dispatch`,
                ``api.RoomAgentDispatch`` or an agent name). ``None`` lets the
                configured router choose; ``[]`` means explicitly none.
            job_metadata: Job metadata for every dispatch that has none of its own
                (a dispatch with its own metadata and ``job_metadata`` is an
                error); for a router-chosen dispatch it replaces the rule's job
                metadata. Passing the same object as ``metadata`` reuses its
                serialization.
            can_update_own_metadata: Grant ``canUpdateOwnMetadata`` (off by default;
                a client that can rewrite its metadata makes it untrusted input).
            ttl: Lifetime of this token (timedelta or seconds); default the issuer's.
            grants: One livekit-api grant object or several of distinct types
                (``VideoGrants``, ``SIPGrants``, ``InferenceGrants``,
                ``ObservabilityGrants``, ``AgentGrants``, ``AgentEndpointGrants``,
                ``AgentThreadGrants``, any later one: ``claims.GRANT_CLAIMS``). A
                ``VideoGrants`` replaces the default ``VideoGrants(room_join=True,
                room=room)``; its ``room`` must be empty (it is filled in) or
                equal ``room``.
            kind: Participant kind (:data:`PARTICIPANT_KINDS`).
            room_config: Other ``RoomConfiguration`` settings (``empty_timeout``,
                ``max_participants``, ...) for the room this join creates; its
                ``agents`` must be empty (use ``dispatch``). Like the dispatches,
                the server ignores it when the room already exists.

        Returns:
            The signed JWT.

        Raises:
            MetadataError: Metadata is not a JSON object or is too large.
            ReservedKey: A metadata or attribute key in the ``lk-metadata.`` namespace.
            InvalidAttributes: Attributes are not valid LiveKit attributes.
            RoutingError: The router rejected the metadata (``NoRouteMatched`` too).
            ValueError: An empty or too long identity/room/name, an empty agent
                name, a bad ttl, kind or grant room.
            TypeError: An argument has the wrong type.
        """
        return self._mint(
            identity,
            room,
            name=name,
            metadata=metadata,
            attributes=attributes,
            dispatch=dispatch,
            job_metadata=job_metadata,
            can_update_own_metadata=can_update_own_metadata,
            ttl=ttl,
            grants=grants,
            kind=kind,
            room_config=room_config,
        ).token

    async def amint(
        self,
        identity: str,
        room: str,
        *,
        name: str | None = None,
        metadata: MetadataInput | None = None,
        private_metadata: MetadataInput | None = None,
        protected_keys: Iterable[str] = (),
        attributes: Mapping[str, str] | None = None,
        dispatch: DispatchSpec | Iterable[DispatchSpec] | None = None,
        job_metadata: MetadataInput | None = None,
        can_update_own_metadata: bool = False,
        ttl: timedelta | float | None = None,
        grants: GrantsInput | None = None,
        kind: str | None = None,
        room_config: api.RoomConfiguration | None = None,
        write_session: SessionWriter | None = None,
    ) -> SessionToken:
        """Mint a token that owns a fresh session, and write that session first.

        Creates a session with ``sessions.create_session()`` (at least 128 random
        bits; never a caller-chosen id) and writes into it the public
        ``metadata``, the ``private_metadata`` and the owner record
        :data:`SESSION_OWNER_KEY` = ``{"identity": identity, "room": room,
        "protected": [...]}`` (the keys the server decided), with
        a TTL of the token's lifetime plus ``session_grace``. Only then is the
        token returned: it never points at a session that was not written.

        The token carries the public metadata as participant metadata, the
        session id as participant attribute ``SESSION_ATTRIBUTE``, and each
        dispatch's job metadata gets ``SESSION_KEY`` = the session id next to its
        public keys. Private keys appear in no claim: a router chooses the
        dispatch from the public and private keys together, and a private key in
        any job metadata (e.g. picked by a routing rule) is left out of it.

        Args:
            private_metadata: Keys only the store holds (mapping, pydantic model
                or JSON-object string); no key may also be in ``metadata``.
            protected_keys: Public keys of ``metadata`` that the server decided
                (e.g. trusted keys shown to the client): the agent never lets the
                client's live metadata replace them. Private keys are always
                protected.
            write_session: Writes the session instead of
                ``sessions.token_sessions.update(session_id, record, ttl=ttl)``
                (the endpoint admits the request and writes in one store call).
                What it raises propagates; no token is returned then.
            (others): As in :meth:`mint`.

        Returns:
            The token, its session id and its expiry.

        Raises:
            ConfigError: The issuer has no ``sessions=`` manager.
            StoreFull, StoreUnavailable: The store refused; no token exists.
            MetadataTooLarge: Some metadata, or the session, is over its limit.
            ReservedKey: A caller key in the ``lk-metadata.`` namespace.
            (others): As :meth:`mint`; nothing is stored when minting fails.
        """
        sessions = self._sessions
        if sessions is None:
            raise ConfigError("amint needs a session manager: pass sessions= to TokenIssuer")
        session_id = sessions.create_session()
        minted = self._mint(
            identity,
            room,
            name=name,
            metadata=metadata,
            attributes=attributes,
            dispatch=dispatch,
            job_metadata=job_metadata,
            can_update_own_metadata=can_update_own_metadata,
            ttl=ttl,
            grants=grants,
            kind=kind,
            room_config=room_config,
            session_id=session_id,
            private_metadata=private_metadata,
        )
        stored = minted.stored
        assert stored is not None
        if protected_keys:  # the private keys are in the owner record already
            protected = _protected_list(protected_keys, stored)
            stored[SESSION_OWNER_KEY] = {**stored[SESSION_OWNER_KEY], "protected": protected}
        lifetime = minted.lifetime + self._session_grace
        if write_session is None:
            await sessions.token_sessions.update(session_id, stored, ttl=lifetime)
        else:
            await write_session(session_id, stored, lifetime)
        logger.debug(
            "stored a token session",
            extra={"session_id": session_id, "keys": len(stored)},
        )
        expires_at = datetime.fromtimestamp(minted.expires, tz=timezone.utc)
        return SessionToken(minted.token, session_id, expires_at)

    def mint_reference(
        self,
        identity: str,
        room: str,
        *,
        session_id: str | None = None,
        **options: Any,
    ) -> ReferenceToken:
        """Deprecated: use :meth:`amint`, which gives each token its own unguessable session.

        Mints a token without a participant metadata claim whose dispatches'
        job metadata is ``{"session": session_id}`` (default: the room name, which
        clients choose: the reason this is deprecated), and returns the metadata
        the caller must store under that id. Kept only until the token endpoint's
        ``reference_mode`` is gone.

        Raises:
            As :meth:`mint`, and ``ValueError`` for an empty session id.
        """
        sid = room if session_id is None else session_id
        check_name(sid, "session_id", required=True)
        minted = self._mint(identity, room, legacy_reference=sid, **options)
        assert minted.stored is not None
        return ReferenceToken(token=minted.token, session_id=sid, metadata=minted.stored)

    def _metadata_claim(
        self, value: object, what: str, *, want_dict: bool
    ) -> tuple[str, dict[str, Any] | None]:
        """Compact JSON string (``""`` for none) and, when asked, the dict.

        Raises :class:`ReservedKey` for a top-level key in the plugin's namespace.
        """
        try:
            text, parsed = self._metadata_claim_of(value, what, want_dict=want_dict)
        except MetadataError as exc:
            if what != "metadata":  # say which metadata was rejected
                _prefix(exc, what)
            raise
        if parsed is not None:
            _refuse_reserved(parsed, what)
        elif _RESERVED_IN_JSON in text:  # orjson's output: no escapes to hide a key behind
            _refuse_reserved(orjson.loads(text), what)
        return text, parsed

    def _metadata_claim_of(
        self, value: object, what: str, *, want_dict: bool
    ) -> tuple[str, dict[str, Any] | None]:
        limit = self._max_metadata_bytes
        if isinstance(value, str):
            parsed = parse_metadata(value, max_bytes=limit)
            if not parsed:
                return "", ({} if want_dict else None)
            if _is_compact(value):
                # Valid, an object, within the limit and without any whitespace:
                # already compact, so the caller's text is the claim (no re-encode).
                return value, parsed
            return serialize_metadata(parsed, max_bytes=limit), parsed
        if isinstance(value, Mapping) or hasattr(value, "model_dump"):
            text = serialize_metadata(value, max_bytes=limit)  # type: ignore[arg-type]
            if text == "{}":
                return "", ({} if want_dict else None)
            if not want_dict:
                return text, None
            if isinstance(value, dict):
                return text, value
            return text, orjson.loads(text)
        raise TypeError(
            f"{what} must be a mapping, a pydantic model or a JSON string, "
            f"not {type(value).__name__}"
        )

    def _mint(
        self,
        identity: str,
        room: str,
        *,
        name: str | None = None,
        metadata: MetadataInput | None = None,
        attributes: Mapping[str, str] | None = None,
        dispatch: DispatchSpec | Iterable[DispatchSpec] | None = None,
        job_metadata: MetadataInput | None = None,
        can_update_own_metadata: bool = False,
        ttl: timedelta | float | None = None,
        grants: GrantsInput | None = None,
        kind: str | None = None,
        room_config: api.RoomConfiguration | None = None,
        session_id: str | None = None,
        private_metadata: MetadataInput | None = None,
        legacy_reference: str | None = None,
    ) -> _Minted:
        """Check everything, build the claims and sign; pure (the caller stores).

        With ``session_id`` the token is linked to that session (attribute and
        job-metadata key) and ``stored`` is what the session must hold; with
        ``legacy_reference`` (deprecated :meth:`mint_reference`) the old
        ``{"session": id}`` reference replaces all metadata in the token.
        """
        check_name(identity, "identity", required=True)
        check_name(room, "room", required=True)
        linked = session_id is not None or legacy_reference is not None
        router = self._router if dispatch is None else None
        want_dict = linked or router is not None

        claims = participant_claims(name, kind)
        md_text, md_dict = "", None
        if metadata is not None:
            md_text, md_dict = self._metadata_claim(metadata, "metadata", want_dict=want_dict)
        private: dict[str, Any] = {}
        if private_metadata is not None:
            private = self._private_metadata(private_metadata, md_dict or {})
        if md_text and legacy_reference is None:
            claims["metadata"] = md_text
        claims.update(grants_claims(room, grants, can_update_own_metadata=can_update_own_metadata))
        attrs = self._attributes_claim(attributes, session_id)
        if attrs is not None:
            claims["attributes"] = attrs

        room_claim = room_config_claim(room_config)
        route_on = {**md_dict, **private} if private and md_dict else (private or md_dict)
        specs = self._resolve_dispatch(dispatch, router, route_on, job_metadata is not None)
        job_dicts: list[dict[str, Any] | None] = []
        if specs:
            agents, job_dicts = self._agents_claim(
                specs, job_metadata, metadata, md_text, md_dict, want_dict=linked
            )
            if session_id is not None:
                self._link_agents(agents, job_dicts, session_id, private)
            elif legacy_reference is not None:
                ref_text = orjson.dumps({_LEGACY_REFERENCE_KEY: legacy_reference}).decode()
                for agent in agents:
                    agent["metadata"] = ref_text
            room_claim = room_claim or {}
            room_claim["agents"] = agents
        elif job_metadata is not None:
            raise ValueError("job_metadata needs a dispatch (pass dispatch= or configure a router)")
        if room_claim is not None:
            claims["roomConfig"] = room_claim

        stored: dict[str, Any] | None = None
        if session_id is not None:
            stored = {**(md_dict or {}), **private}
            owner: dict[str, Any] = {"identity": identity, "room": room}
            if private:
                owner["protected"] = sorted(private)
            stored[SESSION_OWNER_KEY] = owner
        elif legacy_reference is not None:
            stored = dict(md_dict or {})
            for job in job_dicts:
                stored.update(job or {})
        return self._sign(claims, identity, ttl, stored)

    def _sign(
        self,
        claims: dict[str, Any],
        identity: str,
        ttl: timedelta | float | None,
        stored: dict[str, Any] | None,
    ) -> _Minted:
        now = int(self._clock())
        lifetime = self._ttl if ttl is None else ttl_seconds(ttl)
        claims["sub"] = identity
        claims["iss"] = self._api_key
        claims["nbf"] = now
        claims["exp"] = now + lifetime
        try:
            payload = orjson.dumps(claims)
        except orjson.JSONEncodeError as exc:  # only reachable through odd grant values
            raise TokenError(f"token claims are not JSON-serializable: {exc}") from None
        token = self._jws.encode(payload, self._key, algorithm="HS256")
        return _Minted(token, stored, now + lifetime, lifetime)

    def _private_metadata(self, value: MetadataInput, public: dict[str, Any]) -> dict[str, Any]:
        _, private = self._metadata_claim(value, "private_metadata", want_dict=True)
        private = private or {}
        for key in private:
            if key in public:
                raise ValueError(
                    f"key {key_label(key)} is in both metadata and private_metadata: "
                    "a key is either public (in the token) or private (only in the store)"
                )
        return private

    def _link_agents(
        self,
        agents: list[dict[str, Any]],
        job_dicts: list[dict[str, Any] | None],
        session_id: str,
        private: Mapping[str, Any],
    ) -> None:
        """Put the session id into each dispatch's job metadata, private keys left out."""
        limit = self._max_metadata_bytes
        for agent, job in zip(agents, job_dicts, strict=True):
            public = {k: v for k, v in (job or {}).items() if k not in private}
            public[SESSION_KEY] = session_id
            try:
                agent["metadata"] = serialize_metadata(public, max_bytes=limit)
            except MetadataError as exc:
                raise _prefix(exc, f"dispatch {agent['agentName']!r} metadata") from None

    def _attributes_claim(
        self, attributes: Mapping[str, str] | None, session_id: str | None
    ) -> dict[str, str] | None:
        if attributes is None and session_id is None:
            return None
        limit = self._max_attributes_bytes
        checked = validate_attributes(attributes, max_bytes=limit)
        _refuse_reserved(checked, "attributes")
        if session_id is not None:
            checked[SESSION_ATTRIBUTE] = session_id
            total = attributes_size(checked)
            if total > limit:
                raise InvalidAttributes(
                    f"attributes total {total} bytes with the session reference, "
                    f"over the limit of {limit} bytes"
                )
        return checked

    def _resolve_dispatch(
        self,
        dispatch: DispatchSpec | Iterable[DispatchSpec] | None,
        router: _Router | None,
        md_dict: dict[str, Any] | None,
        has_job_metadata: bool,
    ) -> list[DispatchSpec]:
        if dispatch is None:
            if router is None:
                return []
            return self._route(router, md_dict or {}, use_rule_metadata=not has_job_metadata)
        if isinstance(dispatch, (Dispatch, api.RoomAgentDispatch, str)):
            return [dispatch]
        if isinstance(dispatch, Mapping) or not isinstance(dispatch, Iterable):
            raise TypeError(
                "dispatch must be a Dispatch, a RoomAgentDispatch, an agent name or an iterable of those"
            )
        return list(dispatch)

    @staticmethod
    def _route(
        router: _Router, metadata: dict[str, Any], *, use_rule_metadata: bool
    ) -> list[DispatchSpec]:
        route = router.route(metadata)
        if getattr(route, "rejected", False):
            rule = getattr(route, "label", None) or getattr(route, "rule", None)
            raise RoutingError(
                f"the metadata was rejected by routing rule {rule!r}; no token was minted"
                if rule
                else "the metadata was rejected by the routing rules; no token was minted"
            )
        # ``agent_name`` is the LiveKit worker to dispatch to; ``agent`` the logical
        # agent, which is the same unless the rules name a shared worker.
        agent = getattr(route, "agent_name", None) or getattr(route, "agent", None)
        if not agent:
            return []
        job = getattr(route, "metadata", None) if use_rule_metadata else None
        return [
            Dispatch(
                agent,
                metadata=job or None,
                deployment=getattr(route, "deployment", None) or None,
                attributes=getattr(route, "attributes", None) or None,
            )
        ]

    def _agents_claim(
        self,
        specs: list[DispatchSpec],
        job_metadata: MetadataInput | None,
        metadata: MetadataInput | None,
        md_text: str,
        md_dict: dict[str, Any] | None,
        *,
        want_dict: bool,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any] | None]]:
        """The ``roomConfig.agents`` list and (``want_dict``) each one's job-metadata dict."""
        job_text = ""
        job_dict: dict[str, Any] | None = None
        if job_metadata is not None:
            if job_metadata is metadata:
                job_text, job_dict = _reused(md_text, md_dict, want_dict)
            else:
                job_text, job_dict = self._metadata_claim(
                    job_metadata, "job_metadata", want_dict=want_dict
                )
        agents: list[dict[str, Any]] = []
        job_dicts: list[dict[str, Any] | None] = []
        attr_limit = self._max_attributes_bytes
        for spec in specs:
            extra, agent_name, own, deployment, attrs = _dispatch_parts(spec)
            entry: dict[str, Any] = extra
            entry["agentName"] = agent_name
            if own is not None:
                if job_metadata is not None:
                    raise ValueError(
                        f"dispatch {agent_name!r} has its own metadata; do not also pass job_metadata"
                    )
                if own is metadata:  # the same object as the participant metadata
                    text, parsed = _reused(md_text, md_dict, want_dict)
                else:
                    text, parsed = self._metadata_claim(
                        own, f"dispatch {agent_name!r} metadata", want_dict=want_dict
                    )
            else:
                text, parsed = job_text, job_dict
            if text:
                entry["metadata"] = text
            else:
                entry.pop("metadata", None)
            job_dicts.append(parsed)
            if deployment is not None:
                if not isinstance(deployment, str):
                    raise TypeError(f"deployment must be a str, not {type(deployment).__name__}")
                if deployment:
                    entry["deployment"] = deployment
            if attrs is not None:
                try:
                    checked = validate_attributes(attrs, max_bytes=attr_limit)
                    _refuse_reserved(checked, "attributes")
                except MetadataError as exc:
                    raise _prefix(exc, f"dispatch {agent_name!r}") from None
                if checked:
                    entry["attributes"] = checked
            agents.append(entry)
        return agents, job_dicts

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
        payload = self._decode(token)
        claims = read_claims(payload)
        if require_join and (problem := join_problem(claims)) is not None:
            raise TokenVerificationError(problem)
        try:
            metadata = parse_metadata(claims.metadata or None, max_bytes=self._max_metadata_bytes)
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

    def _decode(self, token: str) -> dict[str, Any]:
        """PyJWT's checks (signature, iss, exp, nbf, iat), each failure as one message."""
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key=self._key,
                algorithms=["HS256"],
                issuer=self._api_key,
                leeway=self._leeway,
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
        except jwt.DecodeError as exc:
            # PyJWT names a malformed time claim as "... claim (exp) must be an integer".
            time_claim = _TIME_CLAIM.search(str(exc))
            if time_claim is not None:
                raise TokenVerificationError(
                    f"{time_claim.group(1)!r} claim must be a number (NumericDate)"
                ) from None
            raise TokenVerificationError("token is malformed: not a signed JWT") from None
        except jwt.InvalidTokenError as exc:
            raise TokenVerificationError(
                f"token verification failed ({type(exc).__name__})"
            ) from None
        return payload
