"""RedisStore: sessions shared by many workers through Redis (the ``redis`` extra).

One hash per session, one field per top-level key plus :data:`SIZE_FIELD`; every write
is one atomic Lua script (``merge.lua``, ``remove.lua`` over ``session.lua``)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast

import orjson

from .._lua import lua_source
from .._util import positive_int, positive_number, redact_url
from ..errors import ConfigError, StoreUnavailable
from ..log import logger
from .redis_url import connect, describe
from .store import SessionWrite, check_max_age, merge_options, too_large

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from typing_extensions import Unpack

    from .store import MergeOptions

    AnyRedis = Redis | RedisCluster

__all__ = ["MERGE_SCRIPT", "REMOVE_SCRIPT", "SESSION_LIBRARY", "RedisStore"]

T = TypeVar("T")

SIZE_FIELD = b"\xff"
"""Reserved hash field holding the sum of entry sizes; 0xFF never occurs in UTF-8."""

DEFAULT_PREFIX = "lkmeta:"
DEFAULT_TIMEOUT = 5.0
DEFAULT_POOL_SIZE = 64
DEFAULT_WAIT_TIMEOUT = 1.0

Durability = Literal["primary", "wait"]
"""``"primary"``: acknowledged by the primary; ``"wait"``: also by at least one replica."""

SESSION_LIBRARY = "sessions/session.lua"
"""The session scripts' shared functions (also used by the endpoint's admission script)."""
MERGE_SCRIPT = lua_source(SESSION_LIBRARY, "sessions/merge.lua")
REMOVE_SCRIPT = lua_source(SESSION_LIBRARY, "sessions/remove.lua")

_GET_ATTEMPTS = 4
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 0.5


def _import_redis() -> Any:
    try:
        import redis.asyncio
        import redis.exceptions
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ConfigError(
            'RedisStore needs the redis extra: pip install "livekit-plugins-metadata[redis]"'
        ) from exc
    return redis


def _seconds(value: float, name: str) -> float:
    return positive_number(value, name, "number of seconds")


def _ttl_ms(ttl: float) -> int:
    return max(1, math.ceil(_seconds(ttl, "ttl") * 1000))


class RedisStore:
    """A :class:`~.store.SessionStore` on Redis (README, "Many workers: Redis").

    ``client`` (``decode_responses=False``) is not closed by the store; :meth:`from_url`
    makes one owning its client. Any operation, retries included, raises
    ``StoreUnavailable`` after ``timeout`` seconds. ``durability="wait"`` (README,
    "Durability"): a write also waits up to ``wait_timeout`` (default 1 s) for a replica.
    """

    def __init__(
        self,
        client: AnyRedis,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        durability: Durability = "primary",
        wait_timeout: float | None = None,
    ) -> None:
        redis = _import_redis()
        if not isinstance(client, (redis.asyncio.Redis, redis.asyncio.RedisCluster)):
            raise TypeError("client must be a redis.asyncio.Redis or RedisCluster")
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        _seconds(timeout, "timeout")
        if durability not in ("primary", "wait"):
            raise ValueError('durability must be "primary" or "wait"')
        if wait_timeout is None:
            wait_timeout = min(DEFAULT_WAIT_TIMEOUT, timeout)
        if _seconds(wait_timeout, "wait_timeout") > timeout:
            raise ValueError("wait_timeout must not exceed timeout")
        if client.get_encoder().decode_responses:
            raise ValueError("client must be created with decode_responses=False")
        self.client: Final[AnyRedis] = client
        self._cluster = isinstance(client, redis.asyncio.RedisCluster)
        self.prefix: Final = prefix
        self.timeout: Final = float(timeout)
        self.durability: Final[Durability] = durability
        """What an acknowledged write promises."""
        self._wait_ms = max(1, math.ceil(wait_timeout * 1000))
        self._owned: list[Any] = []  # what aclose() closes: from_url's client and Sentinels
        self._gate: asyncio.Semaphore | None = None
        # Concurrent first commands on a RedisCluster race inside redis-py while it
        # learns the topology: every call first awaits initialize() (a no-op later).
        self._prepare = client.initialize if self._cluster else None
        self.url = describe(client)
        """Where the store connects, password redacted (safe for logs and messages)."""
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
        # register_script(): EVALSHA, on NOSCRIPT SCRIPT LOAD and EVALSHA again. SINGLE-SLOT
        # INVARIANT: every script and command here touches exactly one key, the session's
        # hash, so on a Redis Cluster each call runs on the one node owning its slot.
        self._merge = client.register_script(MERGE_SCRIPT)
        self._remove = client.register_script(REMOVE_SCRIPT)

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
        """A store owning its client for a ``redis://``, ``rediss://``, ``unix://``,
        ``redis+cluster://`` or ``redis+sentinel://`` URL (README, "Scaling out"), with at
        most ``pool_size`` commands in flight (per node); further callers wait."""
        _import_redis()
        positive_int(pool_size, "pool_size")
        _seconds(timeout, "timeout")
        connection = connect(url, pool_size, timeout)
        store = cls(
            connection.client,
            prefix=prefix,
            timeout=timeout,
            durability=durability,
            wait_timeout=wait_timeout,
        )
        store._owned = [connection.client, *connection.also_close]
        if connection.gate is not None:  # Cluster and Sentinel pools raise when full
            store._gate = asyncio.Semaphore(connection.gate)
        store.url = redact_url(url)
        return store

    def __repr__(self) -> str:
        return f"RedisStore(url={self.url!r}, prefix={self.prefix!r}, timeout={self.timeout})"

    def key(self, session_id: str) -> str:
        """The Redis key of a session's hash."""
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session_id must be a non-empty str")
        return self.prefix + session_id

    def merge_arguments(self, write: SessionWrite) -> tuple[str, list[Any]]:
        """The hash key and ``merge.lua``'s ``ARGV`` for ``write``, for a caller running the
        same merge inside a larger script (the endpoint's admission)."""
        args = self._merge_args(write.fields, (), write.ttl, write.max_bytes, 0)
        return self.key(write.key), args

    def _unavailable(self, op: str, exc: BaseException) -> StoreUnavailable:
        detail = str(exc)
        if self._password:
            detail = detail.replace(self._password, "***")
        if len(detail) > 200:
            detail = detail[:200] + "…"
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) and not detail:
            detail = f"no answer within {self.timeout:g} s"
        logger.warning("redis store %s failed at %s: %s", op, self.url, type(exc).__name__)
        return StoreUnavailable(
            f"Redis at {self.url} is unavailable ({op}: {type(exc).__name__}: {detail}); "
            "check that the server is running and reachable"
        )

    async def _run(self, op: str, call: Callable[[], Awaitable[T]], *, attempts: int = 1) -> T:
        """Run ``call`` within the deadline; retry connection failures ``attempts`` times."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                plain = self._gate is None and self._prepare is None
                aw = call() if plain else self._gated(call)
                return await asyncio.wait_for(aw, max(deadline - loop.time(), 0.0))
            except (TimeoutError, asyncio.TimeoutError) as exc:
                raise self._unavailable(op, exc) from exc
            except self._retryable as exc:
                delay = min(_BACKOFF_FIRST * 2 ** (attempt - 1), _BACKOFF_MAX)
                if attempt >= attempts or loop.time() + delay >= deadline:
                    raise self._unavailable(op, exc) from exc
                await asyncio.sleep(delay)
            except self._redis_error as exc:
                raise self._unavailable(op, exc) from exc

    async def _gated(self, call: Callable[[], Awaitable[T]]) -> T:
        async with self._gate or contextlib.nullcontext():
            if self._prepare is not None:
                await self._prepare()
            return await call()

    async def _waited(self, key: str, queue: Callable[[Any], Any]) -> Any:
        """The write ``queue`` adds, then ``WAIT 1`` on the same connection (the one whose
        writes it counts), in one pipeline. Scripts go as ``EVAL`` (a pipelined ``EVALSHA``
        costs redis-py a round trip); on a cluster ``WAIT`` goes to the node owning ``key``."""
        client: Any = self.client  # Redis or RedisCluster: their pipelines differ
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
                try:
                    await client.nodes_manager.initialize()
                except Exception:  # best effort: the caller is already failing
                    logger.debug("redis cluster topology refresh failed", exc_info=False)
            raise
        reply, acked = replies
        if acked < 1 and not (type(reply) is int and reply <= 0):  # 0 or less: nothing written
            raise StoreUnavailable(
                f"Redis at {self.url} applied the write but no replica confirmed it "
                f"within {self._wait_ms} ms (durability='wait'); it may be lost if the "
                "primary fails now"
            )
        return reply

    async def _command(self, op: str, key: str, send: Callable[[Any], Any]) -> Any:
        if self.durability == "wait":
            return await self._run(op, lambda: self._waited(key, send))
        return await self._run(op, lambda: send(self.client))

    async def _script(self, script: Any, key: str, args: list[Any]) -> Any:
        if self.durability == "primary":
            return await script(keys=[key], args=args)
        return await self._waited(key, lambda pipe: pipe.eval(script.script, 1, key, *args))

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
            if not isinstance(value, (bytes, bytearray, memoryview)) or not value:
                raise TypeError("fields values must be non-empty compact JSON bytes")
            encoded, value = name.encode(), bytes(value)
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
        self, session_id: str, fields: Mapping[str, bytes], **options: Unpack[MergeOptions]
    ) -> None:
        """One round trip; on ``StoreUnavailable`` the write may or may not have been applied."""
        await self._merged(session_id, fields, options, "merge")

    async def _merged(
        self, session_id: str, fields: Mapping[str, bytes], options: MergeOptions, method: str
    ) -> Any:
        remove, ttl, max_bytes = merge_options(options, method)
        key = self.key(session_id)
        args = self._merge_args(fields, remove, ttl, max_bytes, int(method != "merge"))
        reply = await self._run("merge", lambda: self._script(self._merge, key, args))
        if type(reply) is int and reply < 0:
            raise too_large(-reply, max_bytes)
        return reply

    async def merge_and_get(
        self, session_id: str, fields: Mapping[str, bytes], **options: Unpack[MergeOptions]
    ) -> dict[str, Any]:
        """:meth:`merge` and the session it left, in the same script. Not retried."""
        reply = await self._merged(session_id, fields, options, "merge_and_get")
        return cast("dict[str, Any]", orjson.loads(reply))

    async def get(self, session_id: str) -> dict[str, Any]:
        """A decoded copy (``{}`` if unknown or expired); retried within ``timeout``."""
        key = self.key(session_id)
        raw = await self._run("get", lambda: self.client.hgetall(key), attempts=_GET_ATTEMPTS)
        raw.pop(SIZE_FIELD, None)
        return {
            (n.decode() if isinstance(n, bytes) else n): orjson.loads(v) for n, v in raw.items()
        }

    async def delete(self, session_id: str) -> bool:
        key = self.key(session_id)
        return bool(await self._command("delete", key, lambda c: c.delete(key)))

    async def remove_keys(self, session_id: str, keys: Collection[str], *, ttl: float) -> int:
        key = self.key(session_id)
        args: list[Any] = [_ttl_ms(ttl), *dict.fromkeys(keys)]
        if len(args) == 1:
            return 0
        return int(await self._run("remove_keys", lambda: self._script(self._remove, key, args)))

    async def touch(self, session_id: str, *, ttl: float) -> bool:
        key = self.key(session_id)
        ttl_ms = _ttl_ms(ttl)
        return bool(await self._command("touch", key, lambda c: c.pexpire(key, ttl_ms)))

    async def cleanup(self, *, max_age: float | None = None) -> int:
        """0: Redis expires sessions itself and keeps no last-write time for ``max_age``."""
        check_max_age(max_age)
        return 0

    async def aclose(self) -> None:
        """Close the client and its pool if this store created them (``from_url``)."""
        for owned in self._owned:
            await owned.aclose()

    async def ping(self) -> bool:
        """True if Redis answers; raises ``StoreUnavailable`` otherwise."""
        return bool(await self._run("ping", lambda: self.client.ping(), attempts=_GET_ATTEMPTS))
