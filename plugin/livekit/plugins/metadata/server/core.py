"""The token endpoint as a library: one object, one async call, no web framework::

    endpoint = TokenEndpoint.from_config(ServerConfig(...))
    response = await endpoint.handle(EndpointRequest("POST", "/token", headers, body=b"{}"))

Adapters: ``create_app`` (aiohttp, ``lk-metadata serve``) and :mod:`.asgi`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from pathlib import Path
from typing import Any, Final

import orjson

from ..errors import StoreError
from ..log import logger
from .build import build_state
from .config import ServerConfig, is_loopback
from .guard import failed_authentication, refuse_if_blocked
from .messages import EndpointRequest, EndpointResponse, json_error
from .pipeline import handle_token
from .playground import PLAYGROUND_ENDPOINTS, PLAYGROUND_POST, handle_playground, playground_routes
from .state import AppState, Refusal, digest, unauthorized

__all__ = ["EndpointRequest", "EndpointResponse", "TokenEndpoint"]

_READY_TIMEOUT = 3.0
_JSON = "application/json"
_GET_ALLOW = "GET, HEAD"
_POST_ALLOW = "OPTIONS, POST"
_GET = ("GET", "HEAD")
_PREFLIGHT = {
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}
_METHODS = {"token": ("POST", "OPTIONS"), **dict.fromkeys(PLAYGROUND_POST, ("POST",))}
"""The methods an endpoint's metrics count under its name (any other: ``other``)."""


class TokenEndpoint:
    """The token endpoint's checks and answers: :meth:`handle` per request, :meth:`aclose`
    at shutdown (it closes the store and limits it built)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.config: Final = state.config
        config = state.config
        self._routes = {
            **playground_routes(config),  # /route, /explain; /playground when enabled
            config.path: "token",
            "/healthz": "healthz",
            "/readyz": "readyz",
            "/metrics": "metrics",
            "/openapi.json": "openapi",
        }

    @classmethod
    def from_config(
        cls, config: ServerConfig | None = None, *, warn_dev_keys: bool = True
    ) -> TokenEndpoint:
        """Build the endpoint; ``ConfigError`` as :func:`~.app.create_app`."""
        return cls(build_state(config, warn_dev_keys=warn_dev_keys))

    @property
    def paths(self) -> list[str]:
        """The paths this endpoint answers (any other path: a JSON 404)."""
        return list(self._routes)

    async def aclose(self) -> None:
        state = self.state
        if state.owns_limits:
            await state.limits.aclose()
        if state.owns_sessions:
            await state.sessions.aclose()

    async def handle(self, request: EndpointRequest) -> EndpointResponse:
        """Answer one request: JSON errors, CORS, metrics and the log line included."""
        state = self.state
        t0 = time.perf_counter()
        code: str | None = None
        endpoint = self._routes.get(request.path)
        method = request.method
        try:
            if endpoint == "token" and method == "POST":  # the hot path, one await less
                response = await handle_token(request, state)
            else:
                response = await self._route(endpoint, method, request)
        except Refusal as err:
            code = err.code
            response = json_error(err.status, err.code, err.message, err.headers)
        except Exception as exc:
            _log_internal_error(request, exc)
            code = "internal"
            response = json_error(500, "internal", "internal error")
        origin = request.headers.get("origin")
        if origin is not None and origin in state.policy.cors_origins:
            headers = response.headers
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = "Retry-After"
            headers["Vary"] = "Origin"

        label = endpoint if endpoint and method in _METHODS.get(endpoint, _GET) else "other"
        state.metrics.count(label, response.status)
        if label == "token" and logger.isEnabledFor(logging.INFO):
            _log_request(request, response.status, code, (time.perf_counter() - t0) * 1000.0)
        return response

    async def _route(
        self, endpoint: str | None, method: str, request: EndpointRequest
    ) -> EndpointResponse:
        state = self.state
        if endpoint is None:
            raise Refusal(404, "not_found", "no such endpoint")
        if endpoint == "token":  # POST: handle's hot path
            if method == "OPTIONS":
                return _preflight(request, state)
            raise _not_allowed(method, _POST_ALLOW)
        if endpoint in PLAYGROUND_ENDPOINTS:
            return await handle_playground(endpoint, request, state)
        if method not in ("GET", "HEAD"):
            raise _not_allowed(method, _GET_ALLOW)
        if endpoint == "healthz":
            return EndpointResponse(200, {"Content-Type": _JSON}, b'{"status":"ok"}')
        if endpoint == "readyz":
            return await _readyz(state)
        await _check_operator(request, state)
        if endpoint == "metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            return EndpointResponse(
                200, {"Content-Type": CONTENT_TYPE_LATEST}, state.metrics.render()
            )
        return EndpointResponse(200, {"Content-Type": _JSON}, state.openapi)


def _not_allowed(method: str, allow: str) -> Refusal:
    message = f"method {method[:32]} is not allowed here"
    return Refusal(405, "method_not_allowed", message, {"Allow": allow})


def _log_internal_error(request: EndpointRequest, exc: Exception) -> None:
    # The exception's type and where it was raised; never its message, which
    # third-party code may have filled with request data.
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb else "?"
    logger.error(
        "internal error in %s %s: %s at %s",
        request.method,
        request.path[:128],
        type(exc).__name__,
        where,
        extra={"error_type": type(exc).__name__, "where": where},
    )


def _log_request(
    request: EndpointRequest, status: int, code: str | None, latency_ms: float
) -> None:
    # One record per request, made directly (Logger.makeRecord/handle): the same
    # message and fields as logger.info(...), without the caller lookup per line.
    info = request.log
    principal, room, agent = info.get("principal"), info.get("room"), info.get("agent")
    message = (
        f"token request principal={_log_safe(principal)} room={_log_safe(room)} "
        f"agent={_log_safe(agent)} status={status} code={code or '-'} latency_ms={latency_ms:.2f}"
    )
    sink = _direct_handler()
    if sink is not None and sink.write_message(logging.INFO, message):
        return  # serve's own handler and format: the same line, without a LogRecord
    record = logger.makeRecord(
        logger.name,
        logging.INFO,
        __file__,
        _LOG_LINE,
        message,
        (),
        None,
        "_log_request",
        {
            "principal": principal,
            "room": room,
            "agent": agent,
            "status": status,
            "code": code,
            "latency_ms": round(latency_ms, 3),
        },
    )
    logger.handle(record)


_LOG_LINE = _log_request.__code__.co_firstlineno


def _direct_handler() -> Any:
    """The one handler the package's INFO lines reach, if it writes lines without a record
    (``serve``'s own, ``write_message``); else None."""
    found = None
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters:
            return None
        if node.handlers:
            if found is not None or len(node.handlers) != 1:
                return None
            found = node.handlers[0]
        if not node.propagate:
            break
        node = node.parent
    return found if hasattr(found, "write_message") else None


def _log_safe(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return repr(text[:128]) if not text.isprintable() or " " in text else text[:128]


async def _readyz(state: AppState) -> EndpointResponse:
    """200 when the session and limits stores answer, else 503; concurrent probes share
    one check in flight (probing cannot multiply the load on Redis)."""
    task = state.readiness_task
    if task is None or task.done():
        task = asyncio.ensure_future(_readiness(state))
        state.readiness_task = task
    failed = await asyncio.shield(task)
    if failed is None:
        return EndpointResponse(200, {"Content-Type": _JSON}, b'{"status":"ready"}')
    body = {
        "status": "unready",
        "error": {"code": "store_unavailable", "message": f"the {failed} cannot be reached"},
    }
    headers = {"Content-Type": _JSON, "Cache-Control": "no-store", "Retry-After": "5"}
    return EndpointResponse(503, headers, orjson.dumps(body))


async def _readiness(state: AppState) -> str | None:
    """None when ready, else what cannot be reached: the session store or the limits store."""
    checks = (
        ("session store", getattr(state.sessions.store, "ping", None)),
        ("limits store", getattr(state.limits, "ping", None)),
    )
    for what, ping in checks:
        if ping is None:
            continue
        try:
            await asyncio.wait_for(ping(), _READY_TIMEOUT)
        except (StoreError, asyncio.TimeoutError, TimeoutError, OSError):
            return what
    return None


async def _check_operator(request: EndpointRequest, state: AppState) -> None:
    """``/metrics`` and ``/openapi.json``: the ``metrics_key`` if one is set (a wrong one
    counts as a failed authentication, as on ``/token``), else loopback only."""
    expected = state.operator_digest
    if expected is None:
        if not is_loopback(request.client or ""):
            message = "this endpoint answers loopback callers only (or set metrics_key)"
            raise Refusal(403, "loopback_only", message)
        return
    peer = request.client or "-"
    refuse_if_blocked(peer, state)
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    matches = hmac.compare_digest(digest(presented.strip()), expected)
    if scheme.lower() != "bearer" or not matches:
        await failed_authentication(peer, state)
        raise unauthorized("this endpoint needs the metrics bearer key")


def _preflight(request: EndpointRequest, state: AppState) -> EndpointResponse:
    origin = request.headers.get("origin")
    if origin is None:
        return EndpointResponse(204, {"Allow": _POST_ALLOW}, b"")
    if origin not in state.policy.cors_origins:
        raise Refusal(403, "origin_not_allowed", "this origin may not call the token endpoint")
    return EndpointResponse(204, dict(_PREFLIGHT), b"")
