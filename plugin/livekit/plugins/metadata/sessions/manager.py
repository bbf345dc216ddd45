"""SessionManager: SignalWire's session API, async, over a pluggable store.

Three key spaces (:class:`SessionSpace`) share one store and never meet: named
sessions (the SignalWire API), token sessions (one per minted token) and call
sessions (keyed by what LiveKit assigns to the call). Each store key is a fixed tag
per space followed by the id, so no id can address a session of another space.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict, overload

from .._util import positive_int, positive_number
from ..log import logger
from .encoding import MAX_SESSION_ID_LENGTH, check_keys, check_session_id, encode
from .memory import MemoryStore
from .store import SessionStore, SessionWrite
from .tool_tokens import DEFAULT_TOKEN_EXPIRY_SECS, SecretInput, ToolTokens

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "DEFAULT_CLEANUP_THRESHOLD",
    "DEFAULT_MAX_SESSION_BYTES",
    "DEFAULT_SESSION_TTL",
    "SessionManager",
    "SessionSpace",
    "UpdateOptions",
]

DEFAULT_SESSION_TTL: Final = 3600
"""Seconds a session lives after its last write."""

DEFAULT_CLEANUP_THRESHOLD: Final = 1000
"""Expired sessions are cleaned automatically while more than this many are stored."""

DEFAULT_MAX_SESSION_BYTES: Final = 64_000
"""Largest compact JSON size of one session (the strictest LiveKit metadata limit)."""

_MISSING: Any = object()


class UpdateOptions(TypedDict, total=False):
    """The keywords of :meth:`SessionManager.update_session_metadata` and
    :meth:`SessionSpace.update`: ``(session_id, updates, *, remove=(), ttl=None)``.

    Attributes:
        remove: Top-level keys to drop in the same atomic write (a key also in
            ``updates`` is set).
        ttl: Seconds the session lives after this write, instead of ``session_ttl``.
    """

    remove: Iterable[str]
    ttl: float | None


_UPDATE_KEYWORDS = UpdateOptions.__optional_keys__


class SessionSpace:
    """The sessions of one key space of a :class:`SessionManager`.

    Reached as ``manager.named_sessions`` (the ids the SignalWire API takes),
    ``manager.token_sessions`` (one per minted token, ids from
    :meth:`SessionManager.create_session`) and ``manager.call_sessions`` (one per
    call, keyed by the LiveKit room sid). Same store, same limits and TTL rules
    as the manager; the store key is this space's tag followed by the id.
    """

    __slots__ = ("_manager", "_tag", "name")

    def __init__(self, manager: SessionManager, name: str, tag: str) -> None:
        self._manager = manager
        self._tag = tag
        self.name = name
        """``"named"``, ``"token"`` or ``"call"``."""

    def __repr__(self) -> str:
        return f"SessionSpace({self.name!r})"

    def key(self, session_id: str) -> str:
        """The store key of ``session_id`` in this space.

        Raises:
            TypeError, ValueError: Not a session id (empty, too long, not a str).
        """
        if type(session_id) is not str or not 0 < len(session_id) <= MAX_SESSION_ID_LENGTH:
            session_id = check_session_id(session_id)
        return self._tag + session_id

    async def get(self, session_id: str) -> dict[str, Any]:
        """A copy of the session's metadata; ``{}`` if unknown or expired."""
        return await self._manager.store.get(self.key(session_id))

    async def update(
        self, session_id: str, updates: Mapping[str, Any], **options: Unpack[UpdateOptions]
    ) -> None:
        """Merge ``updates`` and remove ``remove`` in one atomic write (see
        :meth:`SessionManager.update_session_metadata`)."""
        await self._manager._write(self.key(session_id), updates, options)

    def prepare(
        self, session_id: str, updates: Mapping[str, Any], *, ttl: float | None = None
    ) -> SessionWrite:
        """What :meth:`update` (without ``remove``) hands the store: for a caller that
        writes it itself in a larger atomic step (the endpoint's admission on Redis)."""
        manager = self._manager
        fields, lifetime = manager._encoded(updates, ttl)
        return SessionWrite(self.key(session_id), fields, lifetime, manager.max_session_bytes)

    async def delete(self, session_id: str) -> bool:
        """Delete the session; True if it existed."""
        return await self._manager.store.delete(self.key(session_id))

    async def touch(self, session_id: str) -> bool:
        """Restart the session's TTL without changing it; True if it exists."""
        manager = self._manager
        return await manager.store.touch(self.key(session_id), ttl=manager.session_ttl)


class SessionManager:
    """Session metadata and tool tokens, SignalWire-style, over any ``SessionStore``.

    The SignalWire-parity methods keep SignalWire's names and argument orders, with
    its flaws fixed (README, "Sessions"): writes merge top-level keys (shallow),
    reads return a copy (``{}`` when unknown), sessions expire ``session_ttl``
    seconds after their last write, values must be JSON (errors name the key, never
    the value) and a write over ``max_session_bytes`` raises ``MetadataTooLarge``
    and changes nothing. Tool-token methods (:class:`~.tool_tokens.ToolTokens`) are
    synchronous; every method touching the store is ``async``.

    Args:
        store: Where sessions live; ``None`` creates a new :class:`MemoryStore`
            (using ``clock``). Pass a ``RedisStore`` to share sessions between workers.
        secret_key: Tool-token secret(s); see :class:`~.tool_tokens.ToolTokens`.
        token_expiry_secs: Tool-token lifetime in seconds (an int; 0 or less mints
            tokens that are already expired, as SignalWire's SDKs do).
        session_ttl: Seconds a session lives after its last write.
        cleanup_threshold: Expired sessions are removed automatically when a write
            leaves more than this many sessions stored (a trigger, not a cap; use
            ``MemoryStore(max_sessions=...)`` for a cap).
        max_session_bytes: Largest compact JSON size of one session.
        clock: Returns the current Unix time in seconds, for tokens and for the
            default store; defaults to ``time.time`` (store: ``time.monotonic``).

    Raises:
        ConfigError: A tool-token secret is empty.
        TypeError: ``store`` does not implement ``SessionStore``, or a secret or
            the clock has the wrong type.
        ValueError: A numeric option is out of range.

    Warns:
        InsecureSecretWarning: A configured secret is shorter than 32 bytes.
    """

    def __init__(
        self,
        store: SessionStore | None = None,
        *,
        secret_key: SecretInput | None = None,
        token_expiry_secs: int = DEFAULT_TOKEN_EXPIRY_SECS,
        session_ttl: float = DEFAULT_SESSION_TTL,
        cleanup_threshold: int = DEFAULT_CLEANUP_THRESHOLD,
        max_session_bytes: int = DEFAULT_MAX_SESSION_BYTES,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if store is not None and not isinstance(store, SessionStore):
            raise TypeError(f"store must implement SessionStore, not {type(store).__name__}")
        self.session_ttl: Final = positive_number(session_ttl, "session_ttl")
        """Seconds a session lives after its last write."""
        self.cleanup_threshold: Final = positive_int(cleanup_threshold, "cleanup_threshold", low=0)
        """Automatic cleanup runs when a write leaves more sessions than this."""
        self.max_session_bytes: Final = positive_int(max_session_bytes, "max_session_bytes", low=2)
        """Largest compact JSON size of one session, in bytes."""
        self.tokens: Final = ToolTokens(
            secret_key=secret_key, token_expiry_secs=token_expiry_secs, clock=clock
        )
        """The tool-token signer/validator the token methods delegate to."""
        self.store: Final[SessionStore] = store if store is not None else MemoryStore(clock=clock)
        """The session store."""
        self._sized = hasattr(self.store, "__len__")
        shared = not isinstance(self.store, MemoryStore)
        if shared and self.tokens.secret_source == "random per process":  # noqa: S105
            # A shared store means several workers: tokens signed here must validate there.
            logger.warning(
                "SessionManager uses a shared store (%s) but no tool-token secret is configured: "
                "tool tokens minted by this process will NOT validate on other workers or after "
                "a restart. Set secret_key=, LIVEKIT_METADATA_SECRET or LIVEKIT_API_SECRET.",
                type(self.store).__name__,
            )
        self._writes_since_cleanup = 0
        self.named_sessions: Final = SessionSpace(self, "named", "u:")
        """Sessions named by the caller of this API (``create_session("call-1")``); the
        SignalWire methods (``get_session_metadata``...) work on this space."""
        self.token_sessions: Final = SessionSpace(self, "token", "t:")
        """One session per minted token (``TokenIssuer.amint``, the token endpoint)."""
        self.call_sessions: Final = SessionSpace(self, "call", "c:")
        """One session per call, keyed by the LiveKit room sid (``MetadataAdapter``)."""

    def __repr__(self) -> str:
        return (
            f"SessionManager(store={self.store!r}, session_ttl={self.session_ttl}, "
            f"max_session_bytes={self.max_session_bytes}, tokens={self.tokens!r})"
        )

    async def __aenter__(self) -> SessionManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the store (a ``RedisStore`` releases its pool; a ``MemoryStore`` empties)."""
        await self.store.aclose()

    # -- configuration -------------------------------------------------------------

    @property
    def secret_key(self) -> str | bytes:
        """The tool-token signing secret. **Sensitive**: never log or display it."""
        return self.tokens.secret_key

    @property
    def token_expiry_secs(self) -> int:
        """Lifetime of newly minted tool tokens, in seconds."""
        return self.tokens.token_expiry_secs

    @token_expiry_secs.setter
    def token_expiry_secs(self, value: int) -> None:
        self.tokens.token_expiry_secs = value

    @property
    def debug_mode(self) -> bool:
        """Whether :meth:`debug_token` is enabled."""
        return self.tokens.debug_mode

    @debug_mode.setter
    def debug_mode(self, value: bool) -> None:
        self.tokens.debug_mode = value

    _debug_mode = debug_mode
    """SignalWire's private flag name for :attr:`debug_mode` (same flag)."""

    # -- sessions --------------------------------------------------------------------

    def create_session(self, call_id: str | None = None) -> str:
        """The given id, or (for ``None`` or ``""``) a new random one.

        New ids are 22 base64url characters (128 random bits). Nothing is stored.

        Raises:
            TypeError: ``call_id`` is not a str.
            ValueError: ``call_id`` is longer than 256 characters.
        """
        if call_id is None or call_id == "":
            return secrets.token_urlsafe(16)
        return check_session_id(call_id)

    @overload
    async def set_session_metadata(
        self, session_id: str, metadata: Mapping[str, Any], /
    ) -> None: ...

    @overload
    async def set_session_metadata(
        self, session_id: str, key: str, value: Any, /
    ) -> Literal[True]: ...

    async def set_session_metadata(
        self, session_id: str, metadata: Mapping[str, Any] | str, value: Any = _MISSING, /
    ) -> Literal[True] | None:
        """Merge top-level keys into the session, creating it; never replaces it.

        Two forms: ``set_session_metadata(sid, {"k": v, ...})`` returns ``None``;
        ``set_session_metadata(sid, "k", v)`` returns ``True``.

        Raises:
            TypeError: Bad argument types, a non-str key or a non-JSON value (the
                message names the key, never the value).
            ValueError: An empty or too long session id, or a NaN/infinite number.
            MetadataTooLarge: The session would exceed ``max_session_bytes``; it
                is left exactly as it was.
        """
        key = self.named_sessions.key(session_id)
        result: Literal[True] | None
        if value is _MISSING:
            if type(metadata) is not dict:
                if isinstance(metadata, str):
                    raise TypeError("set_session_metadata(session_id, key, value) needs a value")
                if not isinstance(metadata, Mapping):
                    raise TypeError(
                        f"metadata must be a mapping (or pass key, value), "
                        f"not {type(metadata).__name__}"
                    )
            fields = encode(metadata)
            result = None
        else:
            if type(metadata) is not str:
                if not isinstance(metadata, str):
                    raise TypeError(f"key must be a str, not {type(metadata).__name__}")
                metadata = str(metadata)
            fields = encode({metadata: value})
            result = True
        await self._merge(key, fields, [], self.session_ttl)
        return result

    async def update_session_metadata(
        self, session_id: str, updates: Mapping[str, Any], **options: Unpack[UpdateOptions]
    ) -> None:
        """Merge ``updates`` and remove the ``remove`` keys in one atomic store write.

        ``update_session_metadata(session_id, updates, *, remove=(), ttl=None)``
        (:class:`UpdateOptions`).

        Same validation and size rules as :meth:`set_session_metadata`. A key in
        both is set. Used e.g. for LiveKit attributes, where an empty value
        deletes the key. ``ttl`` (seconds) replaces :attr:`session_ttl` for this
        write, e.g. for a token's session that lives as long as its token.

        Raises:
            TypeError: Bad argument types, a non-str key or a non-JSON value.
            ValueError: An invalid session id or a NaN/infinite number.
            MetadataTooLarge: The session would exceed ``max_session_bytes``.
        """
        await self._write(self.named_sessions.key(session_id), updates, options)

    async def _write(self, key: str, updates: Mapping[str, Any], options: UpdateOptions) -> None:
        """The one merge path of every space: validate, encode, merge, maybe clean up."""
        if options and not _UPDATE_KEYWORDS.issuperset(options):
            unknown = sorted(set(options) - _UPDATE_KEYWORDS)[0]
            raise TypeError(f"got an unexpected keyword argument {unknown!r}")
        fields, lifetime = self._encoded(updates, options.get("ttl"))
        await self._merge(key, fields, check_keys(options.get("remove", ()), "remove"), lifetime)

    async def _merge(
        self, key: str, fields: dict[str, bytes], remove: list[str], ttl: float
    ) -> None:
        await self.store.merge(
            key, fields, remove=remove, ttl=ttl, max_bytes=self.max_session_bytes
        )
        if self._cleanup_due():
            await self.store.cleanup()

    def _encoded(
        self, updates: Mapping[str, Any], ttl: float | None
    ) -> tuple[dict[str, bytes], float]:
        """``updates`` checked and encoded, and the TTL they are written with."""
        if type(updates) is not dict:
            if not isinstance(updates, Mapping):
                raise TypeError(f"updates must be a mapping, not {type(updates).__name__}")
            updates = dict(updates)
        lifetime = self.session_ttl if ttl is None else positive_number(ttl, "ttl")
        return encode(updates), lifetime

    def _cleanup_due(self) -> bool:
        """Whether this write should be followed by a store cleanup."""
        if self._sized:
            return len(self.store) > self.cleanup_threshold  # type: ignore[arg-type]
        # A store that cannot say how many sessions it holds (e.g. Redis, which
        # expires natively) is asked to clean up once every `threshold` writes.
        self._writes_since_cleanup += 1
        if self._writes_since_cleanup > self.cleanup_threshold:
            self._writes_since_cleanup = 0
            return True
        return False

    async def merge_session_metadata(
        self, session_id: str, metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge top-level keys like :meth:`set_session_metadata`, then return the session.

        The result is a copy of the session as this write left it (what
        :meth:`get_session_metadata` would return with no other writer in
        between). A store offering the optional ``merge_and_get`` (``RedisStore``)
        does both in one round trip; otherwise this is a merge, then a get.

        Raises:
            TypeError: Bad argument types, a non-str key or a non-JSON value (the
                message names the key, never the value).
            ValueError: An invalid session id or a NaN/infinite number.
            MetadataTooLarge: The session would exceed ``max_session_bytes``; it
                is left exactly as it was.
        """
        key = self.named_sessions.key(session_id)
        if type(metadata) is not dict:
            if not isinstance(metadata, Mapping) or isinstance(metadata, str):
                raise TypeError(f"metadata must be a mapping, not {type(metadata).__name__}")
            metadata = dict(metadata)
        store = self.store
        merge_and_get = getattr(store, "merge_and_get", None)
        if merge_and_get is None:  # MemoryStore (no round trip to save) and plain stores
            await self.set_session_metadata(session_id, metadata)
            return await self.get_session_metadata(session_id)
        merged: dict[str, Any] = await merge_and_get(
            key, encode(metadata), ttl=self.session_ttl, max_bytes=self.max_session_bytes
        )
        if self._cleanup_due():
            await store.cleanup()
        return merged

    async def get_session_metadata(self, session_id: str) -> dict[str, Any]:
        """A copy of the session's metadata; ``{}`` if unknown or expired (never ``None``)."""
        return await self.store.get(self.named_sessions.key(session_id))

    async def delete_session_metadata(self, session_id: str) -> bool:
        """Delete the session and everything kept for it; True if it existed."""
        return await self.named_sessions.delete(session_id)

    async def remove_session_keys(self, session_id: str, keys: Iterable[str]) -> int:
        """Remove top-level keys; returns how many existed. A session left empty is deleted."""
        key = self.named_sessions.key(session_id)
        return await self.store.remove_keys(key, check_keys(keys, "keys"), ttl=self.session_ttl)

    async def touch_session(self, session_id: str) -> bool:
        """Restart the session's TTL without changing it; True if it exists."""
        return await self.named_sessions.touch(session_id)

    async def cleanup(self, max_age: float | None = None) -> int:
        """Remove sessions last written more than ``max_age`` (default ``session_ttl``) ago.

        Returns how many were removed. ``cleanup(0)`` removes every session.
        Stores with native expiry (Redis) remove nothing here and return 0.

        Raises:
            ValueError: ``max_age`` is not a number.
        """
        return await self.store.cleanup(max_age=max_age)  # the store checks max_age

    # -- tool tokens (delegated to ToolTokens) -----------------------------------------

    def generate_token(self, function_name: str, call_id: str) -> str:
        """Mint a tool token; see :meth:`ToolTokens.generate_token`."""
        return self.tokens.generate_token(function_name, call_id)

    def create_tool_token(self, tool_name: str, call_id: str) -> str:
        """Alias of :meth:`generate_token`."""
        return self.tokens.generate_token(tool_name, call_id)

    def validate_token(self, call_id: str, function_name: str, token: str) -> bool:
        """Check a tool token; never raises. See :meth:`ToolTokens.validate_token`."""
        return self.tokens.validate_token(call_id, function_name, token)

    def validate_tool_token(self, function_name: str, token: str, call_id: str) -> bool:
        """Alias of :meth:`validate_token`, with SignalWire's argument order for it."""
        return self.tokens.validate_token(call_id, function_name, token)

    def debug_token(self, token: str) -> dict[str, Any]:
        """Describe a token's fields (debug mode only); see :meth:`ToolTokens.debug_token`."""
        return self.tokens.debug_token(token)

    # -- SignalWire's legacy call lifecycle (no-ops) ------------------------------------

    def activate_session(self, call_id: str) -> bool:
        """SignalWire's legacy ``activate_session``: a no-op that returns ``True``.

        Kept so code ported from SignalWire's SDKs runs unchanged; a session exists
        from its first write, and nothing needs activating.
        """
        del call_id
        return True

    def end_session(self, call_id: str) -> bool:
        """SignalWire's legacy ``end_session``: a no-op that returns ``True``.

        As in SignalWire's SDKs it deletes nothing; use :meth:`delete_session_metadata`
        to drop a session's metadata, or let ``session_ttl`` expire it.
        """
        del call_id
        return True
