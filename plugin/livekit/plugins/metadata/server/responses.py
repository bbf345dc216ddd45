"""The token endpoint's HTTP surface: JSON errors, the request log line, CORS and companions.

``edge_middleware`` turns every refusal and exception into the JSON error body,
adds CORS headers for allowed origins, counts the answer in ``/metrics`` and
writes one log line per token request (principal, room, agent, status, error
code, latency; never a value). The small handlers serve ``/healthz``
(liveness: the process answers), ``/readyz`` (readiness: the session store and
the limits store answer), ``/metrics``, ``/openapi.json`` and the CORS preflight.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import orjson
from aiohttp import web

from ..errors import StoreError
from ..log import logger
from .config import is_loopback
from .guard import failed_authentication, refuse_if_blocked
from .state import LOG, STATE, AppState, Refusal, digest, unauthorized

__all__ = [
    "edge_middleware",
    "handle_healthz",
    "handle_metrics",
    "handle_openapi",
    "handle_preflight",
    "handle_readyz",
]

_READY_TIMEOUT = 3.0

_AIOHTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _endpoint(request: web.Request) -> str:
    name = request.match_info.route.name
    if name:
        return name
    if request.method == "OPTIONS" and request.path == request.app[STATE].config.path:
        return "token"
    return "other"


@web.middleware
async def edge_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[STATE]
    t0 = time.perf_counter()
    response: web.StreamResponse
    code: str | None = None
    try:
        response = await handler(request)
    except Refusal as err:
        code = err.code
        response = _json_error(err.status, err.code, err.message, err.headers)
    except web.HTTPException as exc:
        response = _from_http_exception(exc)
        code = _AIOHTTP_CODES.get(exc.status) if exc.status >= 400 else None
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        _log_internal_error(request, exc)
        code = "internal"
        response = _json_error(500, "internal", "internal error")

    origin = request.headers.get("Origin")
    if origin is not None and origin in state.policy.cors_origins:
        headers = response.headers
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = "Retry-After"
        headers["Vary"] = "Origin"

    endpoint = _endpoint(request)
    state.metrics.count(endpoint, response.status)
    if endpoint == "token" and logger.isEnabledFor(logging.INFO):
        _log_request(request, response.status, code, (time.perf_counter() - t0) * 1000.0)
    return response


def _log_internal_error(request: web.Request, exc: Exception) -> None:
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


def _log_request(request: web.Request, status: int, code: str | None, latency_ms: float) -> None:
    info = request.get(LOG) or {}
    principal, room, agent = info.get("principal"), info.get("room"), info.get("agent")
    logger.info(
        "token request principal=%s room=%s agent=%s status=%d code=%s latency_ms=%.2f",
        _log_safe(principal),
        _log_safe(room),
        _log_safe(agent),
        status,
        code or "-",
        latency_ms,
        extra={
            "principal": principal,
            "room": room,
            "agent": agent,
            "status": status,
            "code": code,
            "latency_ms": round(latency_ms, 3),
        },
    )


def _log_safe(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return repr(text[:128]) if not text.isprintable() or " " in text else text[:128]


def _json_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    resp = web.Response(
        status=status,
        body=orjson.dumps({"error": {"code": code, "message": message}}),
        content_type="application/json",
    )
    resp.headers["Cache-Control"] = "no-store"
    if headers:
        resp.headers.update(headers)
    return resp


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    status = exc.status
    if status < 400:  # redirects etc. are passed through untouched
        return web.Response(status=status, headers=exc.headers)
    headers: dict[str, str] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        message = f"method {exc.method} is not allowed here"
    elif status == 404:
        message = "no such endpoint"
    elif status == 413:
        message = "request body is over the size limit"
    else:
        message = exc.reason or "request refused"
    for name in ("WWW-Authenticate", "Retry-After"):
        if name in exc.headers:
            headers[name] = exc.headers[name]
    code = _AIOHTTP_CODES.get(status, "internal" if status >= 500 else "error")
    if status >= 500:
        message = "internal error"
    return _json_error(status, code, message, headers)


# --------------------------------------------------------------------------- small handlers


async def handle_healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def handle_readyz(request: web.Request) -> web.Response:
    """Readiness: 200 when the session store and the limits store answer, else 503.

    Concurrent probes share one check in flight, so probing cannot multiply the
    load on Redis.
    """
    state = request.app[STATE]
    task = state.readiness_task
    if task is None or task.done():
        task = asyncio.ensure_future(_readiness(state))
        state.readiness_task = task
    failed = await asyncio.shield(task)
    if failed is None:
        return web.Response(body=b'{"status":"ready"}', content_type="application/json")
    body = {
        "status": "unready",
        "error": {"code": "store_unavailable", "message": f"the {failed} cannot be reached"},
    }
    resp = web.Response(status=503, body=orjson.dumps(body), content_type="application/json")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Retry-After"] = "5"
    return resp


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


async def _check_operator(request: web.Request, state: AppState) -> None:
    """``/metrics`` and ``/openapi.json``: the ``metrics_key`` if one is set, else loopback only.

    A wrong or missing key counts against the failed-authentication limit, as on
    ``/token``; the presented key is hashed and compared in constant time.
    """
    expected = state.operator_digest
    if expected is None:
        if not is_loopback(request.remote or ""):
            raise Refusal(
                403,
                "loopback_only",
                "this endpoint answers loopback callers only (or set metrics_key)",
            )
        return
    peer = request.remote or "-"
    refuse_if_blocked(peer, state)
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    matches = hmac.compare_digest(digest(presented.strip()), expected)
    if scheme.lower() != "bearer" or not matches:
        await failed_authentication(peer, state)
        raise unauthorized("this endpoint needs the metrics bearer key")


async def handle_metrics(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    state = request.app[STATE]
    await _check_operator(request, state)
    resp = web.Response(body=state.metrics.render())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def handle_openapi(request: web.Request) -> web.Response:
    state = request.app[STATE]
    await _check_operator(request, state)
    return web.Response(body=state.openapi, content_type="application/json")


async def handle_preflight(request: web.Request) -> web.Response:
    state = request.app[STATE]
    origin = request.headers.get("Origin")
    if origin is None:
        return web.Response(status=204, headers={"Allow": "OPTIONS, POST"})
    if origin not in state.policy.cors_origins:
        raise Refusal(403, "origin_not_allowed", "this origin may not call the token endpoint")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "600",
        },
    )
