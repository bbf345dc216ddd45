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
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import unquote

import orjson

from .._util import positive_int, positive_number, redact_url
from ..errors import ConfigError, MetadataTooLarge, StoreUnavailable
from ..log import logger

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    AnyRedis = Redis | RedisCluster

__all__ = ["RedisStore"]

T = TypeVar("T")

_INSTALL_HINT = 'RedisStore needs the redis extra: pip install "livekit-plugins-metadata[redis]"'

#: Reserved hash field holding the sum of entry sizes; 0xFF never occurs in UTF-8.
SIZE_FIELD = b"\xff"

DEFAULT_PREFIX = "lkmeta:"
DEFAULT_TIMEOUT = 5.0
DEFAULT_POOL_SIZE = 64
DEFAULT_WAIT_TIMEOUT = 1.0

Durability = Literal["primary", "wait"]
"""``"primary"``: acknowledged by the primary; ``"wait"``: also by at least one replica."""

_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "redis+sentinel")
_SCHEMES_TEXT = "redis://, rediss://, unix://, redis+cluster:// or redis+sentinel://"

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


def _describe_client(client: AnyRedis) -> str:
    nodes = getattr(getattr(client, "nodes_manager", None), "startup_nodes", None)
    if nodes:  # a RedisCluster
        return "redis+cluster://" + ",".join(sorted(nodes))
    kw = client.get_connection_kwargs()
    if kw.get("path"):
        return f"unix://{kw['path']}?db={kw.get('db', 0)}"
    return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def _split_hosts(
    url: str, default_port: int
) -> tuple[str | None, str | None, list[tuple[str, int]], str]:
    """Parse ``scheme://[[user]:password@]host[:port][,host[:port]...][/path]``.

    Returns the user name, the password (both percent-decoded), the hosts and the
    path without its leading ``/``. Raises ``ValueError`` (with no password in it).
    """
    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    if "?" in netloc or "?" in path or "#" in rest:
        raise ValueError("query strings and fragments are not supported in this URL form")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:  # as redis-py reads redis://user:password@host
        user, sep, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        if item.startswith("["):
            host, _, tail = item[1:].partition("]")
            port_text = tail[1:] if tail.startswith(":") else ""
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ValueError("every host needs a name")
        port = int(port_text) if port_text else default_port
        if not 0 < port < 65536:
            raise ValueError("port out of range")
        hosts.append((host, port))
    return username, password, hosts, path


def _no_retry() -> Any:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def _single_client(url: str, pool_size: int, timeout: float) -> AnyRedis:
    """``redis://``, ``rediss://``, ``unix://``: a bounded, blocking pool."""
    import redis.asyncio

    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=_no_retry(),
        decode_responses=False,
    )
    return redis.asyncio.Redis.from_pool(pool)


def _cluster_client(url: str, pool_size: int, timeout: float) -> AnyRedis:
    """``redis+cluster://``: redis-py's own ``RedisCluster`` (it does all the routing)."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    username, password, hosts, path = _split_hosts(url, 6379)
    if path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in hosts],
        username=username,
        password=password,
        max_connections=pool_size,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=_no_retry(),
        decode_responses=False,
    )


def _sentinel_client(url: str, pool_size: int, timeout: float) -> tuple[AnyRedis, list[Any]]:
    """``redis+sentinel://``: the master of a service, found (and re-found) by redis-py's Sentinel."""
    from redis.asyncio.sentinel import Sentinel

    username, password, hosts, path = _split_hosts(url, 26379)
    service, _, db_text = path.strip("/").partition("/")
    if not service or "/" in db_text:
        raise ValueError("the path must be /service_name or /service_name/db")
    db = int(db_text) if db_text else 0
    socket_kwargs = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts,
        sentinel_kwargs=dict(socket_kwargs),
        username=username,
        password=password,
        db=db,
        retry=_no_retry(),
        **socket_kwargs,
    )
    client = sentinel.master_for(service, max_connections=pool_size, decode_responses=False)
    return client, list(sentinel.sentinels)


def _ttl_ms(ttl: float) -> int:
    return max(1, math.ceil(positive_number(ttl, "ttl", "number of seconds") * 1000))


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
        durability: What an acknowledged write promises (see below).
        wait_timeout: With ``durability="wait"``: how long a write waits for a
            replica (at most ``timeout``; default 1 s or ``timeout`` if shorter).

    Durability (Redis replicates asynchronously):

    * ``"primary"`` (default): a write returns once the primary applied it. If
      the primary then dies before a replica copied it, the replica that takes
      over does not have it: an acknowledged write can be lost in a failover
      (measured in ``tests/test_redis_failover.py``).
    * ``"wait"``: a write returns only after ``WAIT 1`` confirmed that at least
      one replica has it, in the same round trip; if none confirms within
      ``wait_timeout`` it raises ``StoreUnavailable`` (the write may or may not
      survive). Sentinel and Cluster promote the most up-to-date replica, so a
      confirmed write survives the failover of its primary. It does not survive
      losing the primary *and* that replica, and a server without replicas
      refuses every write. Reads are unchanged.

    Raises:
        ConfigError: The ``redis`` package is not installed.
        ValueError: An argument is invalid.
    """

    def __init__(
        self,
        client: AnyRedis,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        durability: Durability = "primary",
        wait_timeout: float | None = None,
        _owns_client: bool = False,
        _url: str | None = None,
        _gate: int | None = None,
        _also_close: Collection[Any] = (),
    ) -> None:
        redis = _import_redis()
        from redis.asyncio.cluster import RedisCluster

        if not isinstance(client, (redis.asyncio.Redis, RedisCluster)):
            raise TypeError("client must be a redis.asyncio.Redis or RedisCluster")
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        _check_timeout(timeout)
        if durability not in ("primary", "wait"):
            raise ValueError('durability must be "primary" or "wait"')
        if wait_timeout is None:
            wait_timeout = min(DEFAULT_WAIT_TIMEOUT, timeout)
        _check_timeout(wait_timeout)
        if wait_timeout > timeout:
            raise ValueError("wait_timeout must not exceed timeout")
        if client.get_encoder().decode_responses:
            raise ValueError("client must be created with decode_responses=False")
        self._client: AnyRedis = client
        self._cluster = isinstance(client, RedisCluster)
        self._prefix = prefix
        self._timeout = float(timeout)
        self._durability: Durability = durability
        self._wait_ms = max(1, math.ceil(wait_timeout * 1000))
        self._owns_client = _owns_client
        self._also_close = list(_also_close)
        self._gate = asyncio.Semaphore(_gate) if _gate is not None else None
        # RedisCluster learns the topology on first use, but concurrent first
        # commands race inside redis-py (connections closed under them): every
        # call first awaits initialize(), a lock-guarded no-op once it is known.
        self._prepare: Callable[[], Awaitable[Any]] | None = (
            client.initialize if isinstance(client, RedisCluster) else None
        )
        self._where = redact_url(_url) if _url is not None else _describe_client(client)
        password = client.get_connection_kwargs().get("password")
        self._password: str | None = password if isinstance(password, str) else None
        exc_mod = redis.exceptions
        # RedisClusterException (no reachable node, slot not covered) is no RedisError.
        self._redis_error: tuple[type[BaseException], ...] = (
            exc_mod.RedisError,
            exc_mod.RedisClusterException,
        )
        self._retryable: tuple[type[BaseException], ...] = (
            exc_mod.ConnectionError,
            exc_mod.RedisClusterException,
            exc_mod.TimeoutError,
            exc_mod.ClusterError,
            exc_mod.TryAgainError,
            exc_mod.ReadOnlyError,
            OSError,
        )
        # register_script(): EVALSHA, and on NOSCRIPT (a restarted or failed-over
        # server forgot it) SCRIPT LOAD and EVALSHA again, inside redis-py.
        # SINGLE-SLOT INVARIANT: every script and command this store sends touches
        # exactly one key, the session's hash (KEYS[1]); nothing else is read or
        # written. So each session lives in one hash slot, and every call runs on
        # the one Redis Cluster node that owns it, with no cross-slot operation.
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
        durability: Durability = "primary",
        wait_timeout: float | None = None,
    ) -> RedisStore:
        """A store that owns its client: one server, a Redis Cluster, or a Sentinel-managed master.

        URL forms:

        * ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
          ``unix://[[user]:password@]/path/to/socket[?db=N]``: one server.
        * ``redis+cluster://[[user]:password@]host:port[,host:port...]``: a Redis
          Cluster, reached through redis-py's ``RedisCluster`` from these startup
          nodes (any reachable subset of the cluster will do); database 0 only.
        * ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]``:
          the master of ``service_name`` as the Sentinels at these addresses
          (default port 26379) report it, through redis-py's ``Sentinel``; after a
          failover the client follows the new master. The credentials are those
          of the Redis servers; the Sentinels themselves are reached without.

        At most ``pool_size`` commands are in flight (per node on a cluster);
        further callers wait up to ``timeout`` for a free connection (redis-py's
        default pools would raise instead). Connect and socket timeouts are
        ``timeout`` as well, and the client itself does not retry (``get``
        retries within the deadline).

        Args:
            url: One of the forms above.
            prefix: Prepended to the session id to form the hash key.
            pool_size: Maximum number of connections.
            timeout: Seconds after which any operation gives up.
            durability: ``"primary"`` (default) or ``"wait"``; see the class docs.
            wait_timeout: With ``durability="wait"``, how long a write waits for a
                replica's acknowledgement before raising ``StoreUnavailable``.

        Raises:
            ConfigError: The ``redis`` package is not installed.
            ValueError: An argument is invalid (the message never shows the password).
        """
        _import_redis()
        if not isinstance(url, str) or not url:
            raise ValueError(f"url must be a non-empty URL of the forms: {_SCHEMES_TEXT}")
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in _SCHEMES:
            raise ValueError(f"url must start with {_SCHEMES_TEXT} (got {redact_url(url)!r})")
        positive_int(pool_size, "pool_size")
        _check_timeout(timeout)
        also_close: list[Any] = []
        try:
            if scheme == "redis+cluster":
                client = _cluster_client(url, pool_size, timeout)
            elif scheme == "redis+sentinel":
                client, also_close = _sentinel_client(url, pool_size, timeout)
            else:
                client = _single_client(url, pool_size, timeout)
        except ValueError as exc:
            reason = str(exc) if scheme in ("redis+cluster", "redis+sentinel") else "bad form"
            raise ValueError(
                f"url is not a valid Redis URL ({reason}): {redact_url(url)}"
            ) from None
        return cls(
            client,
            prefix=prefix,
            timeout=timeout,
            durability=durability,
            wait_timeout=wait_timeout,
            _owns_client=True,
            _url=url,
            # Cluster and Sentinel pools raise when full: a gate bounds them instead.
            _gate=pool_size if scheme in ("redis+cluster", "redis+sentinel") else None,
            _also_close=also_close,
        )

    def __repr__(self) -> str:
        return f"RedisStore(url={self._where!r}, prefix={self._prefix!r}, timeout={self._timeout})"

    @property
    def client(self) -> AnyRedis:
        """The underlying ``redis.asyncio.Redis`` or ``RedisCluster`` client."""
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
                if self._gate is None and self._prepare is None:
                    return await _within(call(), deadline)
                return await _within(_gated(self._gate, call, self._prepare), deadline)
            except (TimeoutError, asyncio.TimeoutError) as exc:
                raise self._unavailable(op, exc) from exc
            except self._retryable as exc:
                delay = min(_BACKOFF_FIRST * 2 ** (attempt - 1), _BACKOFF_MAX)
                if attempt >= attempts or loop.time() + delay >= deadline:
                    raise self._unavailable(op, exc) from exc
                await asyncio.sleep(delay)
            except self._redis_error as exc:
                raise self._unavailable(op, exc) from exc

    async def _waited(self, key: str, queue: Callable[[Any], Any]) -> Any:
        """``durability="wait"``: the write ``queue`` adds, then ``WAIT 1``, on one connection.

        ``WAIT`` counts the replicas that have the writes made *on its own
        connection*, so both go in one pipeline (one round trip). Scripts go as
        ``EVAL`` here: a pipelined ``EVALSHA`` would make redis-py check the script
        cache with an extra round trip on every call. On a cluster the ``WAIT``
        is pinned to the node that owns the key, which is where the write goes.
        """
        client: Any = self._client  # Redis or RedisCluster: their pipelines differ
        pipe = client.pipeline(transaction=False)
        queue(pipe)
        try:
            if self._cluster:
                node = client.get_node_from_key(key)
                pipe.execute_command("WAIT", 1, self._wait_ms, target_nodes=node)
                replies = await pipe.execute(raise_on_error=False, allow_redirections=False)
            else:
                pipe.execute_command("WAIT", 1, self._wait_ms)
                replies = await pipe.execute(raise_on_error=False)
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise reply
        except self._redis_error:
            if self._cluster:  # a moved slot or a dead node: learn the topology again
                await _quietly(client.nodes_manager.initialize())
            raise
        reply, acked = replies
        if acked < 1 and not (type(reply) is int and reply <= 0):  # 0 or less: nothing written
            raise StoreUnavailable(
                f"Redis at {self._where} applied the write but no replica confirmed it "
                f"within {self._wait_ms} ms (durability='wait'); it may be lost if the "
                "primary fails now"
            )
        return reply

    async def _script(self, script: Any, key: str, args: list[Any]) -> Any:
        if self._durability == "primary":
            return await script(keys=[key], args=args)
        return await self._waited(key, lambda pipe: pipe.eval(script.script, 1, key, *args))

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
        positive_int(max_bytes, "max_bytes", low=0)
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
        size: int = await self._run("merge", lambda: self._script(self._merge, key, args))
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
        raw = await self._run("merge", lambda: self._script(self._merge, key, args))
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
        if self._durability == "wait":
            deleted = await self._run("delete", lambda: self._waited(key, lambda p: p.delete(key)))
            return bool(deleted)
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
        if self._durability == "wait":
            touched = await self._run(
                "touch", lambda: self._waited(key, lambda p: p.pexpire(key, ttl_ms))
            )
            return bool(touched)
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
            for extra in self._also_close:
                await extra.aclose()

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
    positive_number(timeout, "timeout", "number of seconds")


async def _gated(
    gate: asyncio.Semaphore | None,
    call: Callable[[], Awaitable[T]],
    prepare: Callable[[], Awaitable[Any]] | None,
) -> T:
    """``call()`` holding a place in ``gate`` (if any), after ``prepare()`` (if any)."""
    if gate is None:
        if prepare is not None:
            await prepare()
        return await call()
    async with gate:
        return await _gated(None, call, prepare)


async def _quietly(aw: Awaitable[Any]) -> None:
    try:
        await aw
    except Exception:  # best effort: the caller is already failing with the real error
        logger.debug("redis cluster topology refresh failed", exc_info=False)


if sys.version_info >= (3, 11):

    async def _within(aw: Awaitable[T], deadline: float) -> T:
        async with asyncio.timeout_at(deadline):
            return await aw

else:  # pragma: no cover - Python 3.10

    async def _within(aw: Awaitable[T], deadline: float) -> T:
        remaining = deadline - asyncio.get_running_loop().time()
        return await asyncio.wait_for(aw, max(remaining, 0.0))
