"""TokenIssuer: LiveKit access tokens that carry metadata, attributes and agent dispatch.

A :class:`TokenIssuer` mints exactly the JWT claims :class:`livekit.api.AccessToken`
would produce for the same inputs (same keys, camelCase names, ``None``/``""``
dropped, ``roomConfig`` as protobuf ``MessageToDict`` writes it, HS256), but builds
the claims dict directly instead of going through ``dataclasses.asdict`` and
``MessageToDict`` on every call, serializes it with orjson and signs it with
PyJWT (:class:`jwt.PyJWS`). Secrets are validated by PyJWT once, when the issuer
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
must be passed explicitly (``grants=VideoGrants(...)``).

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

**Reference mode.** For large metadata, or several workers sharing a Redis
session store, the token can carry only a reference: every dispatch's job
metadata becomes ``{"session": "<id>"}`` (the id defaults to the room name) and
the full metadata is written to a
:class:`~livekit.plugins.metadata.session.SessionManager` instead — see
:meth:`TokenIssuer.amint` and :meth:`TokenIssuer.mint_reference`.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol, Union

import jwt
import orjson
from google.protobuf.json_format import MessageToDict
from jwt.algorithms import HMACAlgorithm
from livekit import api
from livekit.api.access_token import Claims

from ..codec import (
    DEFAULT_MAX_ATTRIBUTES_BYTES,
    DEFAULT_MAX_METADATA_BYTES,
    parse_metadata,
    serialize_metadata,
    validate_attributes,
)
from ..errors import (
    ConfigError,
    MetadataError,
    RoutingError,
    TokenError,
    TokenVerificationError,
)
from ..log import logger

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "DEFAULT_TTL",
    "MAX_IDENTITY_BYTES",
    "PARTICIPANT_KINDS",
    "Dispatch",
    "DispatchSpec",
    "MetadataInput",
    "ReferenceToken",
    "TokenIssuer",
    "VerifiedToken",
]

DEFAULT_TTL = timedelta(minutes=10)
"""Default token lifetime: long enough to connect, short enough to limit a leaked token."""

MAX_IDENTITY_BYTES = 256
"""LiveKit's limit for identities, room names and participant names (UTF-8 bytes)."""

PARTICIPANT_KINDS = frozenset(
    {"standard", "egress", "ingress", "sip", "agent", "connector", "bridge"}
)
"""Participant kinds the LiveKit server accepts in the ``kind`` claim."""

SESSION_KEY = "session"
"""The key of the job-metadata reference written in reference mode."""

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
        claims: The raw :class:`livekit.api.Claims` from ``TokenVerifier``.
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

    def __repr__(self) -> str:
        return (
            f"VerifiedToken(identity={self.identity!r}, room={self.room!r}, "
            f"metadata=<keys {sorted(self.metadata)}>, "
            f"dispatches={[d.agent_name for d in self.dispatches]}, "
            f"expires_at={self.expires_at.isoformat()})"
        )


@dataclasses.dataclass(frozen=True, repr=False)
class ReferenceToken:
    """A reference-mode token and what must be stored for it.

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


class _Router(Protocol):
    def route(self, metadata: Mapping[str, Any], /) -> Any: ...


class _Sessions(Protocol):
    async def set_session_metadata(self, session_id: str, mapping: Mapping[str, Any], /) -> Any: ...


def _describe(value: object) -> str:
    if isinstance(value, str):
        return f"{len(value)} chars"
    if isinstance(value, Mapping):
        return f"keys {sorted(map(str, value))}"
    return type(value).__name__


def _is_compact(text: str) -> bool:
    """True if ``text`` has no JSON whitespace at all (so none between tokens)."""
    return " " not in text and "\n" not in text and "\r" not in text and "\t" not in text


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


_VIDEO_FIELDS: tuple[tuple[str, str], ...] = tuple(
    (f.name, _camel(f.name)) for f in dataclasses.fields(api.VideoGrants)
)


def _video_claim(grants: api.VideoGrants) -> dict[str, Any]:
    """The ``video`` claim exactly as ``Claims.asdict()`` writes it."""
    out: dict[str, Any] = {}
    for attr, key in _VIDEO_FIELDS:
        value = getattr(grants, attr)
        if value is None or (isinstance(value, str) and value == ""):
            continue
        out[key] = list(value) if isinstance(value, list) else value
    return out


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


def _check_name(value: object, what: str, *, required: bool) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        if required:
            raise ValueError(f"{what} must not be empty")
        return value
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid UTF-8 (lone surrogate)") from None
    if size > MAX_IDENTITY_BYTES:
        raise ValueError(
            f"{what} is {size} bytes (UTF-8), over LiveKit's limit of {MAX_IDENTITY_BYTES}"
        )
    return value


def _ttl_seconds(ttl: timedelta | float, what: str = "ttl") -> int:
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise TypeError(f"{what} must be a timedelta or seconds, not {type(ttl).__name__}")
    if not seconds >= 1:  # also rejects NaN
        raise ValueError(f"{what} must be at least one second")
    return int(seconds)


def _prefix(exc: MetadataError, what: str) -> MetadataError:
    """Prefix an error's message in place (its typed attributes stay as they are)."""
    exc.message = f"{what}: {exc.message}"
    exc.args = (exc.message,)
    return exc


def _utc(ts: object) -> datetime | None:
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        return datetime.fromtimestamp(ts, tz=timezone.utc)
    return None


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
        sessions: Optional ``SessionManager``, needed for reference mode.
        reference_mode: When true, :meth:`amint` issues reference tokens by default
            and :meth:`mint` refuses (it cannot store).
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
        "_reference_mode",
        "_router",
        "_sessions",
        "_ttl",
        "_verifier",
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
        sessions: _Sessions | None = None,
        reference_mode: bool = False,
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
        if sessions is not None and not callable(getattr(sessions, "set_session_metadata", None)):
            raise TypeError("sessions must have an async set_session_metadata(sid, mapping) method")
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
        self._ttl = _ttl_seconds(ttl)
        self._max_metadata_bytes = max_metadata_bytes
        self._max_attributes_bytes = max_attributes_bytes
        self._router = router
        self._sessions = sessions
        self._reference_mode = bool(reference_mode)
        self._leeway = leeway
        self._clock = clock
        self._verifier = api.TokenVerifier(key, secret, leeway=leeway)

    def __repr__(self) -> str:
        return (
            f"TokenIssuer(api_key={self._api_key!r}, ttl={self._ttl}s, "
            f"max_metadata_bytes={self._max_metadata_bytes}, "
            f"router={type(self._router).__name__ if self._router else None}, "
            f"reference_mode={self._reference_mode})"
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
    def reference_mode(self) -> bool:
        """Whether :meth:`amint` issues reference tokens by default."""
        return self._reference_mode

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
        grants: api.VideoGrants | None = None,
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
            grants: An explicit ``VideoGrants`` replacing the default
                ``VideoGrants(room_join=True, room=room)``; its ``room`` must be
                empty (it is filled in) or equal ``room``.
            kind: Participant kind (:data:`PARTICIPANT_KINDS`).
            room_config: Other ``RoomConfiguration`` settings (``empty_timeout``,
                ``max_participants``, ...) for the room this join creates; its
                ``agents`` must be empty (use ``dispatch``). Like the dispatches,
                the server ignores it when the room already exists.

        Returns:
            The signed JWT.

        Raises:
            ConfigError: The issuer is in reference mode (use :meth:`amint`).
            MetadataError: Metadata is not a JSON object or is too large.
            InvalidAttributes: Attributes are not valid LiveKit attributes.
            RoutingError: The router rejected the metadata (``NoRouteMatched`` too).
            ValueError: An empty or too long identity/room/name, an empty agent
                name, a bad ttl, kind or grant room.
            TypeError: An argument has the wrong type.
        """
        if self._reference_mode:
            raise ConfigError(
                "this TokenIssuer is in reference mode: use await amint(...) "
                "(stores the metadata) or mint_reference(...)"
            )
        token, _ = self._mint(
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
            session_id=None,
        )
        return token

    def mint_reference(
        self,
        identity: str,
        room: str,
        *,
        session_id: str | None = None,
        name: str | None = None,
        metadata: MetadataInput | None = None,
        attributes: Mapping[str, str] | None = None,
        dispatch: DispatchSpec | Iterable[DispatchSpec] | None = None,
        job_metadata: MetadataInput | None = None,
        can_update_own_metadata: bool = False,
        ttl: timedelta | float | None = None,
        grants: api.VideoGrants | None = None,
        kind: str | None = None,
        room_config: api.RoomConfiguration | None = None,
    ) -> ReferenceToken:
        """Mint a reference token without storing anything (pure; see :meth:`amint`).

        The token has no participant ``metadata`` claim; each dispatch's job
        metadata is ``{"session": session_id}``. The returned
        :class:`ReferenceToken` holds the full metadata to store under
        ``session_id`` (participant metadata, then job metadata merged over it).
        The router (if any) still routes on the full metadata.

        Args:
            session_id: The session id; defaults to the room name.
            (others): As in :meth:`mint`.

        Raises:
            As :meth:`mint`, and ``ValueError`` for an empty session id.
        """
        sid = room if session_id is None else session_id
        _check_name(sid, "session_id", required=True)
        token, stored = self._mint(
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
            session_id=sid,
        )
        assert stored is not None
        return ReferenceToken(token=token, session_id=sid, metadata=stored)

    async def amint(
        self,
        identity: str,
        room: str,
        *,
        reference: bool | None = None,
        session_id: str | None = None,
        name: str | None = None,
        metadata: MetadataInput | None = None,
        attributes: Mapping[str, str] | None = None,
        dispatch: DispatchSpec | Iterable[DispatchSpec] | None = None,
        job_metadata: MetadataInput | None = None,
        can_update_own_metadata: bool = False,
        ttl: timedelta | float | None = None,
        grants: api.VideoGrants | None = None,
        kind: str | None = None,
        room_config: api.RoomConfiguration | None = None,
    ) -> str:
        """Mint a token; in reference mode, store the metadata first.

        With ``reference`` true (default: the issuer's ``reference_mode``), the
        full metadata is merged into the session ``session_id`` (default: the
        room name) of the configured SessionManager, and only then is the
        reference token returned — a token never points at a session that was
        not written. Otherwise this is :meth:`mint`.

        Raises:
            ConfigError: Reference mode without a ``sessions=`` manager.
            StoreError: The session store failed (nothing is returned then).
            (others): As :meth:`mint`.
        """
        use_reference = self._reference_mode if reference is None else reference
        options: dict[str, Any] = {
            "name": name,
            "metadata": metadata,
            "attributes": attributes,
            "dispatch": dispatch,
            "job_metadata": job_metadata,
            "can_update_own_metadata": can_update_own_metadata,
            "ttl": ttl,
            "grants": grants,
            "kind": kind,
            "room_config": room_config,
        }
        if not use_reference:
            token, _ = self._mint(identity, room, session_id=None, **options)
            return token
        if self._sessions is None:
            raise ConfigError(
                "reference mode needs a session manager: pass sessions= to TokenIssuer"
            )
        ref = self.mint_reference(identity, room, session_id=session_id, **options)
        await self._sessions.set_session_metadata(ref.session_id, ref.metadata)
        logger.debug(
            "stored reference-token metadata",
            extra={"session_id": ref.session_id, "keys": len(ref.metadata)},
        )
        return ref.token

    def _metadata_claim(
        self, value: object, what: str, *, want_dict: bool
    ) -> tuple[str, dict[str, Any] | None]:
        """Compact JSON string (``""`` for none) and, when asked, the dict."""
        try:
            return self._metadata_claim_of(value, what, want_dict=want_dict)
        except MetadataError as exc:
            if what != "metadata":  # say which metadata was rejected
                _prefix(exc, what)
            raise

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
        name: str | None,
        metadata: MetadataInput | None,
        attributes: Mapping[str, str] | None,
        dispatch: DispatchSpec | Iterable[DispatchSpec] | None,
        job_metadata: MetadataInput | None,
        can_update_own_metadata: bool,
        ttl: timedelta | float | None,
        grants: api.VideoGrants | None,
        kind: str | None,
        room_config: api.RoomConfiguration | None,
        session_id: str | None,
    ) -> tuple[str, dict[str, Any] | None]:
        _check_name(identity, "identity", required=True)
        _check_name(room, "room", required=True)
        reference = session_id is not None
        router = self._router if dispatch is None else None
        want_dict = reference or router is not None

        claims: dict[str, Any] = {}
        if name is not None and _check_name(name, "name", required=False):
            claims["name"] = name
        if kind is not None and kind != "":
            if kind not in PARTICIPANT_KINDS:
                raise ValueError(f"kind must be one of {sorted(PARTICIPANT_KINDS)}")
            claims["kind"] = kind

        md_text = ""
        md_dict: dict[str, Any] | None = None
        if metadata is not None:
            md_text, md_dict = self._metadata_claim(metadata, "metadata", want_dict=want_dict)
        if md_text and not reference:
            claims["metadata"] = md_text

        if grants is None:
            video: dict[str, Any] = {
                "roomJoin": True,
                "room": room,
                "canPublish": True,
                "canSubscribe": True,
                "canPublishData": True,
            }
            if can_update_own_metadata:
                video["canUpdateOwnMetadata"] = True
        else:
            if not isinstance(grants, api.VideoGrants):
                raise TypeError(
                    f"grants must be livekit.api.VideoGrants, not {type(grants).__name__}"
                )
            if grants.room and grants.room != room:
                raise ValueError("grants.room must be empty or equal to room")
            video = _video_claim(grants)
            video["room"] = room
            if can_update_own_metadata:
                video["canUpdateOwnMetadata"] = True
        claims["video"] = video

        if attributes is not None:
            claims["attributes"] = validate_attributes(
                attributes, max_bytes=self._max_attributes_bytes
            )

        room_claim: dict[str, Any] | None = None
        if room_config is not None:
            if not isinstance(room_config, api.RoomConfiguration):
                raise TypeError(
                    "room_config must be livekit.api.RoomConfiguration, "
                    f"not {type(room_config).__name__}"
                )
            if len(room_config.agents):
                raise ValueError("room_config.agents must be empty: pass agents as dispatch=")
            room_claim = MessageToDict(room_config)

        specs = self._resolve_dispatch(dispatch, router, md_dict, job_metadata is not None)
        if specs:
            agents, job_dicts = self._agents_claim(
                specs, job_metadata, metadata, md_text, md_dict, want_dict=reference
            )
            room_claim = room_claim or {}
            room_claim["agents"] = agents
        elif job_metadata is not None:
            raise ValueError("job_metadata needs a dispatch (pass dispatch= or configure a router)")
        else:
            job_dicts = []
        if room_claim is not None:
            claims["roomConfig"] = room_claim

        stored: dict[str, Any] | None = None
        if reference:
            assert session_id is not None
            stored = dict(md_dict or {})
            for job in job_dicts:
                stored.update(job)
            ref_text = orjson.dumps({SESSION_KEY: session_id}).decode()
            for agent in claims.get("roomConfig", {}).get("agents", ()):
                agent["metadata"] = ref_text

        now = int(self._clock())
        lifetime = self._ttl if ttl is None else _ttl_seconds(ttl)
        claims["sub"] = identity
        claims["iss"] = self._api_key
        claims["nbf"] = now
        claims["exp"] = now + lifetime
        try:
            payload = orjson.dumps(claims)
        except orjson.JSONEncodeError as exc:  # only reachable through odd grant values
            raise TokenError(f"token claims are not JSON-serializable: {exc}") from None
        return self._jws.encode(payload, self._key, algorithm="HS256"), stored

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
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The ``roomConfig.agents`` list and (reference mode) the job-metadata dicts."""
        job_text = ""
        job_dict: dict[str, Any] | None = None
        if job_metadata is not None:
            if job_metadata is metadata:
                job_text, job_dict = md_text, md_dict
                if want_dict and job_dict is None:
                    job_dict = orjson.loads(job_text) if job_text else {}
            else:
                job_text, job_dict = self._metadata_claim(
                    job_metadata, "job_metadata", want_dict=want_dict
                )
        agents: list[dict[str, Any]] = []
        job_dicts: list[dict[str, Any]] = []
        attr_limit = self._max_attributes_bytes
        for spec in specs:
            if isinstance(spec, str):
                spec = Dispatch(spec)
            if isinstance(spec, Dispatch):
                agent_name = spec.agent_name
                own: object = spec.metadata
                deployment = spec.deployment
                attrs = spec.attributes
                extra: dict[str, Any] = {}
            elif isinstance(spec, api.RoomAgentDispatch):
                extra = MessageToDict(spec)
                agent_name = spec.agent_name
                own = spec.metadata or None
                deployment = spec.deployment
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
            entry: dict[str, Any] = extra
            entry["agentName"] = agent_name
            if own is not None:
                if job_metadata is not None:
                    raise ValueError(
                        f"dispatch {agent_name!r} has its own metadata; do not also pass job_metadata"
                    )
                if own is metadata:  # the same object as the participant metadata
                    text, parsed = md_text, md_dict
                    if want_dict and parsed is None:
                        parsed = orjson.loads(text) if text else {}
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
            if want_dict and parsed:
                job_dicts.append(parsed)
            if deployment is not None:
                if not isinstance(deployment, str):
                    raise TypeError(f"deployment must be a str, not {type(deployment).__name__}")
                if deployment:
                    entry["deployment"] = deployment
            if attrs is not None:
                try:
                    checked = validate_attributes(attrs, max_bytes=attr_limit)
                except MetadataError as exc:
                    raise _prefix(exc, f"dispatch {agent_name!r}") from None
                if checked:
                    entry["attributes"] = checked
            agents.append(entry)
        return agents, job_dicts

    # ------------------------------------------------------------ verification

    def verify(self, token: str) -> VerifiedToken:
        """Verify a token with ``livekit.api.TokenVerifier`` and parse its metadata.

        Checks: HS256 signature with this issuer's secret, ``iss`` equal to the
        API key, ``exp`` present and not past, ``nbf`` not in the future (both
        with the issuer's leeway), and a participant metadata claim that is a
        JSON object within ``max_metadata_bytes``.

        Raises:
            TokenVerificationError: Which check failed (never the token itself).
            TypeError: ``token`` is not a str.
        """
        if not isinstance(token, str):
            raise TypeError(f"token must be a str, not {type(token).__name__}")
        try:
            claims = self._verifier.verify(token)
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
        except jwt.DecodeError:
            raise TokenVerificationError("token is malformed: not a signed JWT") from None
        except jwt.InvalidTokenError as exc:
            raise TokenVerificationError(
                f"token verification failed ({type(exc).__name__})"
            ) from None
        except (TypeError, ValueError, AttributeError) as exc:
            # TokenVerifier rebuilding grants/roomConfig from unexpected claim shapes.
            raise TokenVerificationError(
                f"token claims have an unexpected shape ({type(exc).__name__})"
            ) from None
        try:
            metadata = parse_metadata(claims.metadata or None, max_bytes=self._max_metadata_bytes)
        except ValueError as exc:  # MetadataError is a ValueError
            raise TokenVerificationError(f"metadata claim: {exc}") from None
        # The signature is verified; read nbf/exp, which Claims does not keep.
        segment = token.split(".", 2)[1]
        times = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        expires_at = _utc(times.get("exp"))
        if expires_at is None:
            raise TokenVerificationError("token has no numeric 'exp' claim")
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
            name=claims.name or "",
            room=grants.room or "",
            kind=claims.kind or "",
            metadata=metadata,
            attributes=dict(claims.attributes or {}),
            dispatches=dispatches,
            grants=grants,
            issuer=str(times.get("iss", "")),
            not_before=_utc(times.get("nbf")),
            expires_at=expires_at,
            claims=claims,
        )
