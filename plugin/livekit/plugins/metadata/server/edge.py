"""The HTTP process edge: what happens to bytes before (and around) the application.

aiohttp parses each request before any middleware runs. Left alone it logs a
rejected request at ERROR with a traceback holding the raw bytes (a bearer key,
a metadata value), answers with a ``text/plain`` 400 echoing them, waits for a
slow sender indefinitely and names its own and Python's version in ``Server``.
This module puts a thin layer between the socket and the app:

* **Malformed requests** (request line, headers, chunked framing) get the same
  ``{"error": {"code", "message"}}`` JSON 400 as every other error; the log
  line names the error class, the peer and a byte count, never the bytes. Any
  other error answer made outside the app's middleware (aiohttp's ``Expect``
  handling echoes the header) is replaced by the JSON body of its status.
* **Read deadlines.** A request's headers must be complete ``header_timeout``
  seconds after the connection opened (or after its first byte, on a kept-alive
  connection); its body ``body_timeout`` seconds after the headers. Either miss
  is answered 408 with a JSON body and the connection is closed.
* **Connections per peer** are capped: a connection over the cap is answered
  ``429 too_many_connections`` (JSON, ``Retry-After: 1``) and closed at once,
  before any request byte is read. With ``--workers N`` the count lives in
  memory shared by every worker (:class:`SharedPeerCounts`), so the cap holds
  for the whole server, not per process.
* **Bounded error logging.** At most ``log_burst`` edge log lines per peer per
  ``log_window`` seconds (and ten times that over all peers); what is dropped is
  counted in one summary line when the window turns.
* **``Server: lk-metadata``** on every answer, no versions.

Serve an app through :class:`EdgeRunner` (what ``lk-metadata serve`` does) to get
all of this; :class:`EdgeConfig` is the ``edge`` section of the server config.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import logging
import multiprocessing
import time
from collections import OrderedDict
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_parser import HttpRequestParser
from aiohttp.web_request import BaseRequest
from pydantic import BaseModel, ConfigDict, Field

from .._util import positive_int
from ..log import logger

__all__ = ["SERVER_HEADER", "EdgeConfig", "EdgeRunner", "SharedPeerCounts", "error_body"]

SERVER_HEADER = "lk-metadata"
"""The ``Server`` header of every answer: the product only, no version."""

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
    """The JSON error body every answer of the endpoint uses."""
    return orjson.dumps({"error": {"code": code, "message": message}})


# --------------------------------------------------------------------------- shared state


class _LogBudget:
    """Per-peer (and overall) log line budget over a fixed window."""

    def __init__(self, burst: int, window: float) -> None:
        self._burst = burst
        self._window = window
        self._peers: OrderedDict[str, list[float]] = OrderedDict()
        self._total: list[float] = [0.0, 0.0, 0.0]

    def allow(self, peer: str, now: float) -> tuple[bool, int]:
        """Whether one more line may be logged for ``peer``; and lines dropped before it."""
        dropped = 0
        entry = self._peers.get(peer)
        if entry is None or now - entry[0] >= self._window:
            dropped = int(entry[2]) if entry is not None else 0
            entry = [now, 0.0, 0.0]
            self._peers[peer] = entry
            if len(self._peers) > _MAX_PEERS_TRACKED:
                self._peers.popitem(last=False)
        self._peers.move_to_end(peer)
        total = self._total
        if now - total[0] >= self._window:
            total[:] = [now, 0.0, 0.0]
        if entry[1] >= self._burst or total[1] >= self._burst * _GLOBAL_LOG_FACTOR:
            entry[2] += 1
            return False, dropped
        entry[1] += 1
        total[1] += 1
        return True, dropped


class SharedPeerCounts:
    """Open connections per peer, counted in memory every forked worker shares.

    Made in the parent before the workers are forked (``lk-metadata serve
    --workers N``); each worker's edge admits and releases connections here, so
    ``max_connections_per_peer`` holds for the whole server. The table is a fixed
    open-addressing hash of ``slots`` entries (peer digest, count) behind one
    process-shared lock; a peer that finds no free entry within a few probes (more
    than ``slots`` distinct peers at once) is counted by its worker alone.
    """

    _PROBES = 32

    def __init__(self, slots: int = 1 << 16) -> None:
        positive_int(slots, "slots")
        ctx = multiprocessing.get_context("fork")
        self._slots = slots
        self._keys = ctx.RawArray(ctypes.c_uint64, slots)
        self._counts = ctx.RawArray(ctypes.c_int64, slots)
        self._lock = ctx.Lock()

    @staticmethod
    def _digest(peer: str) -> int:
        h = int.from_bytes(hashlib.blake2b(peer.encode(), digest_size=8).digest(), "big")
        return h or 1  # 0 marks a never-used entry

    def _find(self, key: int, claim: bool) -> int | None:
        keys, counts, n = self._keys, self._counts, self._slots
        free = None
        for i in range(self._PROBES):
            at = (key + i) % n
            k = keys[at]
            if k == key:
                return at
            if free is None and counts[at] == 0:
                free = at
            if k == 0:
                break
        if claim and free is not None:
            keys[free] = key
            return free
        return None

    def admit(self, peer: str, cap: int) -> bool | None:
        """One more connection for ``peer`` unless ``cap`` are open (None: no entry)."""
        key = self._digest(peer)
        with self._lock:
            at = self._find(key, claim=True)
            if at is None:
                return None
            if self._counts[at] >= cap:
                return False
            self._counts[at] += 1
            return True

    def release(self, peer: str) -> None:
        """One connection of ``peer`` closed."""
        key = self._digest(peer)
        with self._lock:
            at = self._find(key, claim=False)
            if at is not None and self._counts[at] > 0:
                self._counts[at] -= 1


class _EdgeState:
    """What all connections of one server share: open connections per peer, the log budget."""

    def __init__(self, config: EdgeConfig, shared: SharedPeerCounts | None = None) -> None:
        self.config = config
        self.open: dict[str, int] = {}
        self.shared = shared
        self.budget = _LogBudget(config.log_burst, config.log_window)

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
        """Log one static-format edge line for ``peer`` if its budget allows."""
        allowed, dropped = self.budget.allow(peer, time.monotonic())
        if dropped:
            logger.warning(
                "edge: %d log lines for %s were dropped in the last %.0f s",
                dropped,
                peer,
                self.config.log_window,
                extra={"peer": peer, "dropped": dropped},
            )
        if allowed:
            logger.log(level, message, *args, extra={"peer": peer})


# --------------------------------------------------------------------------- signals


class _BadBody(web.HTTPBadRequest):
    """Raised from ``request.read()`` when the body's framing is broken.

    aiohttp puts its parser's message (which may quote body bytes) into the
    exception; this one carries only a fixed reason, which the app answers as a
    JSON 400 like any other ``HTTPException``.
    """

    def __init__(self, *_detail: object) -> None:
        super().__init__(reason="malformed request body")


class _BodyTimeout(web.HTTPRequestTimeout):
    """Raised from ``request.read()`` when the body missed its deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(reason=f"request body not received within {seconds:g} s")


class _ClientGone(web.HTTPBadRequest):
    """Raised from ``request.read()`` when the client closed before the body was complete."""

    def __init__(self) -> None:
        super().__init__(reason="connection closed before the request body was complete")


_SIGNALS = (_BadBody, _BodyTimeout, _ClientGone)


def _status_code(status: int) -> str:
    """``417`` -> ``expectation_failed``: the error code for a status the app did not answer."""
    return _phrase(status).replace(" ", "_").replace("-", "_")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


def _json_answer(status: int, code: str, message: str) -> web.Response:
    resp = web.Response(status=status, body=error_body(code, message))
    resp.content_type = "application/json"
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Server"] = SERVER_HEADER
    return resp


def _raw_answer(status: int, code: str, message: str, extra: str = "") -> bytes:
    body = error_body(code, message)
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Server: {SERVER_HEADER}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        f"{extra}"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


# --------------------------------------------------------------------------- protocol


class _EdgeHandler(web.RequestHandler):
    """aiohttp's connection protocol with deadlines, a per-peer cap and sanitized errors."""

    def __init__(self, manager: web.Server, *, edge: _EdgeState, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._edge = edge
        self._peer = "-"
        self._admitted = False
        self._received = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_mark = 0
        self._body_timer: asyncio.TimerHandle | None = None
        self._open_body: Any = None
        self._timed_out = False
        # The same parser aiohttp builds, except that broken body framing raises
        # _BadBody (a JSON 400 through the app) instead of a message-carrying error.
        self._parser = HttpRequestParser(
            self,
            kwargs["loop"],
            self._read_bufsize,
            max_line_size=self.max_line_size,
            max_field_size=self.max_field_size,
            max_headers=self.max_headers,
            payload_exception=_BadBody,
            auto_decompress=kwargs.get("auto_decompress", True),
            max_msg_queue_size=self._max_msg_queue_size,
        )

    # -- connection life

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and peername:
            self._peer = str(peername[0])
        if not self._edge.admit(self._peer):
            self._edge.log(
                logging.WARNING,
                self._peer,
                "edge: refused a connection from %s: %d already open",
                self._peer,
                self._edge.config.max_connections_per_peer,
            )
            self._answer_and_close(
                429,
                "too_many_connections",
                "too many open connections from this address; retry later",
                "Retry-After: 1\r\n",
            )
            return
        self._admitted = True
        self._arm_header_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        if self._admitted:
            self._admitted = False
            self._edge.release(self._peer)
        body = self._open_body
        if body is not None and not body.is_eof():
            body.set_exception(_ClientGone())
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        body = self._open_body
        if (
            data
            and self._header_timer is None
            and not self._request_in_progress
            and not self._messages
            and (body is None or body.is_eof())
        ):
            self._arm_header_deadline()
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            self._on_headers_complete()

    # -- deadlines

    def _arm_header_deadline(self) -> None:
        self._header_mark = self._request_count
        self._header_timer = self._loop.call_later(
            self._edge.config.header_timeout, self._header_deadline
        )

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _on_headers_complete(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if not self._messages:
            return
        _, payload = self._messages[-1]
        if payload.is_eof():
            return
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._open_body = payload
        self._body_timer = self._loop.call_later(
            self._edge.config.body_timeout, self._body_deadline, payload
        )

    def _header_deadline(self) -> None:
        self._header_timer = None
        if (
            self.transport is None
            or self._request_count != self._header_mark
            or self._request_in_progress
            or self._messages
        ):
            return
        seconds = self._edge.config.header_timeout
        self._edge.log(
            logging.WARNING,
            self._peer,
            "edge: no complete request headers from %s within %g s (%d bytes)",
            self._peer,
            seconds,
            self._received,
        )
        self._answer_and_close(
            408, "request_timeout", f"request headers not received within {seconds:g} s"
        )

    def _body_deadline(self, payload: Any) -> None:
        self._body_timer = None
        if payload.is_eof() or self.transport is None:
            return
        seconds = self._edge.config.body_timeout
        self._timed_out = True
        self._edge.log(
            logging.WARNING,
            self._peer,
            "edge: request body from %s not received within %g s (%d bytes)",
            self._peer,
            seconds,
            self._received,
        )
        payload.set_exception(_BodyTimeout(seconds))

    def _answer_and_close(self, status: int, code: str, message: str, extra: str = "") -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(_raw_answer(status, code, message, extra))
        self.force_close()

    # -- answers and logs

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if not resp.prepared:
            if resp.status >= 400 and resp.content_type != "application/json":
                # An answer made outside the app's middleware (aiohttp's own Expect
                # handling, say) may echo request bytes: answer in JSON instead.
                resp = _json_answer(resp.status, _status_code(resp.status), _phrase(resp.status))
            resp.headers["Server"] = SERVER_HEADER
            if self._timed_out:
                resp.force_close()
        return await super().finish_response(request, resp, start_time)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the answer has already started")
        kind = type(exc).__name__ if exc is not None else "-"
        if status < 500:
            level, code, text = logging.WARNING, "bad_request", f"malformed HTTP request ({kind})"
            self._edge.log(
                level,
                self._peer,
                "edge: malformed HTTP request from %s (%s, %d bytes)",
                self._peer,
                kind,
                self._received,
            )
        else:
            code = "timeout" if status == 504 else "internal"
            text = "the request timed out" if status == 504 else "internal error"
            self._edge.log(
                logging.ERROR, self._peer, "edge: %d for %s (%s)", status, self._peer, kind
            )
        resp = _json_answer(status, code, text)
        resp.headers["Connection"] = "close"
        resp.force_close()
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, _SIGNALS):
            return  # our own deadline/framing signals surfacing in aiohttp's body drain
        kind = type(exc).__name__ if isinstance(exc, BaseException) else "-"
        self._edge.log(
            logging.ERROR, self._peer, "edge: connection error from %s (%s)", self._peer, kind
        )


class _EdgeServer(web.Server):
    """aiohttp's low-level server, building :class:`_EdgeHandler` connections."""

    def __init__(self, base: web.Server, edge: _EdgeState) -> None:
        handler = base.request_handler

        async def guarded(request: BaseRequest) -> web.StreamResponse:
            # aiohttp answers an unknown Expect with a text 417 quoting the value,
            # and fails with a 500 when the value is not UTF-8: refuse it here.
            expect = request.headers.get("Expect")
            if expect is not None and expect.lower() != "100-continue":
                resp = _json_answer(
                    417, "expectation_failed", "only 'Expect: 100-continue' is supported"
                )
                resp.force_close()
                return resp
            return await handler(request)

        super().__init__(
            guarded,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **base._kwargs,
        )
        self._edge = edge

    def __call__(self) -> web.RequestHandler:
        return _EdgeHandler(self, loop=self._loop, edge=self._edge, **self._kwargs)


class EdgeRunner(web.AppRunner):
    """An ``AppRunner`` whose connections go through the edge (see the module docstring).

    Args:
        app: The application to serve.
        edge: The edge limits (default: :class:`EdgeConfig` defaults).
        peer_counts: Connection counts shared with other worker processes (None:
            this process counts alone).
        **kwargs: Passed to ``aiohttp.web.AppRunner`` (``access_log`` defaults to None,
            ``keepalive_timeout`` comes from ``edge``).
    """

    def __init__(
        self,
        app: web.Application,
        *,
        edge: EdgeConfig | None = None,
        peer_counts: SharedPeerCounts | None = None,
        **kwargs: Any,
    ) -> None:
        self.edge = edge or EdgeConfig()
        self.peer_counts = peer_counts
        kwargs.setdefault("access_log", None)
        kwargs["keepalive_timeout"] = self.edge.keepalive_timeout
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return _EdgeServer(base, _EdgeState(self.edge, self.peer_counts))
