"""The token endpoint's limits: request rates (GCRA buckets) and the live-session cap.

:class:`MemoryLimits` answers from process memory; :class:`RedisLimits` from Redis, shared
by replicas (one Lua script per answer, Redis's clock). Fail closed: a corrupt value read
back counts as an empty bucket or a live session, is repaired, counted and logged once.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

from .._lua import lua_source
from .._util import positive_int, positive_number
from ..errors import StoreUnavailable
from ..log import logger
from ..sessions.redis import SESSION_LIBRARY
from ..sessions.redis_batch import ScriptBatch
from ..sessions.store import too_large

if TYPE_CHECKING:
    from ..sessions.redis import RedisStore
    from ..sessions.store import SessionWrite

__all__ = ["Admission", "Bucket", "Limits", "MemoryLimits", "RedisLimits", "Reservation"]

MAX_BUCKETS = 100_000
"""Most rate buckets :class:`MemoryLimits` keeps; the oldest is dropped beyond it."""

DEFAULT_PREFIX = "lkmeta-limits:"
"""Key prefix of :class:`RedisLimits` when not derived from a store."""

TAG = "{limits}"
"""Hash tag of every :class:`RedisLimits` key: one slot, so one script can touch several."""


class Bucket(NamedTuple):
    """A rate bucket to take one credit from: ``burst`` credits, refilled at ``rate``/s."""

    key: str
    rate: float
    burst: int


class Reservation(NamedTuple):
    """One more live session for ``ttl`` s, unless ``max_sessions`` are live, or (with
    ``owner_max`` > 0) unless ``owner`` already holds ``owner_max`` of them."""

    session_id: str
    ttl: float
    max_sessions: int
    owner: str = ""
    owner_max: int = 0


class Admission(NamedTuple):
    """The answer of :meth:`Limits.admit`: ``wait`` > 0 (rate limited), ``full``,
    ``owner_full`` (the owner's share is used up), or none of them (admitted)."""

    wait: float = 0.0
    full: bool = False
    owner_full: bool = False

    @property
    def admitted(self) -> bool:
        return self.wait <= 0.0 and not self.full and not self.owner_full


class Limits(Protocol):
    """What the token endpoint needs to enforce its limits (in-process or shared)."""

    __slots__ = ()

    async def admit(
        self, buckets: Sequence[Bucket], reservation: Reservation | None = None
    ) -> Admission:
        """One credit from every bucket and the reservation, or nothing (one round trip)."""
        ...

    async def hit(self, key: str, rate: float, burst: int) -> float:
        """Take one credit from ``key``'s bucket: ``0.0``, or the seconds until one is there."""
        return (await self.admit([Bucket(key, rate, burst)])).wait

    async def reserve_session(self, session_id: str, ttl: float, max_sessions: int) -> bool:
        """Count ``session_id`` as live for ``ttl`` s (a live id is refreshed); ``False``,
        nothing changed, when ``max_sessions`` are live."""
        return (await self.admit((), Reservation(session_id, ttl, max_sessions))).admitted

    async def release_session(self, session_id: str, owner: str = "") -> None:
        """Stop counting ``session_id`` (in its ``owner``'s share too); no error if unknown."""
        ...

    async def aclose(self) -> None: ...


def _checked(buckets: Sequence[Bucket], reservation: Reservation | None) -> None:
    for bucket in buckets:
        positive_number(bucket.rate, "rate")
        positive_int(bucket.burst, "burst")
    if reservation is None:
        return
    session_id, ttl, max_sessions, owner, owner_max = reservation
    if not isinstance(session_id, str) or not session_id:
        raise ValueError("session_id must be a non-empty str")
    positive_number(ttl, "ttl", "number of seconds")
    positive_int(max_sessions, "max_sessions")
    if not isinstance(owner, str):
        raise ValueError("owner must be a str")
    positive_int(owner_max, "owner_max (0: no share)", low=0)


class MemoryLimits(Limits):
    """:class:`Limits` in process memory: one replica's own view. Beyond ``max_buckets`` the
    oldest bucket is dropped (only ever making that key's next request more permissive)."""

    __slots__ = ("_buckets", "_clock", "_expiries", "_live", "_max_buckets", "_owned", "_owner_of")

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS
    ) -> None:
        positive_int(max_buckets, "max_buckets")
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}  # key: (level, when)
        self._live: dict[str, float] = {}  # session id: expiry
        self._expiries: list[tuple[float, str]] = []
        self._owner_of: dict[str, str] = {}
        self._owned: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"MemoryLimits(buckets={len(self._buckets)}, sessions={len(self._live)})"

    @property
    def corrupt_values(self) -> int:
        """Always 0: process memory holds only what this object wrote."""
        return 0

    def _level(self, key: str, rate: float, burst: int, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return float(burst)
        return min(float(burst), entry[0] + (now - entry[1]) * rate)

    def _drop_expired(self, now: float) -> None:
        expiries, live = self._expiries, self._live
        while expiries and expiries[0][0] <= now:
            expiry, session_id = heapq.heappop(expiries)
            if live.get(session_id) == expiry:
                del live[session_id]
                self._disown(session_id)

    def _disown(self, session_id: str) -> None:
        owner = self._owner_of.pop(session_id, None)
        if owner is not None:
            owned = self._owned[owner]
            owned.discard(session_id)
            if not owned:
                del self._owned[owner]

    def _reserve(self, now: float, reservation: Reservation) -> Admission:
        session_id, ttl, max_sessions, owner, owner_max = reservation
        self._drop_expired(now)
        if session_id not in self._live:
            if len(self._live) >= max_sessions:
                return Admission(full=True)
            if owner_max and len(self._owned.get(owner, ())) >= owner_max:
                return Admission(owner_full=True)
        expiry = now + ttl
        self._live[session_id] = expiry
        if owner_max and self._owner_of.get(session_id) is None:
            self._owner_of[session_id] = owner
            self._owned.setdefault(owner, set()).add(session_id)
        heapq.heappush(self._expiries, (expiry, session_id))
        if len(self._expiries) > 2 * len(self._live) + 64:  # refreshed ids leave stale entries
            self._expiries = [(e, s) for s, e in self._live.items()]
            heapq.heapify(self._expiries)
        return Admission()

    async def admit(
        self, buckets: Sequence[Bucket], reservation: Reservation | None = None
    ) -> Admission:
        _checked(buckets, reservation)
        now = self._clock()
        levels = [self._level(b.key, b.rate, b.burst, now) for b in buckets]
        waits = [
            (1.0 - level) / b.rate for b, level in zip(buckets, levels, strict=True) if level < 1.0
        ]
        if waits:
            return Admission(wait=max(waits))
        if reservation is not None:
            answer = self._reserve(now, reservation)
            if not answer.admitted:
                return answer
        for bucket, level in zip(buckets, levels, strict=True):
            if bucket.key not in self._buckets and len(self._buckets) >= self._max_buckets:
                self._buckets.pop(next(iter(self._buckets)))
            self._buckets[bucket.key] = (level - 1.0, now)
        return Admission()

    async def release_session(self, session_id: str, owner: str = "") -> None:
        self._live.pop(session_id, None)
        self._disown(session_id)

    async def live_sessions(self) -> int:
        self._drop_expired(self._clock())
        return len(self._live)

    async def aclose(self) -> None:
        pass


_LIBRARY = "server/limits.lua"
_COUNT_LUA = lua_source(_LIBRARY, "server/count.lua")
_RELEASE_LUA = lua_source("server/release.lua")
_ADMIT_LUA = lua_source(_LIBRARY, "server/admit.lua")
_ADMIT_WRITE_LUA = lua_source(_LIBRARY, SESSION_LIBRARY, "server/admit_write.lua")

_MAX_WAIT_US = 4 * 10**15
"""Longest wait a script answers (about 127 years); more is a corrupt answer."""


def _derived_prefix(store_prefix: str) -> str:
    """A limits prefix that no ``store_prefix + session_id`` key can start with."""
    store_prefix = store_prefix.replace("{", "_").replace("}", "_")  # keep {limits} the tag
    if not store_prefix:
        return DEFAULT_PREFIX
    last = "-" if store_prefix[-1] != "-" else "+"
    return f"{store_prefix[:-1]}{last}limits:"


class RedisLimits(Limits):
    """:class:`Limits` in Redis (``Redis`` or ``RedisCluster`` ``client``), shared by replicas.

    Keys: ``<prefix>{limits}rate:<key>``, ``<prefix>{limits}sessions`` (ids by expiry) and
    ``<prefix>{limits}owner:<owner>``. Calls give up after ``timeout`` s with
    ``StoreUnavailable``; ``clock`` (tests) replaces Redis's ``TIME``.
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import redis.exceptions
        from redis.asyncio.cluster import RedisCluster

        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        if "{" in prefix or "}" in prefix:
            raise ValueError("prefix must not contain braces: {limits} is the keys' hash tag")
        positive_number(timeout, "timeout", "number of seconds")
        self._client = client
        self.prefix: Final = prefix
        self._tagged = prefix + TAG
        self._sessions_key = self._tagged + "sessions"
        self._timeout = float(timeout)
        self._clock = clock
        self._where = "the configured URL"
        self._store: RedisStore | None = None
        self._failures: tuple[type[Exception], ...] = (
            asyncio.TimeoutError,
            TimeoutError,
            OSError,
            redis.exceptions.RedisError,
            redis.exceptions.RedisClusterException,  # no RedisError: no reachable node
        )
        # A fresh RedisCluster client races on concurrent first commands: learn the
        # topology first (a lock-guarded no-op once known), as RedisStore does.
        self._prepare: Callable[[], Awaitable[Any]] | None = (
            client.initialize if isinstance(client, RedisCluster) else None
        )
        self._count = client.register_script(_COUNT_LUA)
        self._admit = client.register_script(_ADMIT_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._admit_write = client.register_script(_ADMIT_WRITE_LUA)
        # One held connection, calls pipelined (one server or Sentinel; a Cluster routes per
        # key), unless holding one would leave the pool no connection for anything else.
        pool_size = getattr(getattr(client, "connection_pool", None), "max_connections", 0)
        batched = self._prepare is None and pool_size >= 2
        self._batch = ScriptBatch(client, self._timeout) if batched else None
        self._corrupt = 0

    @classmethod
    def from_store(
        cls, store: RedisStore, *, clock: Callable[[], float] | None = None
    ) -> RedisLimits:
        """Limits on the store's client (which it keeps owning), keys apart from its keys;
        :meth:`admit_write` may write its sessions (one server or Sentinel, primary)."""
        from redis.asyncio.cluster import RedisCluster

        limits = cls(
            store.client, prefix=_derived_prefix(store.prefix), timeout=store.timeout, clock=clock
        )
        limits._where = store.url
        if not isinstance(store.client, RedisCluster) and store.durability == "primary":
            limits._store = store
        return limits

    def __repr__(self) -> str:
        return f"RedisLimits(prefix={self.prefix!r}, timeout={self._timeout})"

    @property
    def corrupt_values(self) -> int:
        """Corrupt values read back from Redis (and repaired) so far."""
        return self._corrupt

    def _owner_key(self, owner: str) -> str:
        return self._tagged + "owner:" + owner

    def _count_corrupt(self, bad: Any, where: str) -> None:
        try:
            n = int(bad)
        except (TypeError, ValueError):
            n = 1
        if n <= 0:
            return
        if self._corrupt == 0:
            logger.warning(
                "limits: %d corrupt value(s) in the limits store at %s (%s keys); read as "
                "exhausted and repaired; further ones are only counted "
                "(lk_metadata_limits_corrupt_values)",
                n,
                self._where,
                where,
                extra={"corrupt_values": n, "limits_op": where},
            )
        self._corrupt += n

    def _now(self) -> str:
        return "" if self._clock is None else str(round(self._clock() * 1e6))

    async def _call(self, op: str, call: Awaitable[Any]) -> Any:
        try:
            if isinstance(
                call, asyncio.Future
            ):  # a ScriptBatch reply: the batch keeps the deadline
                return await call
            return await asyncio.wait_for(self._prepared(call), self._timeout)
        except self._failures as exc:
            raise StoreUnavailable(
                f"Redis at {self._where} is unavailable for the endpoint's limits "
                f"({op}: {type(exc).__name__})"
            ) from None

    async def _prepared(self, call: Awaitable[Any]) -> Any:
        if self._prepare is not None:
            await self._prepare()
        return await call

    def _run(self, op: str, script: Any, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        if self._batch is None:
            return self._call(op, script(keys=keys, args=args))
        return self._call(op, self._batch.run(script, keys, args))

    async def release_session(self, session_id: str, owner: str = "") -> None:
        keys = [self._sessions_key, self._owner_key(owner)]
        await self._run("release", self._release, keys, [session_id])

    def _admission(
        self, buckets: Sequence[Bucket], reservation: Reservation | None
    ) -> tuple[list[str], list[Any]]:
        """``admission()``'s KEYS and ARGV (``limits.lua``)."""
        _checked(buckets, reservation)
        owner = "" if reservation is None else reservation.owner
        keys = [self._sessions_key, self._owner_key(owner)]
        args: list[Any] = [self._now(), len(buckets)]
        for bucket in buckets:
            keys.append(self._tagged + "rate:" + bucket.key)
            args += [repr(1e6 / bucket.rate), bucket.burst]
        if reservation is None:
            args += ["", 0, 0, 0]
        else:
            session_id, ttl, max_sessions, _, owner_max = reservation
            args += [session_id, round(ttl * 1e6), max_sessions, owner_max]
        return keys, args

    def _answer(self, answer: Any, buckets: Sequence[Bucket], reserving: bool) -> Admission:
        """A script's answer, checked: anything out of range is corrupt and refuses."""
        try:
            outcome, wait_us, bad = (int(x) for x in answer[:3])
        except (TypeError, ValueError):
            outcome, wait_us, bad = -1, 0, 1
        where = "rate/sessions" if buckets and reserving else "rate" if buckets else "sessions"
        self._count_corrupt(bad, where)
        if outcome in (0, 2, 3):
            return Admission(full=outcome == 2, owner_full=outcome == 3)
        if outcome != 1 or not 0 < wait_us <= _MAX_WAIT_US:
            self._count_corrupt(1, "rate")
            return Admission(wait=1.0)
        return Admission(wait=wait_us / 1e6)

    async def admit(
        self, buckets: Sequence[Bucket], reservation: Reservation | None = None
    ) -> Admission:
        """Every bucket and the reservation across replicas, all or nothing: one script run."""
        keys, args = self._admission(buckets, reservation)
        answer = await self._run("admit", self._admit, keys, args)
        return self._answer(answer, buckets, reservation is not None)

    def writes_sessions_of(self, store: object) -> bool:
        """True if :meth:`admit_write` can write ``store``'s sessions (see :meth:`from_store`)."""
        return store is not None and store is self._store

    async def admit_write(
        self, buckets: Sequence[Bucket], reservation: Reservation, write: SessionWrite
    ) -> Admission:
        """:meth:`admit` and, when admitted, ``RedisStore.merge`` of ``write``: one script run.

        Raises:
            MetadataTooLarge: The session would be over ``write.max_bytes`` (the rate
                credits are taken: a refused request counts against its rates).
            StoreUnavailable: Redis failed (e.g. out of memory): nothing was written.
            RuntimeError: These limits were not made by :meth:`from_store` on one
                server or Sentinel.
        """
        store = self._store
        if store is None:
            raise RuntimeError("admit_write needs limits made by RedisLimits.from_store")
        keys, args = self._admission(buckets, reservation)
        key, merge_args = store.merge_arguments(write)
        answer = await self._run("admit", self._admit_write, [*keys, key], [*args, *merge_args])
        if answer == 0:  # admitted and written, nothing corrupt met
            return Admission()
        try:
            outcome, _, bad, size = (int(x) for x in answer)
        except (TypeError, ValueError):
            outcome = -1
        if outcome == 4:
            self._count_corrupt(bad, "rate/sessions")
            raise too_large(size, write.max_bytes)
        return self._answer(answer, buckets, True)

    async def live_sessions(self) -> int:
        return int(await self._run("count", self._count, [self._sessions_key], [self._now()]))

    async def ping(self) -> bool:
        return bool(await self._call("ping", self._client.ping()))

    async def aclose(self) -> None:
        """Give back the pipelined connection; the client stays open."""
        if self._batch is not None:
            await self._batch.aclose()
