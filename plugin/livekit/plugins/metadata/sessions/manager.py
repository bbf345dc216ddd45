"""SessionManager: SignalWire's session API, async, over a pluggable store; its named,
token and call sessions (:class:`SessionSpace`) never meet (a fixed key tag per space)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict, overload

from .._util import positive_int, positive_number
from ..log import logger
from .encoding import check_keys, check_session_id, encode
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
    """``update_session_metadata``'s keywords: ``remove`` (keys to drop in the same
    write; a key also in ``updates`` is set) and ``ttl`` (seconds, instead of ``session_ttl``)."""

    remove: Iterable[str]
    ttl: float | None


_UPDATE_KEYWORDS = UpdateOptions.__optional_keys__


class SessionSpace:
    """The sessions of one key space of a :class:`SessionManager` (same store, limits, TTL)."""

    __slots__ = ("_manager", "_tag", "name")

    def __init__(self, manager: SessionManager, name: str, tag: str) -> None:
        self._manager = manager
        self._tag = tag
        self.name = name
        """``"named"``, ``"token"`` or ``"call"``."""

    def __repr__(self) -> str:
        return f"SessionSpace({self.name!r})"

    def key(self, session_id: str) -> str:
        """The store key of ``session_id``; TypeError/ValueError if it is no session id."""
        return self._tag + check_session_id(session_id)

    async def get(self, session_id: str) -> dict[str, Any]:
        """A copy of the session's metadata; ``{}`` if unknown or expired."""
        return await self._manager.store.get(self.key(session_id))

    async def update(
        self, session_id: str, updates: Mapping[str, Any], **options: Unpack[UpdateOptions]
    ) -> None:
        """As :meth:`SessionManager.update_session_metadata`, in this space."""
        await self._manager._write(self.key(session_id), updates, options)

    def prepare(
        self, session_id: str, updates: Mapping[str, Any], *, ttl: float | None = None
    ) -> SessionWrite:
        """What :meth:`update` hands the store, for a caller writing it in a larger atomic step."""
        manager = self._manager
        fields, lifetime = manager._encoded(updates, ttl)
        return SessionWrite(self.key(session_id), fields, lifetime, manager.max_session_bytes)

    async def delete(self, session_id: str) -> bool:
        """Delete the session; True if it existed."""
        return await self._manager.store.delete(self.key(session_id))

    async def touch(self, session_id: str) -> bool:
        """Restart the session's TTL without changing it; True if it exists."""
        return await self._manager.store.touch(self.key(session_id), ttl=self._manager.session_ttl)


class SessionManager(ToolTokens):
    """Session metadata and tool tokens over any ``SessionStore``, with SignalWire's API.

    The SignalWire-parity methods (``create_session``, ``get/set/delete_session_metadata``,
    ``cleanup``; ``generate_token``, ``validate_tool_token``... from :class:`ToolTokens`)
    are the seed's API: SignalWire's names and argument orders, its flaws fixed (README,
    "Sessions (SignalWire parity)"). ``store=None``: a :class:`MemoryStore` on ``clock``
    (Unix seconds, also for tokens). ``cleanup_threshold`` triggers a cleanup when a write
    leaves more sessions stored (no cap). Raises ConfigError, TypeError or ValueError.
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
        self.cleanup_threshold: Final = positive_int(cleanup_threshold, "cleanup_threshold", low=0)
        self.max_session_bytes: Final = positive_int(max_session_bytes, "max_session_bytes", low=2)
        super().__init__(secret_key=secret_key, token_expiry_secs=token_expiry_secs, clock=clock)
        self.tokens: Final[ToolTokens] = self
        """This manager's tool-token half (itself)."""
        self.store: Final[SessionStore] = store if store is not None else MemoryStore(clock=clock)
        self._sized = hasattr(self.store, "__len__")
        shared = not isinstance(self.store, MemoryStore)  # several workers: tokens must match
        if shared and self.secret_source == "random per process":  # noqa: S105
            logger.warning(
                "SessionManager uses a shared store (%s) but no tool-token secret is configured: "
                "tool tokens minted by this process will NOT validate on other workers or after "
                "a restart. Set secret_key=, LIVEKIT_METADATA_SECRET or LIVEKIT_API_SECRET.",
                type(self.store).__name__,
            )
        self._writes_since_cleanup = 0
        self.named_sessions: Final = SessionSpace(self, "named", "u:")
        """Sessions named by the caller (``create_session("call-1")``): SignalWire's methods'."""
        self.token_sessions: Final = SessionSpace(self, "token", "t:")
        """One session per minted token (``TokenIssuer.amint``, the token endpoint)."""
        self.call_sessions: Final = SessionSpace(self, "call", "c:")
        """One session per call, keyed by the LiveKit room sid (``MetadataAdapter``)."""

    def __repr__(self) -> str:
        return (
            f"SessionManager(store={self.store!r}, session_ttl={self.session_ttl}, "
            f"max_session_bytes={self.max_session_bytes}, tokens={ToolTokens.__repr__(self)})"
        )

    async def __aenter__(self) -> SessionManager:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the store (a ``RedisStore`` releases its pool; a ``MemoryStore`` empties)."""
        await self.store.aclose()

    def create_session(self, call_id: str | None = None) -> str:
        """``call_id``, or for ``None``/``""`` a new id of 128 random bits; nothing is stored."""
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
        """Merge top-level keys into the session: ``(sid, mapping) -> None`` or ``(sid, key,
        value) -> True``. Raises TypeError (a non-JSON value: the message names the key,
        never the value), ValueError or ``MetadataTooLarge`` (changing nothing)."""
        key = self.named_sessions.key(session_id)
        if value is _MISSING:
            if isinstance(metadata, str):
                raise TypeError("set_session_metadata(session_id, key, value) needs a value")
            await self._write(key, metadata, {}, "metadata must be a mapping (or pass key, value)")
            return None
        if not isinstance(metadata, str):
            raise TypeError(f"key must be a str, not {type(metadata).__name__}")
        await self._write(key, {str(metadata): value}, {})
        return True

    async def update_session_metadata(
        self, session_id: str, updates: Mapping[str, Any], **options: Unpack[UpdateOptions]
    ) -> None:
        """Merge ``updates`` and drop ``remove`` keys (:class:`UpdateOptions`) in one write."""
        await self._write(self.named_sessions.key(session_id), updates, options)

    async def _write(
        self,
        key: str,
        updates: Mapping[str, Any],
        options: UpdateOptions,
        what: str = "updates must be a mapping",
        *,
        read_back: bool = False,
    ) -> Any:
        """Every space's one merge path; with ``read_back`` the session from a store's fused
        ``merge_and_get``, else None."""
        if options and not _UPDATE_KEYWORDS.issuperset(options):
            unknown = sorted(set(options) - _UPDATE_KEYWORDS)[0]
            raise TypeError(f"got an unexpected keyword argument {unknown!r}")
        fields, ttl = self._encoded(updates, options.get("ttl"), what)
        remove = check_keys(options.get("remove", ()), "remove")
        merge = getattr(self.store, "merge_and_get", None) if read_back else None
        result = await (merge or self.store.merge)(
            key, fields, remove=remove, ttl=ttl, max_bytes=self.max_session_bytes
        )
        if self._cleanup_due():
            await self.store.cleanup()
        return result

    def _encoded(
        self, updates: Mapping[str, Any], ttl: float | None, what: str = "updates must be a mapping"
    ) -> tuple[dict[str, bytes], float]:
        if type(updates) is not dict and not isinstance(updates, Mapping):
            raise TypeError(f"{what}, not {type(updates).__name__}")
        lifetime = self.session_ttl if ttl is None else positive_number(ttl, "ttl")
        return encode(updates), lifetime

    def _cleanup_due(self) -> bool:
        if self._sized:
            return len(self.store) > self.cleanup_threshold  # type: ignore[arg-type]
        # A store that cannot count its sessions (Redis) cleans up every `threshold` writes.
        self._writes_since_cleanup += 1
        if self._writes_since_cleanup > self.cleanup_threshold:
            self._writes_since_cleanup = 0
            return True
        return False

    async def merge_session_metadata(
        self, session_id: str, metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        """:meth:`set_session_metadata` and a copy of the session it left (one round trip
        on a store offering ``merge_and_get``)."""
        key = self.named_sessions.key(session_id)
        merged = await self._write(key, metadata, {}, "metadata must be a mapping", read_back=True)
        return merged if merged is not None else await self.store.get(key)

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
        """Remove expired sessions, or those written over ``max_age`` seconds ago (0: all);
        how many. Redis expires natively and returns 0."""
        return await self.store.cleanup(max_age=max_age)  # the store checks max_age

    def activate_session(self, call_id: str) -> bool:
        """SignalWire's legacy no-op (a session exists from its first write); returns ``True``."""
        del call_id
        return True

    def end_session(self, call_id: str) -> bool:
        """SignalWire's legacy no-op (:meth:`delete_session_metadata` deletes); ``True``."""
        del call_id
        return True
