"""RedisStore: session metadata shared by many workers through Redis (the ``redis`` extra).

Layout: one hash per session, named ``prefix + session_id``; one field per
top-level key (the key's UTF-8 bytes); the value is the compact JSON the
``SessionManager`` already encoded. Nothing is ever read, modified in Python and
written back, so concurrent writers on any number of hosts never lose each
other's keys.

Every write is **one atomic round trip**: a Lua script (run through redis-py's
``register_script()``: ``EVALSHA``, reloaded by redis-py when a restarted server
forgot it) that computes the
resulting size under the size contract of :mod:`.store`, refuses when it would
exceed ``max_bytes`` (the session stays exactly as it was), and otherwise applies
``HSET``/``HDEL`` and the sliding ``PEXPIRE`` together. :meth:`RedisStore.merge_and_get`
(the optional :class:`~.store.MergeAndGet` operation) runs the same script, which
then also returns the hash as written: merge plus read in one round trip.

Size bookkeeping: each hash carries one reserved field, ``b"\\xff"`` (a byte that
never occurs in UTF-8, so it cannot collide with a key), holding
``S = sum(entry_size(key, value) + 1)`` over the session's entries; the
session's size under the contract is then ``1 + S`` (``2``, i.e. ``{}``, when
``S == 0``), with no ``HLEN``. The script measures the JSON length of each key it
adds or removes, escaping exactly as orjson (and so :func:`~.store.entry_size`,
which the ``MemoryStore`` uses) does, so the limit is enforced identically; an
update of an existing key needs only the value lengths. A merge costs O(fields
touched), not O(session size), and the client sends only keys and values. A hash found without the reserved field (written by something else) is
measured once inside the script from its contents.
The hash belongs to the store: write it only through ``RedisStore``.

Expiry is Redis's own: ``cleanup()`` returns 0. Redis does not record when a hash
was last written, so ``cleanup(max_age=...)`` cannot select by age either; it
returns 0 as well and sessions expire by their TTL.

Failures (connection refused, timeouts, a full pool, server errors) raise
:class:`~.errors.StoreUnavailable` with the URL's password redacted and the cause
chained. ``get`` is idempotent and retries with a bounded backoff; every
operation, retries included, finishes or fails within ``timeout`` seconds. The
pool reconnects by itself, so the same store keeps working once Redis is back.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from .._util import redact_url
from ..errors import ConfigError, MetadataTooLarge, StoreUnavailable
from ..log import logger

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStore"]

T = TypeVar("T")

_INSTALL_HINT = 'RedisStore needs the redis extra: pip install "livekit-plugins-metadata[redis]"'

#: Reserved hash field holding the sum of entry sizes; 0xFF never occurs in UTF-8.
SIZE_FIELD = b"\xff"

DEFAULT_PREFIX = "lkmeta:"
DEFAULT_TIMEOUT = 5.0
DEFAULT_POOL_SIZE = 64

_GET_ATTEMPTS = 4
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 0.5

# The Lua below avoids local functions (a closure per run costs more than the
# redis.call()s) and keeps redis.call()s few. Lists are sent in chunks of 1000
# because Lua's unpack() has a stack limit. A key's JSON length is measured here,
# only when it is added or removed (an update needs no key length), escaping
# exactly as orjson does (\" \\ \b \t \n \f \r, other control characters as
# \u00XX, nothing else); a plain key costs one string.find. A hash that lacks
# the reserved field is measured from its contents the same way.
#
# ``_LUA_ELEN`` is spliced in with ``f`` bound to a key: it sets ``el`` to
# entry_size(key, b"") = len(orjson.dumps(key)) + 1.
_LUA_ELEN = r"""
  if string.find(f, '[%z\1-\31"\\]') then
    local _, q = string.gsub(f, '["\\]', '')
    local _, e = string.gsub(f, '[\8\9\10\12\13]', '')
    local _, c = string.gsub(f, '[%z\1-\31]', '')
    el = #f + 3 + q + e + 5 * (c - e)
  else
    el = #f + 3
  end
"""

_LUA_READ = (
    r"""
local key = KEYS[1]
local old
if #names <= 1000 then
  old = redis.call('HMGET', key, unpack(names))
else
  old = {}
  for j = 1, #names, 1000 do
    local part = redis.call('HMGET', key, unpack(names, j, math.min(j + 999, #names)))
    for k = 1, #part do old[#old + 1] = part[k] end
  end
end
local el
local s = tonumber(old[1])
if not s then
  s = 0
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local f = all[i]
"""
    + _LUA_ELEN
    + r"""
    s = s + el + 1 + #all[i + 1]
  end
end
"""
)

# KEYS[1] session hash. ARGV: max_bytes, ttl_ms, want_result, lengths, blob, then
# the fields to remove (disjoint from the set fields). The fields to set travel
# packed: ``blob`` is key1 value1 key2 value2 ... concatenated and ``lengths`` their
# byte lengths in decimal, comma-separated; two arguments instead of 2 x N saves
# the client most of its per-argument encoding work, and the script splits them
# with string.sub.
# Returns -size if refused (nothing written); otherwise the new size, or with
# want_result == '1' the session after the write as one JSON object text (the
# stored values are compact JSON already; keys are quoted, or escaped by cjson
# when they need it; the reserved field left out): one bulk reply that the client
# decodes with a single orjson.loads, rather than 2 x N bulk strings to parse.
_MERGE_LUA = (
    r"""
local data = ARGV[5]
local kv = {}
local pos = 1
for l in string.gmatch(ARGV[4], '%d+') do
  local e = pos + tonumber(l)
  kv[#kv + 1] = string.sub(data, pos, e - 1)
  pos = e
end
local names = {'\255'}
for i = 1, #kv, 2 do names[#names + 1] = kv[i] end
for i = 6, #ARGV do names[#names + 1] = ARGV[i] end
"""
    + _LUA_READ
    + r"""
local n = 1
for i = 1, #kv, 2 do
  n = n + 1
  local prev = old[n]
  if prev then
    s = s - #prev + #kv[i + 1]
  else
    local f = kv[i]
"""
    + _LUA_ELEN
    + r"""
    s = s + el + #kv[i + 1] + 1
  end
end
local hdel = {}
for i = 6, #ARGV do
  n = n + 1
  local prev = old[n]
  if prev then
    local f = ARGV[i]
"""
    + _LUA_ELEN
    + r"""
    s = s - el - #prev - 1
    hdel[#hdel + 1] = f
  end
end
local size = 2
if s > 0 then size = 1 + s end
if size > tonumber(ARGV[1]) then return -size end
for j = 1, #hdel, 1000 do
  redis.call('HDEL', key, unpack(hdel, j, math.min(j + 999, #hdel)))
end
if #kv <= 998 then
  redis.call('HSET', key, '\255', s, unpack(kv))
else
  redis.call('HSET', key, '\255', s)
  for j = 1, #kv, 1000 do
    redis.call('HSET', key, unpack(kv, j, math.min(j + 999, #kv)))
  end
end
redis.call('PEXPIRE', key, ARGV[2])
if ARGV[3] ~= '1' then return size end
local all = redis.call('HGETALL', key)
local parts = {}
for i = 1, #all, 2 do
  local f = all[i]
  if f ~= '\255' then
    if string.find(f, '[%z\1-\31"\\]') then f = cjson.encode(f) else f = '"' .. f .. '"' end
    parts[#parts + 1] = f .. ':' .. all[i + 1]
  end
end
return '{' .. table.concat(parts, ',') .. '}'
"""
)

# KEYS[1] session hash. ARGV: ttl_ms, then the fields to remove (distinct).
# Returns how many keys existed. The TTL is refreshed when keys remain; a session
# left without keys is deleted.
_REMOVE_LUA = (
    r"""
local names = {'\255'}
for i = 2, #ARGV do names[#names + 1] = ARGV[i] end
"""
    + _LUA_READ
    + r"""
local hdel = {}
local n = 1
for i = 2, #ARGV do
  n = n + 1
  local prev = old[n]
  if prev then
    local f = ARGV[i]
"""
    + _LUA_ELEN
    + r"""
    s = s - el - #prev - 1
    hdel[#hdel + 1] = f
  end
end
if #hdel == 0 then return 0 end
if s <= 0 then
  redis.call('DEL', key)
  return #hdel
end
for j = 1, #hdel, 1000 do
  redis.call('HDEL', key, unpack(hdel, j, math.min(j + 999, #hdel)))
end
redis.call('HSET', key, '\255', s)
redis.call('PEXPIRE', key, ARGV[1])
return #hdel
"""
)


def _import_redis() -> Any:
    try:
        import redis.asyncio
        import redis.exceptions
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ConfigError(_INSTALL_HINT) from exc
    return redis


def _describe_client(client: Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    if kw.get("path"):
        return f"unix://{kw['path']}?db={kw.get('db', 0)}"
    return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def _ttl_ms(ttl: float) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ValueError("ttl must be a positive number of seconds")
    if math.isinf(ttl):
        raise ValueError("ttl must be finite")
    return max(1, math.ceil(ttl * 1000))


class RedisStore:
    """A :class:`~.store.SessionStore` on Redis: one hash per session, atomic merges.

    Example::

        store = RedisStore.from_url("redis://127.0.0.1:6379/0")
        sessions = SessionManager(store=store, secret=shared_secret)
        ...
        await store.aclose()

    Args:
        client: A ``redis.asyncio.Redis`` created with ``decode_responses=False``.
            The store does not close a client it was given; use :meth:`from_url`
            to let the store own (and close) its client and pool.
        prefix: Prepended to the session id to form the hash key.
        timeout: Seconds after which any operation (retries included) gives up
            with ``StoreUnavailable``.

    Raises:
        ConfigError: The ``redis`` package is not installed.
        ValueError: An argument is invalid.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        _owns_client: bool = False,
        _url: str | None = None,
    ) -> None:
        redis = _import_redis()
        if not isinstance(client, redis.asyncio.Redis):
            raise TypeError("client must be a redis.asyncio.Redis")
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        _check_timeout(timeout)
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("client must be created with decode_responses=False")
        self._client: Redis = client
        self._prefix = prefix
        self._timeout = float(timeout)
        self._owns_client = _owns_client
        self._where = redact_url(_url) if _url is not None else _describe_client(client)
        password = client.connection_pool.connection_kwargs.get("password")
        self._password: str | None = password if isinstance(password, str) else None
        exc_mod = redis.exceptions
        self._redis_error: type[BaseException] = exc_mod.RedisError
        self._retryable: tuple[type[BaseException], ...] = (
            exc_mod.ConnectionError,
            exc_mod.TimeoutError,
            OSError,
        )
        # register_script(): EVALSHA, and on NOSCRIPT (a restarted or failed-over
        # server forgot it) SCRIPT LOAD and EVALSHA again, inside redis-py.
        self._merge = client.register_script(_MERGE_LUA)
        self._remove = client.register_script(_REMOVE_LUA)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        pool_size: int = DEFAULT_POOL_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> RedisStore:
        """A store with its own bounded, blocking connection pool.

        At most ``pool_size`` commands are in flight; further callers wait up to
        ``timeout`` for a free connection (redis-py's default pool would raise
        instead). Connect and socket timeouts are ``timeout`` as well, and the
        client itself does not retry (``get`` retries within the deadline).

        Args:
            url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...``
                or ``unix://...``.
            prefix: Prepended to the session id to form the hash key.
            pool_size: Maximum number of connections.
            timeout: Seconds after which any operation gives up.

        Raises:
            ConfigError: The ``redis`` package is not installed.
            ValueError: An argument is invalid.
        """
        redis = _import_redis()
        if not isinstance(url, str) or not url:
            raise ValueError("url must be a non-empty redis://, rediss:// or unix:// URL")
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"url must start with redis://, rediss:// or unix:// (got {redact_url(url)!r})"
            )
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError("pool_size must be a positive int")
        _check_timeout(timeout)
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        try:
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url,
                max_connections=pool_size,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=False,
            )
        except ValueError:
            raise ValueError(f"url is not a valid Redis URL: {redact_url(url)}") from None
        client = redis.asyncio.Redis.from_pool(pool)
        return cls(client, prefix=prefix, timeout=timeout, _owns_client=True, _url=url)

    def __repr__(self) -> str:
        return f"RedisStore(url={self._where!r}, prefix={self._prefix!r}, timeout={self._timeout})"

    @property
    def client(self) -> Redis:
        """The underlying ``redis.asyncio.Redis`` client."""
        return self._client

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return self._prefix

    @property
    def url(self) -> str:
        """Where the store connects, password redacted (safe for logs and messages)."""
        return self._where

    @property
    def timeout(self) -> float:
        """Seconds after which any operation gives up with ``StoreUnavailable``."""
        return self._timeout

    def key(self, session_id: str) -> str:
        """The Redis key of a session's hash."""
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session_id must be a non-empty str")
        return self._prefix + session_id

    # -- failure handling -------------------------------------------------------------

    def _unavailable(self, op: str, exc: BaseException) -> StoreUnavailable:
        detail = str(exc)
        if self._password:
            detail = detail.replace(self._password, "***")
        if len(detail) > 200:
            detail = detail[:200] + "…"
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) and not detail:
            detail = f"no answer within {self._timeout:g} s"
        logger.warning("redis store %s failed at %s: %s", op, self._where, type(exc).__name__)
        return StoreUnavailable(
            f"Redis at {self._where} is unavailable ({op}: {type(exc).__name__}: {detail}); "
            "check that the server is running and reachable"
        )

    async def _run(self, op: str, call: Callable[[], Awaitable[T]], *, attempts: int = 1) -> T:
        """Run ``call`` within the deadline; retry connection failures ``attempts`` times."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                return await _within(call(), deadline)
            except (TimeoutError, asyncio.TimeoutError) as exc:
                raise self._unavailable(op, exc) from exc
            except self._retryable as exc:
                delay = min(_BACKOFF_FIRST * 2 ** (attempt - 1), _BACKOFF_MAX)
                if attempt >= attempts or loop.time() + delay >= deadline:
                    raise self._unavailable(op, exc) from exc
                await asyncio.sleep(delay)
            except self._redis_error as exc:
                raise self._unavailable(op, exc) from exc

    # -- SessionStore -----------------------------------------------------------------

    def _merge_args(
        self,
        fields: Mapping[str, bytes],
        remove: Collection[str],
        ttl: float,
        max_bytes: int,
        want_result: int,
    ) -> list[Any]:
        ttl_ms = _ttl_ms(ttl)
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError("max_bytes must be a non-negative int")
        parts: list[bytes] = []
        lengths: list[int] = []
        for name, value in fields.items():
            if type(name) is not str:
                raise TypeError("fields keys must be str")
            if type(value) is not bytes:
                if not isinstance(value, (bytearray, memoryview)):
                    raise TypeError("fields values must be non-empty compact JSON bytes")
                value = bytes(value)
            if not value:
                raise TypeError("fields values must be non-empty compact JSON bytes")
            encoded = name.encode()
            parts += (encoded, value)
            lengths += (len(encoded), len(value))
        args: list[Any] = [
            max_bytes,
            ttl_ms,
            want_result,
            ",".join(map(str, lengths)),
            b"".join(parts),
        ]
        if remove:
            args += [name for name in dict.fromkeys(remove) if name not in fields]
        return args

    async def merge(
        self,
        session_id: str,
        fields: Mapping[str, bytes],
        *,
        remove: Collection[str] = (),
        ttl: float,
        max_bytes: int,
    ) -> None:
        """Atomically set ``fields``, drop ``remove`` and refresh the TTL (one round trip).

        Raises:
            MetadataTooLarge: The result would exceed ``max_bytes``; nothing changed.
            StoreUnavailable: Redis could not be reached or did not answer in time
                (the write may or may not have been applied).
        """
        key = self.key(session_id)
        args = self._merge_args(fields, remove, ttl, max_bytes, 0)
        size: int = await self._run("merge", lambda: self._merge(keys=[key], args=args))
        if size < 0:
            raise _too_large(-size, max_bytes)

    async def merge_and_get(
        self,
        session_id: str,
        fields: Mapping[str, bytes],
        *,
        remove: Collection[str] = (),
        ttl: float,
        max_bytes: int,
    ) -> dict[str, Any]:
        """:meth:`merge`, returning the resulting session, in the same single round trip.

        The script that merges also reads the hash back (``HGETALL`` after the
        write, inside the same atomic ``EVALSHA``) and returns it as one JSON
        object text, so the result is exactly what ``get`` would return right
        after this merge. Not retried (a merge is not
        idempotent with respect to the TTL and concurrent writers).

        Returns:
            The decoded session after the merge.

        Raises:
            MetadataTooLarge: The result would exceed ``max_bytes``; nothing changed.
            StoreUnavailable: Redis could not be reached or did not answer in time
                (the write may or may not have been applied).
        """
        key = self.key(session_id)
        args = self._merge_args(fields, remove, ttl, max_bytes, 1)
        raw = await self._run("merge", lambda: self._merge(keys=[key], args=args))
        if type(raw) is int:
            raise _too_large(-raw, max_bytes)
        out: dict[str, Any] = orjson.loads(raw)
        return out

    async def get(self, session_id: str) -> dict[str, Any]:
        """A decoded copy of the session (``{}`` if unknown or expired); retried on failure.

        Raises:
            StoreUnavailable: Redis stayed unreachable for the whole ``timeout``.
        """
        key = self.key(session_id)
        raw = await self._run("get", lambda: self._client.hgetall(key), attempts=_GET_ATTEMPTS)
        raw.pop(SIZE_FIELD, None)
        out: dict[str, Any] = {}
        for name, value in raw.items():
            field = name.decode() if isinstance(name, bytes) else name
            out[field] = orjson.loads(value)
        return out

    async def delete(self, session_id: str) -> bool:
        """Remove the session; True if it existed."""
        key = self.key(session_id)
        return bool(await self._run("delete", lambda: self._client.delete(key)))

    async def remove_keys(self, session_id: str, keys: Collection[str], *, ttl: float) -> int:
        """Atomically remove top-level keys; returns how many existed.

        The TTL is refreshed when keys remain; a session left empty is deleted.
        """
        key = self.key(session_id)
        ttl_ms = _ttl_ms(ttl)
        args: list[Any] = [ttl_ms, *dict.fromkeys(keys)]
        if len(args) == 1:
            return 0
        removed: int = await self._run("remove_keys", lambda: self._remove(keys=[key], args=args))
        return removed

    async def touch(self, session_id: str, *, ttl: float) -> bool:
        """Refresh the session's TTL; True if it exists."""
        key = self.key(session_id)
        ttl_ms = _ttl_ms(ttl)
        return bool(await self._run("touch", lambda: self._client.pexpire(key, ttl_ms)))

    async def cleanup(self, *, max_age: float | None = None) -> int:
        """Return 0: Redis expires sessions by their TTL.

        Redis keeps no last-write time per hash, so ``max_age`` cannot select
        sessions here either; sessions still expire ``ttl`` after their last write.
        """
        if max_age is not None and (
            isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or max_age != max_age
        ):
            raise ValueError("max_age must be a number of seconds or None")
        return 0

    async def aclose(self) -> None:
        """Close the client and its pool if this store created them (``from_url``)."""
        if self._owns_client:
            await self._client.aclose()

    async def ping(self) -> bool:
        """True if Redis answers; raises ``StoreUnavailable`` otherwise."""
        return bool(await self._run("ping", lambda: self._client.ping(), attempts=_GET_ATTEMPTS))


def _too_large(size: int, limit: int) -> MetadataTooLarge:
    return MetadataTooLarge(
        f"session metadata would be {size} bytes, over the limit of {limit}; nothing was changed",
        size=size,
        limit=limit,
    )


def _check_timeout(timeout: float) -> None:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout < math.inf
    ):
        raise ValueError("timeout must be a positive, finite number of seconds")


if sys.version_info >= (3, 11):

    async def _within(aw: Awaitable[T], deadline: float) -> T:
        async with asyncio.timeout_at(deadline):
            return await aw

else:  # pragma: no cover - Python 3.10

    async def _within(aw: Awaitable[T], deadline: float) -> T:
        remaining = deadline - asyncio.get_running_loop().time()
        return await asyncio.wait_for(aw, max(remaining, 0.0))
