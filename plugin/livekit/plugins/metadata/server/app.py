"""The token endpoint: a small, hardened aiohttp service behind ``lk-metadata serve``.

It speaks LiveKit's standard token-endpoint format, so ``TokenSource.endpoint(url)``
in every LiveKit client SDK works against it unchanged::

    POST /token   TokenRequest (models.py)
    201           {"server_url", "participant_token", "room_name", "participant_identity"}

The room and the identity are the server's to choose (``placement.py``): a fresh,
unguessable pair per token, a client's ``room_name`` / ``participant_identity``
ignored unless the principal opts in (``client_room`` within its ``room_prefix``,
``client_identity``), and a ``rejoin_token`` leads back only to its own room.

This module is the aiohttp adapter over the framework-free core
(:class:`~.core.TokenEndpoint`); :mod:`.asgi` is the ASGI one. The core's token
request runs one small function per step (``pipeline.py``, ``parsing.py``, ``admission.py``):
framing (size, UTF-8 JSON) → authorize (bearer keys or a user hook; rate limits
per principal and peer, failed authentications per peer) → parse (the
request model, metadata through the codec, attributes, ``room_config`` with
LiveKit's protobuf parser; no key of the ``lk-metadata.`` namespace) → policy
(key allowlist, schema, pinned identity, trusted metadata, room prefix, the
public/private split) → dispatch choice (a client-chosen agent only from an
allowlist, otherwise the router) → reserve a slot under ``max_sessions`` →
mint and store (``TokenIssuer.amint``: a fresh session per token, written
before the token exists) → answer. The room name keys nothing a client writes.

Safe defaults: listens on 127.0.0.1; anonymous access only on a loopback host
(unless ``auth.allow_anonymous`` says otherwise); no ``room_config`` field other
than the agent name may be set by clients; ``canUpdateOwnMetadata`` off; a
per-principal token-bucket rate limit; a 128 KiB body limit; no CORS origin;
trusted keys private; ``/metrics`` and ``/openapi.json`` for loopback callers.
Every error is JSON ``{"error": {"code", "message"}}`` and no message carries a
metadata value, a token or a secret; one log line per request carries the
principal, room, routed agent, status and latency only.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .config import (
    DEFAULT_PORT,
    DEV_API_KEY,
    DEV_API_SECRET,
    ApiKeyConfig,
    AuthConfig,
    AuthorizeHook,
    MetadataPolicy,
    Principal,
    RateLimit,
    ServerConfig,
)
from .core import TokenEndpoint
from .edge import SERVER_HEADER, error_body
from .messages import EndpointRequest
from .openapi import openapi_document
from .refusals import HTTP_CODES
from .state import STATE, Refusal

__all__ = [
    "DEFAULT_PORT",
    "DEV_API_KEY",
    "DEV_API_SECRET",
    "ApiKeyConfig",
    "AuthConfig",
    "AuthorizeHook",
    "MetadataPolicy",
    "Principal",
    "RateLimit",
    "ServerConfig",
    "create_app",
    "openapi_document",
]

ENDPOINT = web.AppKey("lk_metadata_endpoint", TokenEndpoint)


def create_app(
    config: ServerConfig | None = None, *, warn_dev_keys: bool = True
) -> web.Application:
    """Build the token-endpoint application.

    Args:
        config: The server configuration; None means all defaults (loopback,
            in-memory store, bundled example rules, dev keys if none are set).
        warn_dev_keys: Log a warning when the dev-server keys are used.

    Returns:
        An ``aiohttp.web.Application`` serving ``POST <path>``, ``GET /healthz``,
        ``GET /readyz``, ``GET /metrics`` and ``GET /openapi.json``.

    Raises:
        ConfigError: Missing credentials on a non-loopback host, no way to
            authenticate callers, or an invalid rules file / schema / store URL.
    """
    endpoint = TokenEndpoint.from_config(config, warn_dev_keys=warn_dev_keys)
    app = web.Application(client_max_size=endpoint.config.max_body_bytes)
    app[STATE] = endpoint.state
    app[ENDPOINT] = endpoint
    # One catch-all route: the core routes, and answers 404/405 as JSON itself.
    app.router.add_route("*", "/{tail:.*}", _handle, expect_handler=_expect)
    app.on_cleanup.append(_on_cleanup)
    return app


async def _handle(request: web.Request) -> web.StreamResponse:
    endpoint = request.app[ENDPOINT]
    close = False

    async def read_body() -> bytes:
        nonlocal close
        content = request.content
        try:
            if content.is_eof():  # the whole body is in: no deadline to keep
                if request.can_read_body:  # buffered and unread: take it as it is
                    body = content.read_nowait()
                    if len(body) > endpoint.config.max_body_bytes:
                        raise Refusal(413, "body_too_large", "request body is over the size limit")
                    return body
                return await request.read()
            return await asyncio.wait_for(request.read(), endpoint.config.edge.body_timeout)
        except web.HTTPException as exc:  # over client_max_size
            raise _read_refusal(exc) from None
        except (asyncio.TimeoutError, TimeoutError):
            close = True
            seconds = endpoint.config.edge.body_timeout
            raise Refusal(
                408, "request_timeout", f"request body not received within {seconds:g} s"
            ) from None
        except web.RequestPayloadError:  # broken framing; its message may quote the bytes
            close = True
            raise Refusal(400, "bad_request", "malformed request body") from None
        except ConnectionError:
            close = True
            raise Refusal(
                400, "bad_request", "connection closed before the request body was complete"
            ) from None

    answer = await endpoint.handle(
        EndpointRequest(
            request.method,
            request.path,
            request.headers,  # case-insensitive: the core's lower-case names match
            client=request.remote,
            read_body=read_body,
            native=request,
        )
    )
    headers = answer.headers
    headers["Server"] = SERVER_HEADER
    response = web.Response(status=answer.status, headers=headers, body=answer.body)
    if close:  # send the answer, then close: no lingering read of what the client still sends
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        if request.transport is not None:
            request.transport.close()
    return response


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """``Expect``: 100-continue, else a JSON 417 (aiohttp's own answer echoes the value)."""
    if request.headers.get("Expect", "").lower() != "100-continue":
        response = web.Response(
            status=417,
            headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
            body=error_body("expectation_failed", "only 'Expect: 100-continue' is supported"),
        )
        response.headers["Server"] = SERVER_HEADER
        response.force_close()
        return response
    transport = request.transport
    if request.version >= (1, 1) and transport is not None:
        transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


def _read_refusal(exc: web.HTTPException) -> Refusal:
    status = exc.status
    if status == 413:
        return Refusal(413, "body_too_large", "request body is over the size limit")
    if status >= 500:
        return Refusal(status, "internal", "internal error")
    return Refusal(status, HTTP_CODES.get(status, "error"), exc.reason or "request refused")


async def _on_cleanup(app: web.Application) -> None:
    await app[ENDPOINT].aclose()
