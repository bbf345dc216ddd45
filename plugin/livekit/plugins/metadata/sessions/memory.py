"""MemoryStore: the embedded, in-process :class:`~.store.SessionStore` (the default).

No method awaits: each call is atomic on one event loop (not thread-safe). Layout and
amortized O(1) expiry: ``docs/sessions.md``."""

from __future__ import annotations

import math
import operator
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import orjson

from .._util import positive_int, positive_number
from ..log import logger
from .store import check_max_age, merge_options, too_large

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .store import MergeOptions

__all__ = ["MemoryStore"]

_NO_VALUES: Mapping[str, bytes] = MappingProxyType({})  # a session not stored yet
_NO_LIMIT = sys.maxsize  # max_bytes of writes that cannot grow a session (remove_keys, touch)
_loads = orjson.loads
_JOIN = b"".join
_dumps = orjson.dumps

_KEY_SIZES: dict[str, int] = {}  # key -> len('"key":'), bounded (keys repeat across sessions)
_KEY_CACHE_MAX = 65_536
_KEY_CACHE_MAX_LEN = 128


def _key_size(key: object) -> int:
    if not isinstance(key, str):
        raise TypeError(f"fields keys must be str, not {type(key).__name__}")
    size = _KEY_SIZES.get(key)
    if size is None:
        try:
            size = len(_dumps(key)) + 1
        except orjson.JSONEncodeError:
            raise TypeError("a fields key is not valid UTF-8 (lone surrogate)") from None
        if len(key) <= _KEY_CACHE_MAX_LEN and len(_KEY_SIZES) < _KEY_CACHE_MAX:
            _KEY_SIZES[key] = size
    return size


def _exact(value: bytes) -> bytes:
    # A fresh object of exact size: orjson's results keep their whole write buffer
    # (about 4 KiB even for 10 bytes). bytes(memoryview) is 3x slower.
    return _JOIN((value, b""))


def _as_bytes(value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)) or not value:
        raise TypeError("fields values must be non-empty compact JSON bytes")
    return bytes(value)


@dataclass(slots=True)
class _Session:
    written: float  # what cleanup(max_age=) goes by
    expires: float
    values: dict[str, bytes] = field(default_factory=dict)  # key -> compact JSON, as written
    total: int = 0  # sum of len('"key":') + len(value)
    decoded: dict[str, Any] | None = None  # kept between writes if all values are scalars


class MemoryStore:
    """In-process session storage; ``clock`` returns seconds (default ``time.monotonic``).

    A write beyond ``max_sessions`` removes expired sessions, then evicts the least
    recently written (counted in :attr:`evictions`, one warning per store).
    """

    def __init__(
        self, *, clock: Callable[[], float] | None = None, max_sessions: int | None = None
    ) -> None:
        if clock is not None and not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        if max_sessions is not None:
            positive_int(max_sessions, "max_sessions")
        self._clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self.max_sessions: Final = max_sessions
        """The hard cap on stored sessions, or ``None``."""
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._evictions = 0
        self._reset_bounds()

    def __repr__(self) -> str:
        return f"MemoryStore(sessions={len(self._sessions)}, max_sessions={self.max_sessions})"

    def __len__(self) -> int:
        """Stored sessions, expired ones included until a cleanup removes them."""
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        """True if a live (unexpired) session with this id is stored."""
        s = self._sessions.get(session_id) if isinstance(session_id, str) else None
        return s is not None and s.expires > self._clock()

    @property
    def evictions(self) -> int:
        """How many live sessions were evicted because of ``max_sessions``."""
        return self._evictions

    def _live(self, session_id: str, now: float) -> _Session | None:
        s = self._sessions.get(session_id)
        if s is not None and s.expires <= now:
            del self._sessions[session_id]
            return None
        return s

    def _insert(self, session_id: str, s: _Session) -> None:
        sessions, cap = self._sessions, self.max_sessions
        if cap is not None and len(sessions) >= cap:
            self._cleanup_sync()
            while sessions and len(sessions) >= cap:
                sessions.popitem(last=False)
                self._evictions += 1
                if self._evictions == 1:
                    logger.warning(
                        "MemoryStore is full (max_sessions=%d): evicting the least recently "
                        "written sessions",
                        cap,
                    )
        sessions[session_id] = s

    def _reset_bounds(self) -> None:
        # A lower bound on every expiry (cleanup is a no-op before it), the youngest
        # session's expiry, and whether expiry still follows write order.
        self._next_expiry = math.inf
        self._last_expiry = -math.inf
        self._ordered = True

    def _cleanup_sync(self, max_age: float | None = None) -> int:
        now = self._clock()
        if max_age is None and now < self._next_expiry:
            return 0
        if max_age is None and not self._ordered:
            return self._scan(now)
        sessions = self._sessions
        removed = 0
        while sessions:  # the oldest write first
            s = next(iter(sessions.values()))
            if max_age is None and s.expires > now:
                self._next_expiry = s.expires
                return removed
            if max_age is not None and s.written > now - max_age:
                return removed
            sessions.popitem(last=False)
            removed += 1
        self._reset_bounds()
        return removed

    def _scan(self, now: float) -> int:
        """Full pass, needed only after mixed TTLs broke the expiry order."""
        sessions = self._sessions
        dead = [sid for sid, s in sessions.items() if s.expires <= now]
        for sid in dead:
            del sessions[sid]
        # Write order is kept (``max_age`` cleanup relies on it); the bounds are
        # recomputed, so the early-stop path returns once expiry follows write order.
        self._reset_bounds()
        expiries = [s.expires for s in sessions.values()]
        if expiries:
            self._next_expiry = min(expiries)
            self._last_expiry = max(expiries)
            self._ordered = all(map(operator.le, expiries, expiries[1:]))
        return len(dead)

    async def merge(
        self, session_id: str, fields: Mapping[str, bytes], **options: Unpack[MergeOptions]
    ) -> None:
        """The one write path: size and bad keys or values are checked before anything
        changes. Values are trusted to be compact JSON (``SessionManager`` encodes them)."""
        remove, ttl, max_bytes = merge_options(options)
        if not ((type(ttl) is float or type(ttl) is int) and 0 < ttl < math.inf):
            positive_number(ttl, "ttl", "number of seconds")
        now = self._clock()
        sessions = self._sessions
        s = self._live(session_id, now)
        values: Mapping[str, bytes] = _NO_VALUES if s is None else s.values
        total = 0 if s is None else s.total
        count = len(values)
        for key, value in fields.items():
            if type(value) is not bytes or not value:  # bytes-like: copy, then measure
                fields = {k: _as_bytes(v) for k, v in fields.items()}
                return await self.merge(session_id, fields, **options)
            old = values.get(key)
            if old is not None:  # a stored key: valid by construction
                total += len(value) - len(old)
            else:
                ks = _KEY_SIZES.get(key)
                count += 1
                total += (ks if ks is not None else _key_size(key)) + len(value)
        drop = (
            [k for k in dict.fromkeys(remove) if k in values and k not in fields] if remove else ()
        )
        for key in drop:
            total -= _key_size(key) + len(values[key])
            count -= 1
        size = total + count + 1 if count else 2
        if size > max_bytes:
            raise too_large(size, max_bytes)
        # Commit: nothing below can fail.
        expires = now + ttl
        if s is None:
            s = _Session(now, expires)
            self._insert(session_id, s)
        else:
            s.written = now
            s.expires = expires
            sessions.move_to_end(session_id)
        self._next_expiry = min(self._next_expiry, expires)
        if expires >= self._last_expiry:
            self._last_expiry = expires
        else:
            self._ordered = False  # mixed TTLs: expiry no longer follows write order
        stored = s.values
        for key in drop:
            del stored[key]
        for key, value in fields.items():  # exact-size copies (see _exact)
            stored[key] = _exact(value)
        s.total = total
        s.decoded = None

    async def get(self, session_id: str) -> dict[str, Any]:
        s = self._live(session_id, self._clock())
        if s is None:
            return {}
        if s.decoded is not None:
            return dict(s.decoded)
        decoded = {k: _loads(v) for k, v in s.values.items()}
        if not any(type(v) is dict or type(v) is list for v in decoded.values()):
            s.decoded = dict(decoded)  # all scalars: kept until the next write
        return decoded

    async def delete(self, session_id: str) -> bool:
        s = self._sessions.pop(session_id, None)
        return s is not None and s.expires > self._clock()

    async def remove_keys(self, session_id: str, keys: Collection[str], *, ttl: float) -> int:
        positive_number(ttl, "ttl", "number of seconds")
        s = self._live(session_id, self._clock())
        if s is None:
            return 0
        present = [k for k in dict.fromkeys(keys) if k in s.values]
        if len(present) == len(s.values):
            if present:
                del self._sessions[session_id]
        elif present:
            await self.merge(session_id, {}, remove=present, ttl=ttl, max_bytes=_NO_LIMIT)
        return len(present)

    async def touch(self, session_id: str, *, ttl: float) -> bool:
        positive_number(ttl, "ttl", "number of seconds")
        if self._live(session_id, self._clock()) is None:
            return False
        await self.merge(session_id, {}, ttl=ttl, max_bytes=_NO_LIMIT)
        return True

    async def cleanup(self, *, max_age: float | None = None) -> int:
        check_max_age(max_age)
        return self._cleanup_sync(max_age)

    async def aclose(self) -> None:
        self._sessions.clear()
        self._reset_bounds()
