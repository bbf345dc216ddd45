"""Script calls pipelined on one connection: the token endpoint's path to one Redis.

The calls of one event-loop pass go out as one write of ``EVALSHA`` commands (RESP
written here), with no pool checkout, pipeline object or timer per call; each runs
atomically on its own (no transaction). One server or a Sentinel-managed master only
(a Cluster routes per key). Failure handling: :class:`ScriptBatch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any, NamedTuple

__all__ = ["ScriptBatch", "pack_evalsha"]


class _Call(NamedTuple):
    script: Any
    packed: bytes
    future: asyncio.Future[Any]


@dataclasses.dataclass(eq=False, slots=True)
class _Link:
    """One connection and the calls sent on it, oldest first, with their deadlines."""

    conn: Any
    sent: deque[tuple[_Call, float]] = dataclasses.field(default_factory=deque)
    reader: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    broken: bool = False


def pack_evalsha(sha: bytes, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
    """``EVALSHA sha len(keys) *keys *args`` in RESP (what the server reads)."""
    return _pack(b"EVALSHA", sha, len(keys), *keys, *args)


def _pack(*words: Any) -> bytes:
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        kind = type(word)
        if kind is str:
            word = word.encode()
        elif kind is int:
            word = b"%d" % word
        elif kind is float:
            word = repr(word).encode()
        elif kind is not bytes:
            if not isinstance(word, (bytearray, memoryview)):
                name = kind.__name__
                raise TypeError(f"a script argument must be bytes, str, int or float, not {name}")
            word = bytes(word)
        parts.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(parts)


class ScriptBatch:
    """Runs registered scripts (redis-py ``Script`` objects) pipelined on one connection.

    The connection comes from ``client.connection_pool`` and is held until
    :meth:`aclose`. A call not answered within ``timeout`` seconds fails, with every
    call sent after it on the same connection, with ``redis.exceptions.TimeoutError``.
    A script the server forgot (``NOSCRIPT``: a restart, a failover) is loaded once and
    its calls sent again; a broken connection fails its calls and is replaced, and an
    idle one the server closed is replaced before the next batch.
    """

    def __init__(self, client: Any, timeout: float) -> None:
        from redis.exceptions import NoScriptError, ResponseError, TimeoutError as RedisTimeout

        self._client = client
        self._timeout = timeout
        self._pending: list[_Call] = []
        self._link: _Link | None = None
        self._writer: asyncio.Task[None] | None = None
        self._loading: dict[bytes, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._no_script = NoScriptError
        self._response_error = ResponseError
        self._timeout_error = RedisTimeout
        self._closed = False

    def __repr__(self) -> str:
        sent = 0 if self._link is None else len(self._link.sent)
        return f"ScriptBatch(pending={len(self._pending)}, in_flight={sent})"

    def run(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> asyncio.Future[Any]:
        """The script's reply (or its error); a ``TypeError`` for an argument that is not
        bytes, str, int or float (nothing is sent)."""
        packed = pack_evalsha(script.sha.encode(), keys, args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue(_Call(script, packed, future))
        return future

    def _queue(self, call: _Call) -> None:
        if self._closed:
            call.future.set_exception(RuntimeError("ScriptBatch is closed"))
            return
        self._pending.append(call)
        if self._writer is None:
            self._writer = self._spawn(self._write())

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _write(self) -> None:
        """Send what is pending (the calls of this loop pass, and any made meanwhile)."""
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    link = await self._connected()
                except Exception as exc:
                    _fail(batch, exc)
                    continue
                except BaseException:  # cancelled (aclose): no caller is left waiting
                    _fail(batch, RuntimeError("ScriptBatch is closed"))
                    raise
                data = b"".join([call.packed for call in batch])
                deadline = asyncio.get_running_loop().time() + self._timeout
                link.sent.extend((call, deadline) for call in batch)
                if link.reader is None:
                    link.reader = self._spawn(self._read(link))
                if link.timer is None:
                    self._arm(link)
                try:
                    await link.conn.send_packed_command(data, check_health=False)
                except Exception as exc:
                    await self._break(link, exc)
        finally:
            self._writer = None

    async def _connected(self) -> _Link:
        link = self._link
        if link is not None and not link.broken and not link.sent and await _stale(link.conn):
            # Idle and closed by the server (a restart) or holding bytes nobody asked
            # for: the pool's own check at checkout, made before this batch is sent.
            await self._break(link, RuntimeError("stale connection"))
        if link is None or link.broken:
            conn = await asyncio.wait_for(
                self._client.connection_pool.get_connection(), self._timeout
            )
            link = self._link = _Link(conn)
        return link

    async def _read(self, link: _Link) -> None:
        """Match replies to calls, oldest first, while calls wait on this connection."""
        try:
            while link.sent and not link.broken:
                try:
                    reply = await link.conn.read_response(timeout=math.inf)
                except self._response_error as exc:
                    reply = exc
                except Exception as exc:
                    await self._break(link, exc)
                    return
                if not link.sent:
                    return
                call, _ = link.sent.popleft()
                self._answer(call, reply)
        finally:
            link.reader = None

    def _answer(self, call: _Call, reply: Any) -> None:
        if call.future.done():
            return
        if isinstance(reply, self._no_script):
            self._spawn(self._reload(call))
        elif isinstance(reply, Exception):
            call.future.set_exception(reply)
        else:
            call.future.set_result(reply)

    async def _reload(self, call: _Call) -> None:
        """Load a script the server forgot (once for all its calls), then send the call again."""
        sha = call.script.sha.encode()
        loading = self._loading.get(sha)
        if loading is None:  # SCRIPT LOAD on this batch's own connection, ahead of the retry
            loading = asyncio.get_running_loop().create_future()
            self._loading[sha] = loading
            loading.add_done_callback(lambda _: self._loading.pop(sha, None))
            self._queue(_Call(call.script, _pack(b"SCRIPT", b"LOAD", call.script.script), loading))
        try:
            await asyncio.shield(loading)
        except Exception as exc:
            if not call.future.done():
                call.future.set_exception(exc)
            return
        self._queue(call)

    def _arm(self, link: _Link) -> None:
        """The watchdog: at the oldest waiting call's deadline, check it was answered."""
        if link.sent and not link.broken:
            loop = asyncio.get_running_loop()
            link.timer = loop.call_at(link.sent[0][1], self._check, link)
        else:
            link.timer = None

    def _check(self, link: _Link) -> None:
        link.timer = None
        if link.sent and link.sent[0][1] <= asyncio.get_running_loop().time():
            exc = self._timeout_error(f"no answer from Redis within {self._timeout:g} s")
            self._spawn(self._break(link, exc))
        else:
            self._arm(link)

    async def _break(self, link: _Link, exc: BaseException) -> None:
        """Fail every call sent on ``link`` and give its connection back, closed."""
        if link.broken:
            return
        link.broken = True
        if link.timer is not None:
            link.timer.cancel()
            link.timer = None
        calls = [call for call, _ in link.sent]
        link.sent.clear()
        _fail(calls, exc)
        reader = link.reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        with contextlib.suppress(Exception):
            await link.conn.disconnect(nowait=True)
        with contextlib.suppress(Exception):
            await self._client.connection_pool.release(link.conn)

    async def aclose(self) -> None:
        """Fail what is still waiting and give the connection back to the pool."""
        self._closed = True
        pending, self._pending = self._pending, []
        _fail(pending, RuntimeError("ScriptBatch is closed"))
        link, self._link = self._link, None
        if link is not None:
            await self._break(link, RuntimeError("ScriptBatch is closed"))
        for task in list(self._tasks):
            task.cancel()


async def _stale(conn: Any) -> bool:
    """Whether an idle connection was closed or has unread bytes (redis-py's checkout check)."""
    check = getattr(conn, "can_read", None) or conn.can_read_destructive  # redis-py 8 / 5
    try:
        return bool(await check())
    except Exception:
        return True


def _fail(calls: Sequence[_Call], exc: BaseException) -> None:
    for call in calls:
        if not call.future.done():
            call.future.set_exception(exc)
