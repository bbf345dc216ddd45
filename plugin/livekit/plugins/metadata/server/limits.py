"""Shared limits for the token endpoint: request rates and the live-session cap.

The endpoint asks one :class:`Limits` object, once per request, whether the
caller may make a request now (a token bucket per key: the principal's and the
client address's) and whether one more token session may start (a cap on live
sessions that refuses when full and never evicts): :meth:`Limits.admit`, all or
nothing, one round trip. A reservation may name an owner (the principal; an
anonymous caller's address) with a share of its own: the owner's live sessions
are capped too, in the same step, so one principal cannot fill the whole cap.
:meth:`Limits.hit` and :meth:`Limits.reserve_session` ask one question each
(failed authentications use ``hit``).

* :class:`MemoryLimits` answers from process memory: each endpoint replica
  enforces its own limits (what the endpoint uses with the memory store).
* :class:`RedisLimits` answers from Redis, so every replica that shares the
  Redis shares the limits: N replicas admit the configured rate once, not N
  times. Each answer is one Lua script run (one round trip). Every limits key
  carries the hash tag ``{limits}``, so all of them live in one hash slot and a
  script may touch several of them on Redis Cluster too.

Token bucket semantics (both classes): a bucket holds at most ``burst`` tokens
and refills at ``rate`` tokens per second; a request takes one token. The
answer is ``0.0`` when allowed, else the seconds until a token is available
(what a ``Retry-After`` header carries). The Redis version stores the bucket as
its "theoretical arrival time" (GCRA), which gives the same answers as a bucket
holding ``burst - (tat - now) * rate`` tokens, in one string key that expires
as soon as the bucket would be full again.

Fail closed: every number read back from Redis is checked before it is used.
A bucket value that is not a finite, non-negative number at most one full
bucket ahead (``inf``, ``1e30``, ``abc``) counts as an *empty* bucket and is
rewritten as one; a session expiry beyond the reservation's lifetime is pulled
back to it (the session still counts). Such a value never admits a request;
each is counted (:attr:`RedisLimits.corrupt_values`, ``/metrics``) and the
first is logged once (the kind of key, never its value).
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .._util import positive_int, positive_number
from ..errors import StoreUnavailable
from ..log import logger

if TYPE_CHECKING:
    from ..sessions.redis import RedisStore

__all__ = ["Admission", "Bucket", "Limits", "MemoryLimits", "RedisLimits", "Reservation"]

MAX_BUCKETS = 100_000
"""Most rate buckets :class:`MemoryLimits` keeps; the oldest is dropped beyond it."""

DEFAULT_PREFIX = "lkmeta-limits:"
"""Key prefix of :class:`RedisLimits` when not derived from a store."""


TAG = "{limits}"
"""Hash tag of every :class:`RedisLimits` key: one slot, so one script can touch several."""


class Bucket(NamedTuple):
    """A token bucket to take one token from: ``burst`` tokens, refilled at ``rate``/s."""

    key: str
    rate: float
    burst: int


class Reservation(NamedTuple):
    """One more live session, ``session_id``, for ``ttl`` s, unless ``max_sessions`` are live.

    With an ``owner`` and ``owner_max`` > 0, also unless that owner already holds
    ``owner_max`` live sessions (its share of the cap).
    """

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
        """True when the request may go on (a token was taken from every bucket)."""
        return self.wait <= 0.0 and not self.full and not self.owner_full


class Limits(Protocol):
    """What the token endpoint needs to enforce its limits (in-process or shared)."""

    async def hit(self, key: str, rate: float, burst: int) -> float:
        """Take one token from ``key``'s bucket.

        Returns:
            ``0.0`` if allowed, else the seconds until a token is available.
        """
        ...

    async def reserve_session(self, session_id: str, ttl: float, max_sessions: int) -> bool:
        """Count ``session_id`` as live for ``ttl`` seconds unless the cap is reached.

        Reserving an id that is already live refreshes its expiry and succeeds.

        Returns:
            ``False`` when ``max_sessions`` live sessions are already reserved
            (nothing changed; no session is ever evicted), else ``True``.
        """
        ...

    async def release_session(self, session_id: str, owner: str = "") -> None:
        """Stop counting ``session_id`` (and, with its ``owner``, in the owner's share).

        No error if it is not reserved.
        """
        ...

    async def admit(
        self, buckets: Sequence[Bucket], reservation: Reservation | None = None
    ) -> Admission:
        """Take one token from every bucket and make the reservation, or change nothing.

        All or nothing, in one step (one round trip for a shared backend). When a
        bucket is empty the answer's ``wait`` is the longest wait among the empty
        ones; when the reservation does not fit, ``full`` (the cap) or
        ``owner_full`` (the owner's share) is true; either way no token is taken
        and nothing is reserved.
        """
        ...

    async def aclose(self) -> None:
        """Release what the limits hold (a client they own)."""
        ...


def _check_bucket(rate: float, burst: int) -> None:
    positive_number(rate, "rate")
    positive_int(burst, "burst")


def _check_reservation(
    session_id: str, ttl: float, max_sessions: int, owner: str = "", owner_max: int = 0
) -> None:
    if not isinstance(session_id, str) or not session_id:
        raise ValueError("session_id must be a non-empty str")
    positive_number(ttl, "ttl", "number of seconds")
    positive_int(max_sessions, "max_sessions")
    if not isinstance(owner, str):
        raise ValueError("owner must be a str")
    positive_int(owner_max, "owner_max (0: no share)", low=0)


class MemoryLimits:
    """:class:`Limits` in process memory: one replica's own view.

    Args:
        clock: Seconds, monotonic (``time.monotonic`` by default); tests inject one.
        max_buckets: Most rate buckets kept; beyond it the oldest bucket is dropped
            (which only ever makes that key's next request more permissive).
    """

    __slots__ = ("_buckets", "_clock", "_expiries", "_live", "_max_buckets", "_owned", "_owner_of")

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS
    ) -> None:
        positive_int(max_buckets, "max_buckets")
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}
        self._live: dict[str, float] = {}
        self._expiries: list[tuple[float, str]] = []
        self._owner_of: dict[str, str] = {}
        self._owned: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"MemoryLimits(buckets={len(self._buckets)}, sessions={len(self._live)})"

    async def hit(self, key: str, rate: float, burst: int) -> float:
        """Take one token from ``key``'s bucket; ``0.0`` if allowed, else seconds to wait."""
        _check_bucket(rate, burst)
        now = self._clock()
        tokens = self._level(key, rate, burst, now)
        if tokens >= 1.0:
            self._store(key, tokens - 1.0, now)
            return 0.0
        self._store(key, tokens, now)
        return (1.0 - tokens) / rate

    def _level(self, key: str, rate: float, burst: int, now: float) -> float:
        """Tokens in ``key``'s bucket at ``now`` (a new bucket is full)."""
        entry = self._buckets.get(key)
        if entry is None:
            return float(burst)
        return min(float(burst), entry[0] + (now - entry[1]) * rate)

    def _store(self, key: str, tokens: float, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= self._max_buckets:
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[key] = (tokens, now)

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

    @property
    def corrupt_values(self) -> int:
        """Always 0: process memory holds only what this object wrote."""
        return 0

    async def reserve_session(self, session_id: str, ttl: float, max_sessions: int) -> bool:
        """Count ``session_id`` as live for ``ttl`` seconds; ``False`` if the cap is reached."""
        _check_reservation(session_id, ttl, max_sessions)
        return self._reserve(self._clock(), session_id, ttl, max_sessions).admitted

    def _reserve(
        self,
        now: float,
        session_id: str,
        ttl: float,
        max_sessions: int,
        owner: str = "",
        owner_max: int = 0,
    ) -> Admission:
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
        """One token from every bucket and the reservation, or nothing (see :class:`Limits`)."""
        for bucket in buckets:
            _check_bucket(bucket.rate, bucket.burst)
        if reservation is not None:
            _check_reservation(*reservation)
        now = self._clock()
        levels = [self._level(b.key, b.rate, b.burst, now) for b in buckets]
        waits = [
            (1.0 - level) / b.rate for b, level in zip(buckets, levels, strict=True) if level < 1.0
        ]
        if waits:
            return Admission(wait=max(waits))
        if reservation is not None:
            answer = self._reserve(now, *reservation)
            if not answer.admitted:
                return answer
        for bucket, level in zip(buckets, levels, strict=True):
            self._store(bucket.key, level - 1.0, now)
        return Admission()

    async def release_session(self, session_id: str, owner: str = "") -> None:
        """Stop counting ``session_id`` (in its owner's share too)."""
        self._live.pop(session_id, None)
        self._disown(session_id)

    async def owner_sessions(self, owner: str) -> int:
        """How many live sessions ``owner`` holds now."""
        self._drop_expired(self._clock())
        return len(self._owned.get(owner, ()))

    async def live_sessions(self) -> int:
        """How many reserved sessions are live now."""
        self._drop_expired(self._clock())
        return len(self._live)

    async def aclose(self) -> None:
        """Nothing to release."""


# Every script gets ``now`` in microseconds as ARGV[1] ('' = the server's own TIME, so
# replicas with skewed clocks agree). ``bad`` counts corrupt values met (and repaired).
_LUA_NOW = r"""
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local bad = 0
local function fmt(x) return string.format('%.0f', x) end
local function px(us) return fmt(math.min(math.ceil(us / 1000) + 1, 1e13)) end
"""

# A bucket's theoretical arrival time (TAT, microseconds): missing means a full bucket;
# anything but a finite number in [0, now + burst * interval] is corrupt and reads as
# (and is rewritten as) an empty bucket: fail closed.
_LUA_TAT = r"""
local function read_tat(key, interval, burst)
  local raw = redis.call('GET', key)
  if not raw then return now end
  local top = now + burst * interval
  local tat = tonumber(raw)
  if tat == nil or tat ~= tat or tat < 0 or tat > top then
    bad = bad + 1
    redis.call('SET', key, fmt(top), 'PX', px(top - now))
    return top
  end
  if tat < now then tat = now end
  return tat
end
local function capped(w) return math.ceil(math.min(w, 4e15)) end
"""

# A sorted set of live sessions (score = expiry in microseconds): expired members are
# dropped; an expiry beyond now + ttl is corrupt and pulled back to it (still live).
_LUA_LIVE = r"""
local function expire(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIRE', key, px(tonumber(last[2]) - now))
  end
end
local function live(key, ttl)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
  local top = fmt(now + ttl)
  local far = redis.call('ZRANGEBYSCORE', key, '(' .. top, '+inf')
  for _, member in ipairs(far) do
    bad = bad + 1
    redis.call('ZADD', key, top, member)
  end
  if #far > 0 then expire(key) end
end
local function add(key, member, ttl)
  redis.call('ZADD', key, fmt(now + ttl), member)
  expire(key)
end
"""

# KEYS[1] the bucket. ARGV: now_us, interval_us (1e6 / rate), burst. Returns {0, bad} if
# allowed, else {wait_us, bad}.
_HIT_LUA = (
    _LUA_NOW
    + _LUA_TAT
    + r"""
local interval = tonumber(ARGV[2])
local tat = read_tat(KEYS[1], interval, tonumber(ARGV[3]))
local new_tat = tat + interval
local wait = new_tat - now - tonumber(ARGV[3]) * interval
if wait > 0 then return {capped(wait), bad} end
redis.call('SET', KEYS[1], fmt(new_tat), 'PX', px(new_tat - now))
return {0, bad}
"""
)

# KEYS[1] the sessions set. ARGV: now_us, session_id, ttl_us, max_sessions. Returns
# {1, bad} if reserved, {0, bad} when full (nothing else changed; no eviction).
_RESERVE_LUA = (
    _LUA_NOW
    + _LUA_LIVE
    + r"""
local ttl = tonumber(ARGV[3])
live(KEYS[1], ttl)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return {0, bad} end
end
add(KEYS[1], ARGV[2], ttl)
return {1, bad}
"""
)

# ARGV: now_us. Returns how many members are live.
_COUNT_LUA = (
    _LUA_NOW
    + r"""
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
return redis.call('ZCARD', KEYS[1])
"""
)

# KEYS[1] the sessions set, KEYS[2] the owner's sessions set, ARGV[1] the session id.
_RELEASE_LUA = r"""
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 0
"""

# KEYS[1] the sessions set, KEYS[2] the owner's sessions set, KEYS[3..n+2] the buckets
# (all in the {limits} slot). ARGV: now_us, n, then interval_us and burst per bucket,
# then session_id ('' for no reservation), ttl_us, max_sessions, owner_max (0: no
# share). Returns {outcome, wait_us, bad}: outcome 0 admitted (one token taken from
# each bucket, the session reserved in both sets), 1 rate limited, 2 full, 3 the
# owner's share is used up; when refused, nothing changed but repairs.
_ADMIT_LUA = (
    _LUA_NOW
    + _LUA_TAT
    + _LUA_LIVE
    + r"""
local n = tonumber(ARGV[2])
local wait = 0
local tats = {}
for i = 1, n do
  local interval = tonumber(ARGV[1 + 2 * i])
  local burst = tonumber(ARGV[2 + 2 * i])
  tats[i] = read_tat(KEYS[i + 2], interval, burst) + interval
  local w = tats[i] - now - burst * interval
  if w > wait then wait = w end
end
if wait > 0 then return {1, capped(wait), bad} end
local sid = ARGV[3 + 2 * n]
if sid ~= '' then
  local ttl = tonumber(ARGV[4 + 2 * n])
  local owner_max = tonumber(ARGV[6 + 2 * n])
  live(KEYS[1], ttl)
  if owner_max > 0 then live(KEYS[2], ttl) end
  if not redis.call('ZSCORE', KEYS[1], sid) then
    if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5 + 2 * n]) then return {2, 0, bad} end
    if owner_max > 0 and redis.call('ZCARD', KEYS[2]) >= owner_max then
      return {3, 0, bad}
    end
  end
  add(KEYS[1], sid, ttl)
  if owner_max > 0 then add(KEYS[2], sid, ttl) end
end
for i = 1, n do
  redis.call('SET', KEYS[i + 2], fmt(tats[i]), 'PX', px(tats[i] - now))
end
return {0, 0, bad}
"""
)

_MAX_WAIT_US = 4 * 10**15
"""Longest wait a script answers (about 127 years); more is a corrupt answer."""


def _derived_prefix(store_prefix: str) -> str:
    """A limits prefix that no ``store_prefix + session_id`` key can start with."""
    store_prefix = store_prefix.replace("{", "_").replace("}", "_")  # keep {limits} the tag
    if not store_prefix:
        return DEFAULT_PREFIX
    last = "-" if store_prefix[-1] != "-" else "+"
    return f"{store_prefix[:-1]}{last}limits:"


class RedisLimits:
    """:class:`Limits` in Redis, shared by every endpoint replica that uses the same Redis.

    Keys: ``<prefix>{limits}rate:<key>`` (a string, per bucket, expiring when
    the bucket would be full again), ``<prefix>{limits}sessions`` (a sorted set
    of reserved session ids scored by expiry, expiring with its last member) and
    ``<prefix>{limits}owner:<owner>`` (the same, per owner with a share). The
    hash tag puts them all in one slot, so :meth:`admit` checks every bucket and
    the cap in one script, on one node of a Redis Cluster too (the prefix may not
    contain braces). The clock is Redis's own ``TIME``, so replicas with skewed
    clocks still agree.

    Args:
        client: A ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``.
        prefix: Prepended to every key.
        timeout: Seconds after which a call gives up with ``StoreUnavailable``.
        clock: For tests: seconds passed to the scripts instead of Redis's ``TIME``.
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
        clock: Callable[[], float] | None = None,
        _where: str = "the configured URL",
    ) -> None:
        import redis.exceptions

        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        if "{" in prefix or "}" in prefix:
            raise ValueError("prefix must not contain braces: {limits} is the keys' hash tag")
        positive_number(timeout, "timeout", "number of seconds")
        self._client = client
        self._prefix = prefix
        self._tagged = prefix + TAG
        self._sessions_key = self._tagged + "sessions"
        self._timeout = float(timeout)
        self._clock = clock
        self._where = _where
        from redis.asyncio.cluster import RedisCluster

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
        self._hit = client.register_script(_HIT_LUA)
        self._reserve = client.register_script(_RESERVE_LUA)
        self._count = client.register_script(_COUNT_LUA)
        self._admit = client.register_script(_ADMIT_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._corrupt = 0

    @classmethod
    def from_store(
        cls, store: RedisStore, *, clock: Callable[[], float] | None = None
    ) -> RedisLimits:
        """Limits on the store's own client (and so its pool, deadline and Redis topology).

        The key prefix is derived from the store's so that no session key can
        collide with a limits key (``lkmeta:`` gives ``lkmeta-limits:``). The
        store keeps owning the client: :meth:`aclose` leaves it open.
        """
        return cls(
            store.client,
            prefix=_derived_prefix(store.prefix),
            timeout=store.timeout,
            clock=clock,
            _where=store.url,
        )

    def __repr__(self) -> str:
        return f"RedisLimits(prefix={self._prefix!r}, timeout={self._timeout})"

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return self._prefix

    @property
    def corrupt_values(self) -> int:
        """Corrupt values read back from Redis (and repaired) since this object was made."""
        return self._corrupt

    def _owner_key(self, owner: str) -> str:
        return self._tagged + "owner:" + owner

    def _count_corrupt(self, bad: Any, where: str) -> None:
        """Count corrupt values a script met; log the first one (never a value)."""
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

    def _wait(self, wait_us: Any, where: str) -> float:
        """A script's wait, checked: an answer out of range is corrupt and waits one second."""
        try:
            wait = int(wait_us)
        except (TypeError, ValueError):
            wait = -1
        if not 0 < wait <= _MAX_WAIT_US:
            self._count_corrupt(1, where)
            return 1.0
        return wait / 1e6

    def _now(self) -> str:
        return "" if self._clock is None else str(round(self._clock() * 1e6))

    async def _call(self, op: str, call: Awaitable[Any]) -> Any:
        try:
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

    async def hit(self, key: str, rate: float, burst: int) -> float:
        """Take one token from ``key``'s shared bucket; ``0.0`` if allowed, else seconds."""
        _check_bucket(rate, burst)
        args = [self._now(), repr(1e6 / rate), burst]
        call = self._hit(keys=[self._tagged + "rate:" + key], args=args)
        answer = await self._call("hit", call)
        wait_us, bad = _pair(answer)
        self._count_corrupt(bad, "rate")
        return 0.0 if wait_us == 0 else self._wait(wait_us, "rate")

    async def reserve_session(self, session_id: str, ttl: float, max_sessions: int) -> bool:
        """Count ``session_id`` as live for ``ttl`` seconds across replicas; False if full."""
        _check_reservation(session_id, ttl, max_sessions)
        args = [self._now(), session_id, round(ttl * 1e6), max_sessions]
        answer = await self._call("reserve", self._reserve(keys=[self._sessions_key], args=args))
        ok, bad = _pair(answer)
        self._count_corrupt(bad, "sessions")
        return ok == 1

    async def release_session(self, session_id: str, owner: str = "") -> None:
        """Stop counting ``session_id`` (in its ``owner``'s share too)."""
        keys = [self._sessions_key, self._owner_key(owner)]
        await self._call("release", self._release(keys=keys, args=[session_id]))

    async def admit(
        self, buckets: Sequence[Bucket], reservation: Reservation | None = None
    ) -> Admission:
        """Every bucket and the reservation across replicas, all or nothing: one script run."""
        owner = "" if reservation is None else reservation.owner
        keys = [self._sessions_key, self._owner_key(owner)]
        args: list[Any] = [self._now(), len(buckets)]
        for bucket in buckets:
            _check_bucket(bucket.rate, bucket.burst)
            keys.append(self._tagged + "rate:" + bucket.key)
            args += [repr(1e6 / bucket.rate), bucket.burst]
        if reservation is None:
            args += ["", 0, 0, 0]
        else:
            _check_reservation(*reservation)
            session_id, ttl, max_sessions, _, owner_max = reservation
            args += [session_id, round(ttl * 1e6), max_sessions, owner_max]
        answer = await self._call("admit", self._admit(keys=keys, args=args))
        try:
            outcome, wait_us, bad = (int(x) for x in answer)
        except (TypeError, ValueError):
            outcome, wait_us, bad = -1, 0, 1
        self._count_corrupt(bad, "rate/sessions")
        if outcome == 0:
            return Admission()
        if outcome == 2:
            return Admission(full=True)
        if outcome == 3:
            return Admission(owner_full=True)
        return Admission(wait=self._wait(wait_us if outcome == 1 else -1, "rate"))

    async def live_sessions(self) -> int:
        """How many reserved sessions are live now (all replicas together)."""
        count = await self._call(
            "count", self._count(keys=[self._sessions_key], args=[self._now()])
        )
        return int(count)

    async def ping(self) -> bool:
        """True if the limits' Redis answers; raises ``StoreUnavailable`` otherwise."""
        return bool(await self._call("ping", self._client.ping()))

    async def owner_sessions(self, owner: str) -> int:
        """How many live sessions ``owner`` holds now (all replicas together)."""
        count = await self._call(
            "count", self._count(keys=[self._owner_key(owner)], args=[self._now()])
        )
        return int(count)

    async def aclose(self) -> None:
        """Close nothing: the client belongs to whoever created it (the store)."""


def _pair(answer: Any) -> tuple[int, int]:
    """A two-number script answer; anything else reads as (-1, 1): refused, corrupt."""
    try:
        first, second = answer
        return int(first), int(second)
    except (TypeError, ValueError):
        return -1, 1
