"""The HTTP edge of ``lk-metadata serve``, between the socket and aiohttp's ``web.Server``:
the per-peer connection cap (429), the header deadline (408), and JSON bodies (no echo,
no traceback, a budgeted log line) for every error aiohttp answers itself."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ..log import logger
from .peers import SharedPeerCounts

__all__ = [
    "SERVER_HEADER",
    "EdgeConfig",
    "EdgeProtocol",
    "edge_runner",
    "error_body",
    "serve_edge",
]

SERVER_HEADER = "lk-metadata"  # the product only, no version

_MAX_PEERS_TRACKED = 4096
_GLOBAL_LOG_FACTOR = 10


class EdgeConfig(BaseModel):
    """Limits applied at the HTTP edge (the ``edge`` section of the server config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header_timeout: float = Field(default=5.0, gt=0, le=300)
    """Seconds a client has to send complete request headers; then 408 and close."""
    body_timeout: float = Field(default=10.0, gt=0, le=3600)
    """Seconds a client has to send the whole body once its headers are in; then 408."""
    keepalive_timeout: float = Field(default=15.0, gt=0, le=3600)
    """Seconds an idle kept-alive connection stays open."""
    max_connections_per_peer: int = Field(default=64, ge=1, le=100_000)
    """Open connections one client address may hold; more are answered 429 and closed."""
    log_burst: int = Field(default=5, ge=0, le=10_000)
    """Edge log lines (malformed requests, deadlines, refusals) per peer per window."""
    log_window: float = Field(default=60.0, gt=0, le=86_400)
    """Seconds of the per-peer log budget's window."""


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


class _EdgeState:
    """What all connections of one server share: open connections per peer, and the log
    budget per peer (and overall) over a fixed window: [start, used, dropped]."""

    def __init__(self, config: EdgeConfig, shared: SharedPeerCounts | None = None) -> None:
        self.config = config
        self.open: dict[str, int] = {}
        self.shared = shared
        self.budgets: OrderedDict[str, list[float]] = OrderedDict()
        self.total: list[float] = [0.0, 0.0, 0.0]

    def admit(self, peer: str) -> bool:
        if self.shared is not None:
            answer = self.shared.admit(peer, self.config.max_connections_per_peer)
            if answer is not None:
                return answer
        count = self.open.get(peer, 0)
        if count >= self.config.max_connections_per_peer:
            return False
        self.open[peer] = count + 1
        return True

    def release(self, peer: str) -> None:
        if peer not in self.open and self.shared is not None:
            self.shared.release(peer)
            return
        count = self.open.get(peer, 0) - 1
        if count > 0:
            self.open[peer] = count
        else:
            self.open.pop(peer, None)

    def log(self, level: int, peer: str, message: str, *args: object) -> None:
        now, burst, window = time.monotonic(), self.config.log_burst, self.config.log_window
        entry = self.budgets.get(peer)
        if entry is None or now - entry[0] >= window:
            if entry is not None and entry[2]:
                logger.warning(
                    "edge: %d log lines for %s were dropped in the last %.0f s",
                    int(entry[2]),
                    peer,
                    window,
                    extra={"peer": peer, "dropped": int(entry[2])},
                )
            entry = self.budgets[peer] = [now, 0.0, 0.0]
            if len(self.budgets) > _MAX_PEERS_TRACKED:
                self.budgets.popitem(last=False)
        self.budgets.move_to_end(peer)
        total = self.total
        if now - total[0] >= window:
            total[:] = [now, 0.0, 0.0]
        if entry[1] >= burst or total[1] >= burst * _GLOBAL_LOG_FACTOR:
            entry[2] += 1
            return
        entry[1] += 1
        total[1] += 1
        logger.log(level, message, *args, extra={"peer": peer})


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _answer_and_close(
    transport: asyncio.Transport, status: int, code: str, message: str, extra: str = ""
) -> None:
    body = error_body(code, message)
    head = (
        f"HTTP/1.1 {status} {_phrase(status)}\r\n"
        f"Server: {SERVER_HEADER}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        f"{extra}"
        "Connection: close\r\n\r\n"
    )
    transport.write(head.encode("ascii") + body)
    transport.close()


def _foreign_error(data: bytes) -> int:
    """The status of an error answer aiohttp made itself (not JSON), else 0."""
    if data[9:10] not in (b"4", b"5") or len(data) < 12:
        return 0
    end = data.find(b"\r\n\r\n")
    head = data[: end if end >= 0 else len(data)]
    if b"\r\nContent-Type: application/json" in head:
        return 0  # the app's own answer
    try:
        return int(data[9:12])
    except ValueError:
        return 0


_CONNECTION: contextvars.ContextVar[EdgeProtocol | None] = contextvars.ContextVar(
    "lk_metadata_edge_connection", default=None
)
"""The edge connection whose aiohttp task is running (set in that task's context)."""

_WAIT_HEAD, _IN_REQUEST, _IDLE = 0, 1, 2
_ERROR_CLASSES = (b"4", b"5")
_HEAD_MAX = 1024  # bytes of an answer's start the edge looks at (status, Content-Type)


class _AiohttpLog:
    """aiohttp's connection logger (an ``AppRunner`` argument): its tracebacks hold the
    request's bytes, so only the exception's class is kept, for the edge's own line."""

    def log(self, level: int, *args: Any, **kw: Any) -> None:
        conn = _CONNECTION.get()
        exc = kw.get("exc_info")
        if conn is not None:
            conn.note_error(level, type(exc).__name__ if isinstance(exc, BaseException) else "-")

    debug = functools.partialmethod(log, logging.DEBUG)
    info = functools.partialmethod(log, logging.INFO)
    warning = functools.partialmethod(log, logging.WARNING)
    error = exception = functools.partialmethod(log, logging.ERROR)

    def isEnabledFor(self, level: int) -> bool:
        return True


class _EdgeTransport(asyncio.Transport):
    """The transport aiohttp writes to: the socket's (every call delegated below), with
    error answers made JSON."""

    __slots__ = ("_conn", "_raw")

    def __init__(self, raw: asyncio.Transport, conn: EdgeProtocol) -> None:
        super().__init__()
        self._raw = raw
        self._conn = conn

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data[:7] == b"HTTP/1.":
            if data[9:10] in _ERROR_CLASSES:
                if not self._conn.answer(bytes(data[:_HEAD_MAX])):
                    return
            elif data[9:10] != b"1":  # 2xx/3xx: the request is answered
                self._conn.answered()
        self._raw.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        chunks = list(list_of_data)
        if (
            chunks
            and chunks[0][:7] == b"HTTP/1."
            and not self._conn.answer(bytes(chunks[0][:_HEAD_MAX]))
        ):
            return
        self._raw.writelines(chunks)


def _delegate(name: str) -> Any:
    def method(self: _EdgeTransport, *args: Any, **kw: Any) -> Any:
        return getattr(self._raw, name)(*args, **kw)

    method.__name__ = name
    return method


for _name in {n for base in asyncio.Transport.__mro__ for n in vars(base) if n[0] != "_"}:
    if _name not in vars(_EdgeTransport):  # every public method but write and writelines
        setattr(_EdgeTransport, _name, _delegate(_name))


class EdgeProtocol(asyncio.Protocol):
    """One connection: the cap, the header deadline and JSON errors around aiohttp's handler,
    which gets every event after the edge's checks, through :class:`_EdgeTransport`."""

    __slots__ = (
        "admitted",
        "edge",
        "error_kind",
        "factory",
        "inner",
        "peer",
        "raw",
        "received",
        "stage",
        "tail",
        "timer",
    )

    def __init__(self, factory: web.Server, edge: _EdgeState) -> None:
        self.factory = factory
        self.edge = edge
        self.inner: asyncio.Protocol | None = None
        self.raw: asyncio.Transport | None = None
        self.peer = "-"
        self.admitted = False
        self.received = 0
        self.stage = _WAIT_HEAD
        self.tail = b""
        self.timer: asyncio.TimerHandle | None = None
        self.error_kind: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports are not asyncio.Transport subclasses.
        transport = cast(asyncio.Transport, transport)
        self.raw = transport
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and peername:
            self.peer = str(peername[0])
        edge = self.edge
        if not edge.admit(self.peer):
            edge.log(
                logging.WARNING,
                self.peer,
                "edge: refused a connection from %s: %d already open",
                self.peer,
                edge.config.max_connections_per_peer,
            )
            _answer_and_close(
                transport,
                429,
                "too_many_connections",
                "too many open connections from this address; retry later",
                "Retry-After: 1\r\n",
            )
            return
        self.admitted = True
        self._arm(True)
        # aiohttp starts the connection's task here; it copies this context, so
        # what the handler logs is attributed to this connection.
        contextvars.copy_context().run(self._start, _EdgeTransport(transport, self))

    def _start(self, transport: _EdgeTransport) -> None:
        _CONNECTION.set(self)
        inner = self.factory()
        self.inner = inner
        inner.connection_made(transport)

    def _arm(self, header_deadline: bool) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None
        if header_deadline:
            self.timer = asyncio.get_running_loop().call_later(
                self.edge.config.header_timeout, self._header_deadline
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(False)
        if self.admitted:
            self.admitted = False
            self.edge.release(self.peer)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.stage != _IN_REQUEST:
            seen = self.tail + data if self.tail else data
            if b"\r\n\r\n" in seen:
                self.stage = _IN_REQUEST
                self.tail = b""
                self._arm(False)
            else:
                self.tail = seen[-3:]
                if self.stage == _IDLE:
                    self.stage = _WAIT_HEAD
                    self._arm(True)
        if self.inner is not None:
            self.inner.data_received(data)

    def _header_deadline(self) -> None:
        self.timer = None
        raw = self.raw
        if self.stage != _WAIT_HEAD or raw is None or raw.is_closing():
            return
        seconds = self.edge.config.header_timeout
        self.edge.log(
            logging.WARNING,
            self.peer,
            "edge: no complete request headers from %s within %g s (%d bytes)",
            self.peer,
            seconds,
            self.received,
        )
        _answer_and_close(
            raw, 408, "request_timeout", f"request headers not received within {seconds:g} s"
        )

    def answered(self) -> None:
        self.stage = _IDLE
        self.tail = b""
        self._arm(False)

    def answer(self, head: bytes) -> bool:
        """An answer starts (``head``: its first bytes): False when the edge answered instead."""
        if head[9:10] == b"1":
            return True  # 100 Continue: the request goes on
        self.answered()
        status = _foreign_error(head)
        if not status:
            return True
        # An error answer aiohttp made itself (text/plain or HTML, it may echo
        # request bytes): the endpoint's JSON instead, then close.
        kind, self.error_kind = self.error_kind or "-", None
        if status < 500:
            text = f"malformed HTTP request ({kind})" if status == 400 else _phrase(status).lower()
            code = "bad_request" if status == 400 else text.replace(" ", "_").replace("-", "_")
            self.edge.log(
                logging.WARNING,
                self.peer,
                "edge: malformed HTTP request from %s (%s, %d bytes)",
                self.peer,
                kind,
                self.received,
            )
        else:
            code, text = "internal", "internal error"
            self.edge.log(logging.ERROR, self.peer, "edge: %d for %s (%s)", status, self.peer, kind)
        raw = self.raw
        if raw is not None and not raw.is_closing():
            _answer_and_close(raw, status, code, text)
        return False

    def note_error(self, level: int, kind: str) -> None:
        """aiohttp logged about this connection: keep the class; log it if no answer follows."""
        self.error_kind = kind
        if level >= logging.WARNING:
            asyncio.get_running_loop().call_soon(self._unanswered_error)

    def _unanswered_error(self) -> None:
        kind = self.error_kind
        if kind is None:
            return  # answer() logged it
        self.error_kind = None
        self.edge.log(
            logging.ERROR, self.peer, "edge: connection error from %s (%s)", self.peer, kind
        )


def edge_runner(app: web.Application, edge: EdgeConfig) -> web.AppRunner:
    return web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=edge.keepalive_timeout,
        logger=_AiohttpLog(),
    )


async def serve_edge(
    runner: web.AppRunner,
    sockets: list[socket.socket],
    edge: EdgeConfig,
    *,
    peer_counts: SharedPeerCounts | None = None,
    backlog: int = 1024,
) -> list[asyncio.Server]:
    """Listen on bound ``sockets`` through the edge (``runner`` set up); close them to stop."""
    factory = runner.server  # aiohttp's documented low-level server: a protocol factory
    if factory is None:
        raise RuntimeError("call runner.setup() first")
    state = _EdgeState(edge, peer_counts)
    loop = asyncio.get_running_loop()
    return [
        await loop.create_server(lambda: EdgeProtocol(factory, state), sock=sock, backlog=backlog)
        for sock in sockets
    ]
