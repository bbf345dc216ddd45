"""MemoryStore: the embedded, in-process :class:`~.store.SessionStore` (the default).

Layout: one ``OrderedDict`` from session id to a small record, kept in the order
of the sessions' last writes (a write moves its session to the young end). Each
record holds the session's top-level keys and the running size of the whole
session under the size contract of :mod:`.store`.

Two write paths keep that size exact. A *small*, scalar-only session (entries
totalling at most 2 KiB, at most 64 keys) keeps no per-key lengths: a write
builds the merged session as a copy and encodes it with a single orjson call,
which validates every key and value at C speed and whose length is the new
size (bounded work, since the session is small). A larger session, or one
holding objects/arrays, also keeps the length of every value's compact JSON,
built on first need, so a merge costs O(keys written), never a re-serialization
of the whole session; one that shrinks to half those limits (scalar-only)
drops them again.

Values are kept so that :meth:`MemoryStore.get` returns a *true* copy cheaply:
immutable JSON scalars (exact ``str``, ``int``, ``float``, ``bool``, ``None``)
are kept as themselves, and everything else (objects, arrays, subclasses) as its
compact JSON bytes, decoded afresh on every read. Mutating anything a read
returned never changes the store, and nothing a writer passed in is aliased.

Expiry and cleanup are amortized O(1): the oldest session sits at the old end,
so :meth:`MemoryStore.cleanup` pops expired sessions from there and stops at the
first fresh one, and a lower bound on the next expiry makes the common "nothing
has expired" case a single comparison. Only when different TTLs are mixed, so
that expiry order no longer follows write order, does a cleanup that has
something to remove scan all sessions (until the order holds again). ``delete``
removes a session and its timestamp together: nothing is left behind.

Concurrency: no method awaits anything, so on one event loop every call is
atomic and no lock is needed. The store is not thread-safe; use it from one
event loop.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import orjson

from ..errors import MetadataTooLarge
from ..log import logger

__all__ = ["MemoryStore"]

_loads = orjson.loads
_dumps = orjson.dumps
_JSON_ERROR = orjson.JSONEncodeError

_KEY_SIZES: dict[str, int] = {}
"""Cache: key -> bytes of ``"key":`` in compact JSON (keys repeat across sessions)."""
_KEY_SIZES_GET = _KEY_SIZES.get
_KEY_CACHE_MAX = 65_536
_KEY_CACHE_MAX_LEN = 128

_SCALARS = frozenset({str, int, float, bool, type(None)})
"""Exact types stored as themselves; a float also has to be finite
(``t not in _SCALARS or (t is float and value - value != 0.0)`` rejects the rest)."""

_SMALL_TOTAL = 2048
"""Largest entry-size total of a session the whole-session fast path re-encodes."""
_SMALL_COUNT = 64
"""Most keys of a session the whole-session fast path copies and re-encodes."""


def _key_size(key: str) -> int:
    """Bytes ``"key":`` takes in compact JSON (``entry_size(key, value) - len(value)``)."""
    size = _KEY_SIZES_GET(key)
    if size is None:
        size = len(_dumps(key)) + 1
        if len(key) <= _KEY_CACHE_MAX_LEN and len(_KEY_SIZES) < _KEY_CACHE_MAX:
            _KEY_SIZES[key] = size
    return size


def _stored_form(encoded: bytes, original: Any) -> Any:
    """What to keep for a value: the exact scalar itself, else the compact JSON bytes."""
    t = type(original)
    if t in _SCALARS:
        return original
    decoded = _loads(encoded)
    t = type(decoded)
    if t is dict or t is list:
        # A copy of exactly len(encoded) bytes: orjson's own result keeps its whole
        # write buffer (4 KiB even for a 40-byte object), which a long-lived session
        # would hold on to for every stored object or array.
        return bytes(memoryview(encoded))
    return decoded


class _Session:
    """One stored session."""

    __slots__ = ("containers", "lens", "total", "ttl", "values", "written")

    def __init__(self, written: float, ttl: float) -> None:
        self.values: dict[str, Any] = {}
        """Key -> exact scalar, or compact JSON ``bytes`` for objects/arrays."""
        self.lens: dict[str, int] | None = {}
        """Key -> length of the value's compact JSON; ``None`` while the session is
        small and scalar-only (see :meth:`MemoryStore._set_mapping`), until needed."""
        self.total = 0
        """Sum of ``entry_size(key, value)`` over the entries."""
        self.containers = 0
        """How many values are held as bytes (decoded on read)."""
        self.written = written
        self.ttl = ttl


def _lens_of(values: Mapping[str, Any]) -> dict[str, int]:
    """Per-key compact JSON lengths of stored values (scalars re-encode to the same length)."""
    return {k: len(v) if type(v) is bytes else len(_dumps(v)) for k, v in values.items()}


def _lens(s: _Session) -> dict[str, int]:
    """The session's per-key lengths, built on first need."""
    lens = s.lens
    if lens is None:
        lens = s.lens = _lens_of(s.values)
    return lens


def _maybe_small(s: _Session) -> None:
    """Drop the per-key lengths of a session that became small and scalar-only again.

    The whole-session fast path then takes it back. The hysteresis (half the
    limits) keeps switching rare, and either switch costs O(keys) with keys
    bounded by ``_SMALL_COUNT``.
    """
    if not s.containers and s.total <= _SMALL_TOTAL // 2 and len(s.values) <= _SMALL_COUNT // 2:
        s.lens = None


def _size(total: int, count: int) -> int:
    return 2 + total + (count - 1 if count > 1 else 0)


class MemoryStore:
    """In-process session storage with sliding TTLs and amortized O(1) cleanup.

    The default store of :class:`~livekit.plugins.metadata.session.SessionManager`.
    Sessions live in this process only: use ``RedisStore`` to share them between
    workers.

    Example::

        store = MemoryStore(max_sessions=100_000)
        sessions = SessionManager(store)

    Args:
        clock: Returns the current time in seconds; defaults to ``time.monotonic``.
            Inject a fake clock to test expiry without sleeping.
        max_sessions: A hard cap on stored sessions (``None``: unlimited). When a
            write would create a session beyond the cap, expired sessions are
            removed first and then the least recently written ones are evicted
            (counted in :attr:`evictions`, with one warning logged per store).

    Raises:
        TypeError: ``clock`` is not callable.
        ValueError: ``max_sessions`` is not a positive int.
    """

    def __init__(
        self, *, clock: Callable[[], float] | None = None, max_sessions: int | None = None
    ) -> None:
        if clock is not None and not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        if max_sessions is not None and (
            isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1
        ):
            raise ValueError("max_sessions must be a positive int or None")
        self._clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self._max_sessions = max_sessions
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        # A lower bound on every stored session's expiry: cleanup is a no-op before it.
        self._next_expiry = math.inf
        # The expiry of the youngest session; a write expiring earlier breaks the order.
        self._last_expiry = -math.inf
        self._ordered = True
        self._evictions = 0

    def __repr__(self) -> str:
        return f"MemoryStore(sessions={len(self._sessions)}, max_sessions={self._max_sessions})"

    def __len__(self) -> int:
        """How many sessions are stored (expired ones count until a cleanup removes them)."""
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        """True if a live (unexpired) session with this id is stored."""
        s = self._sessions.get(session_id) if isinstance(session_id, str) else None
        return s is not None and s.written + s.ttl > self._clock()

    @property
    def max_sessions(self) -> int | None:
        """The hard cap on stored sessions, or ``None``."""
        return self._max_sessions

    @property
    def evictions(self) -> int:
        """How many live sessions were evicted because of ``max_sessions``."""
        return self._evictions

    # -- bookkeeping -------------------------------------------------------------------

    def _live(self, session_id: str, now: float) -> _Session | None:
        s = self._sessions.get(session_id)
        if s is not None and s.written + s.ttl <= now:
            del self._sessions[session_id]
            return None
        return s

    def _stamp(self, session_id: str, s: _Session, now: float, ttl: float) -> None:
        """Record a write to an existing session: timestamp, TTL, young end, bounds."""
        s.written = now
        s.ttl = ttl
        self._sessions.move_to_end(session_id)
        self._note_expiry(now + ttl)

    def _note_expiry(self, expiry: float) -> None:
        if expiry < self._next_expiry:
            self._next_expiry = expiry
        if expiry < self._last_expiry:
            self._ordered = False
        else:
            self._last_expiry = expiry

    def _insert(self, session_id: str, s: _Session) -> None:
        if self._max_sessions is not None and len(self._sessions) >= self._max_sessions:
            self._make_room()
        self._sessions[session_id] = s

    def _make_room(self) -> None:
        self._cleanup_sync()
        if self._max_sessions is not None:
            sessions = self._sessions
            while sessions and len(sessions) >= self._max_sessions:
                sessions.popitem(last=False)
                self._evictions += 1
                if self._evictions == 1:
                    logger.warning(
                        "MemoryStore is full (max_sessions=%d): evicting the least recently "
                        "written sessions",
                        self._max_sessions,
                    )

    def _reset_bounds(self) -> None:
        self._next_expiry = math.inf
        self._last_expiry = -math.inf
        self._ordered = True

    # -- the synchronous core (also the SessionManager's fast paths) --------------------

    def _merge_encoded(
        self,
        session_id: str,
        fields: Mapping[str, bytes],
        originals: Mapping[str, Any] | None,
        remove: Iterable[str],
        ttl: float,
        max_bytes: int,
        threshold: int | None = None,
    ) -> None:
        """The general merge of compact JSON ``fields``; ``originals`` may supply scalars.

        All-or-nothing: the resulting size is computed before anything changes.
        With ``threshold``, expired sessions are cleaned up afterwards when more
        than ``threshold`` sessions are stored.
        """
        now = self._clock()
        s = self._live(session_id, now)
        lens = _lens(s) if s is not None else {}
        total = s.total if s is not None else 0
        count = len(lens)
        for key, enc in fields.items():
            old = lens.get(key)
            if old is None:
                count += 1
                total += _key_size(key) + len(enc)
            else:
                total += len(enc) - old
        drop: dict[str, None] = {}
        if s is not None:
            for key in remove:
                if key not in fields and key not in drop:
                    old = lens.get(key)
                    if old is not None:
                        drop[key] = None
                        total -= _key_size(key) + old
                        count -= 1
        size = _size(total, count)
        if size > max_bytes:
            raise _too_large(size, max_bytes)

        if s is None:
            s = _Session(now, ttl)
            self._insert(session_id, s)
            self._note_expiry(now + ttl)
        else:
            self._stamp(session_id, s, now, ttl)
        values = s.values
        lens = _lens(s)
        containers = s.containers
        for key in drop:
            if type(values.pop(key)) is bytes:
                containers -= 1
            del lens[key]
        for key, enc in fields.items():
            stored = _stored_form(enc, originals[key] if originals is not None else enc)
            if type(values.get(key)) is bytes:
                containers -= 1
            if type(stored) is bytes:
                containers += 1
            values[key] = stored
            lens[key] = len(enc)
        s.total = total
        s.containers = containers
        if lens is not None:
            _maybe_small(s)
        if threshold is not None and len(self._sessions) > threshold:
            self._cleanup_sync()

    def _set_mapping(
        self,
        session_id: str,
        metadata: dict[str, Any],
        ttl: float,
        max_bytes: int,
        threshold: int | None,
    ) -> bool:
        """Fast path for small sessions: one C-speed encode of the whole merged session.

        Applies when ``metadata`` holds only exact str/int/float/bool/None values
        and the stored session (if any) is small and scalar-only, with no per-key
        lengths kept (``lens is None``). The merged session is built as a copy and
        encoded once with orjson: that single call validates every key (orjson
        accepts exact ``str`` keys only) and every value, and its length is the
        session's exact size. Nothing changes unless it fits.

        Returns False, having changed nothing, when the fast path does not apply
        (another type, a NaN/infinite float, an int beyond 64 bits, a non-str key,
        a large session): the caller then takes a general path, which also raises
        the precise error.
        """
        now = self._clock()
        sessions = self._sessions
        s = sessions.get(session_id)
        if s is not None:
            if s.written + s.ttl <= now:
                del sessions[session_id]
                s = None
            elif s.lens is not None or s.total > _SMALL_TOTAL or len(s.values) > _SMALL_COUNT:
                return False
        for value in metadata.values():
            t = type(value)
            if t not in _SCALARS or (t is float and value - value != 0.0):
                return False
        merged = {**metadata} if s is None else {**s.values, **metadata}
        try:
            size = len(_dumps(merged))
        except _JSON_ERROR:
            return False
        if size > max_bytes:
            raise _too_large(size, max_bytes)
        count = len(merged)
        total = size - 2 - (count - 1 if count > 1 else 0)
        if s is None:
            s = _Session(now, ttl)
            s.values = merged
            s.lens = None
            s.total = total
            self._insert(session_id, s)
            self._note_expiry(now + ttl)
        else:
            s.values = merged
            s.total = total
            self._stamp(session_id, s, now, ttl)
        if threshold is not None and len(sessions) > threshold and now >= self._next_expiry:
            self._cleanup_sync()
        return True

    def _set_scalars(
        self,
        session_id: str,
        metadata: dict[str, Any],
        ttl: float,
        max_bytes: int,
        threshold: int | None,
    ) -> bool:
        """Fast path: merge a dict of exact str/int/float/bool/None values under str keys.

        Returns False, having changed nothing, when ``metadata`` holds anything
        else (or a NaN/infinite float, or an int beyond 64 bits): the caller then
        takes the general path, which also raises the precise error.
        """
        now = self._clock()
        sessions = self._sessions
        s = sessions.get(session_id)
        if s is not None and s.written + s.ttl <= now:
            del sessions[session_id]
            s = None
        dumps = _dumps
        if s is None:
            lens: dict[str, int] = {}
            total = 0
            for key, value in metadata.items():
                t = type(value)
                if (
                    t not in _SCALARS
                    or (t is float and value - value != 0.0)
                    or type(key) is not str
                ):
                    return False
                try:
                    n = len(dumps(value))
                except _JSON_ERROR:
                    return False
                lens[key] = n
                ks = _KEY_SIZES_GET(key)
                total += (ks if ks is not None else _key_size(key)) + n
            count = len(lens)
            size = 2 + total + (count - 1 if count > 1 else 0)
            if size > max_bytes:
                raise _too_large(size, max_bytes)
            s = _Session(now, ttl)
            s.values = dict(metadata)
            s.lens = lens
            s.total = total
            self._insert(session_id, s)
            self._note_expiry(now + ttl)
        else:
            # Lengths are written in place and restored if the size check fails.
            lens = _lens(s)
            total = s.total
            count = len(lens)
            for key, value in metadata.items():
                t = type(value)
                if t not in _SCALARS or (t is float and value - value != 0.0):
                    self._restore_lens(s, metadata, key)
                    return False
                try:
                    n = len(dumps(value))
                except _JSON_ERROR:
                    self._restore_lens(s, metadata, key)
                    return False
                old = lens.get(key)
                if old is None:
                    # Only a new key needs its type checked: one equal to a stored
                    # (str) key keeps the stored key object in both dicts.
                    if type(key) is not str:
                        self._restore_lens(s, metadata, key)
                        return False
                    count += 1
                    ks = _KEY_SIZES_GET(key)
                    total += (ks if ks is not None else _key_size(key)) + n
                else:
                    total += n - old
                lens[key] = n
            size = 2 + total + (count - 1 if count > 1 else 0)
            if size > max_bytes:
                self._restore_lens(s, metadata, None)
                raise _too_large(size, max_bytes)
            values = s.values
            if s.containers:
                for key in metadata:
                    if type(values.get(key)) is bytes:
                        s.containers -= 1
            values.update(metadata)
            s.total = total
            _maybe_small(s)
            self._stamp(session_id, s, now, ttl)
        if threshold is not None and len(sessions) > threshold and now >= self._next_expiry:
            self._cleanup_sync()
        return True

    @staticmethod
    def _restore_lens(s: _Session, metadata: dict[str, Any], stop: str | None) -> None:
        """Undo in-place length updates of ``_set_scalars`` (keys before ``stop``)."""
        values = s.values
        lens = _lens(s)
        for key in metadata:
            if key == stop:
                return
            if key in values:
                old = values[key]
                lens[key] = len(old) if type(old) is bytes else len(_dumps(old))
            else:
                lens.pop(key, None)

    def _set_one(
        self,
        session_id: str,
        key: str,
        value: Any,
        ttl: float,
        max_bytes: int,
        threshold: int | None,
    ) -> bool:
        """Fast path for one exact scalar under a str key; False: take the general path."""
        t = type(value)
        if t not in _SCALARS or (t is float and value - value != 0.0) or type(key) is not str:
            return False
        try:
            n = len(_dumps(value))
        except _JSON_ERROR:
            return False
        now = self._clock()
        sessions = self._sessions
        s = sessions.get(session_id)
        if s is not None and s.written + s.ttl <= now:
            del sessions[session_id]
            s = None
        if s is None:
            ks = _KEY_SIZES_GET(key)
            total = (ks if ks is not None else _key_size(key)) + n
            if total + 2 > max_bytes:
                raise _too_large(total + 2, max_bytes)
            s = _Session(now, ttl)
            s.values[key] = value
            s.lens = {key: n}
            s.total = total
            self._insert(session_id, s)
            self._note_expiry(now + ttl)
        else:
            lens = s.lens
            values = s.values
            if lens is not None:
                old = lens.get(key)
            elif key in values:
                old = len(_dumps(values[key]))  # small mode: an exact scalar
            else:
                old = None
            count = len(values)
            if old is None:
                ks = _KEY_SIZES_GET(key)
                total = s.total + (ks if ks is not None else _key_size(key)) + n
                count += 1
            else:
                total = s.total + n - old
            size = 2 + total + (count - 1 if count > 1 else 0)
            if size > max_bytes:
                raise _too_large(size, max_bytes)
            if s.containers and type(values.get(key)) is bytes:
                s.containers -= 1
            values[key] = value
            if lens is not None:
                lens[key] = n
            s.total = total
            self._stamp(session_id, s, now, ttl)
        if threshold is not None and len(sessions) > threshold and now >= self._next_expiry:
            self._cleanup_sync()
        return True

    def _get_sync(self, session_id: str) -> dict[str, Any]:
        s = self._sessions.get(session_id)
        if s is None:
            return {}
        if s.written + s.ttl <= self._clock():
            del self._sessions[session_id]
            return {}
        if not s.containers:
            return dict(s.values)
        return {k: _loads(v) if type(v) is bytes else v for k, v in s.values.items()}

    def _cleanup_sync(self, max_age: float | None = None) -> int:
        now = self._clock()
        sessions = self._sessions
        if max_age is None:
            if now < self._next_expiry:
                return 0
            if not self._ordered:
                return self._scan(now)
            removed = 0
            while sessions:
                sid = next(iter(sessions))
                s = sessions[sid]
                if s.written + s.ttl > now:
                    self._next_expiry = s.written + s.ttl
                    return removed
                del sessions[sid]
                removed += 1
            self._reset_bounds()
            return removed
        cutoff = now - max_age
        removed = 0
        while sessions:
            sid = next(iter(sessions))
            if sessions[sid].written > cutoff:
                break
            del sessions[sid]
            removed += 1
        if not sessions:
            self._reset_bounds()
        return removed

    def _scan(self, now: float) -> int:
        """Full pass, needed only after mixed TTLs broke the expiry order."""
        sessions = self._sessions
        dead = [sid for sid, s in sessions.items() if s.written + s.ttl <= now]
        for sid in dead:
            del sessions[sid]
        # Write order is kept (``max_age`` cleanup relies on it); the bounds are
        # recomputed, so the early-stop path returns once expiry follows write order.
        self._reset_bounds()
        for s in sessions.values():
            self._note_expiry(s.written + s.ttl)
        return len(dead)

    def _remove_keys_sync(self, session_id: str, keys: Iterable[str], ttl: float) -> int:
        now = self._clock()
        s = self._live(session_id, now)
        if s is None:
            return 0
        lens = _lens(s)
        values = s.values
        removed = 0
        for key in dict.fromkeys(keys):
            old = lens.pop(key, None)
            if old is not None:
                removed += 1
                s.total -= _key_size(key) + old
                if type(values.pop(key)) is bytes:
                    s.containers -= 1
        if removed:
            if values:
                _maybe_small(s)
                self._stamp(session_id, s, now, ttl)
            else:
                del self._sessions[session_id]
        return removed

    def _touch_sync(self, session_id: str, ttl: float) -> bool:
        now = self._clock()
        s = self._live(session_id, now)
        if s is None:
            return False
        self._stamp(session_id, s, now, ttl)
        return True

    # -- SessionStore ---------------------------------------------------------------

    async def merge(
        self,
        session_id: str,
        fields: Mapping[str, bytes],
        *,
        remove: Collection[str] = (),
        ttl: float,
        max_bytes: int,
    ) -> None:
        """Atomically set ``fields`` (compact JSON bytes per key) and drop ``remove``.

        Creates the session if needed (even when nothing is set) and restarts its
        TTL. A key in both ``fields`` and ``remove`` is set.

        Raises:
            MetadataTooLarge: The result would exceed ``max_bytes``; nothing changed.
            TypeError: A field value is not non-empty bytes.
            ValueError: ``ttl`` is not a positive, finite number.
        """
        _check_ttl(ttl)
        checked: dict[str, bytes] = {}
        for key, value in fields.items():
            if not isinstance(value, (bytes, bytearray, memoryview)) or not value:
                raise TypeError("fields values must be non-empty compact JSON bytes")
            checked[key] = bytes(value)
        self._merge_encoded(session_id, checked, None, remove, ttl, max_bytes)

    async def get(self, session_id: str) -> dict[str, Any]:
        """A fresh copy of the session; ``{}`` if unknown or expired."""
        return self._get_sync(session_id)

    async def delete(self, session_id: str) -> bool:
        """Remove the session and its timestamp; True if a live session existed."""
        s = self._sessions.pop(session_id, None)
        return s is not None and s.written + s.ttl > self._clock()

    async def remove_keys(self, session_id: str, keys: Collection[str], *, ttl: float) -> int:
        """Remove top-level keys; returns how many existed.

        The TTL restarts when keys remain; a session left without keys is deleted.
        """
        _check_ttl(ttl)
        return self._remove_keys_sync(session_id, keys, ttl)

    async def touch(self, session_id: str, *, ttl: float) -> bool:
        """Restart the session's TTL without changing it; True if it exists."""
        _check_ttl(ttl)
        return self._touch_sync(session_id, ttl)

    async def cleanup(self, *, max_age: float | None = None) -> int:
        """Remove expired sessions, or with ``max_age`` those last written that long ago.

        ``cleanup(max_age=0)`` removes every session. Returns how many were removed.
        """
        if max_age is not None and (
            isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or max_age != max_age
        ):
            raise ValueError("max_age must be a number of seconds or None")
        return self._cleanup_sync(max_age)

    async def aclose(self) -> None:
        """Drop every session (the store holds no other resources)."""
        self._sessions.clear()
        self._reset_bounds()


def _check_ttl(ttl: float) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:
        raise ValueError("ttl must be a positive, finite number of seconds")


def _too_large(size: int, limit: int) -> MetadataTooLarge:
    return MetadataTooLarge(
        f"session metadata would be {size} bytes, over the limit of {limit}; nothing was changed",
        size=size,
        limit=limit,
    )
