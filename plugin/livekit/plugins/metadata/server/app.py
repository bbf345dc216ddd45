"""The token endpoint's aiohttp adapter (``lk-metadata serve``) of :class:`~.core.TokenEndpoint`:
LiveKit's standard token-endpoint format (README, "The token endpoint").

Safe defaults: 127.0.0.1; anonymous access only on loopback; no client ``room_config``
field but the agent; ``canUpdateOwnMetadata`` off; a rate limit per principal; a 128 KiB
body limit; no CORS origin; trusted keys private; ``/metrics`` and ``/openapi.json`` for
loopback callers; JSON errors without metadata values, tokens or secrets.
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
    """The token endpoint as an ``aiohttp.web.Application``; ``config`` None: all defaults
    (loopback, in-memory store, bundled example rules, dev keys if none are set).

    Raises:
        ConfigError: Missing credentials on a non-loopback host, no way to
            authenticate callers, or an invalid rules file / schema / store URL.
    """
    endpoint = TokenEndpoint.from_config(config, warn_dev_keys=warn_dev_keys)
    app = web.Application(client_max_size=endpoint.config.max_body_bytes)
    app[STATE] = endpoint.state
    app[ENDPOINT] = endpoint
    # The core routes, and answers 404/405 as JSON itself: its paths (found by aiohttp's
    # path index at once) and a catch-all for everything else go to the one handler.
    for path in endpoint.paths:
        app.router.add_route("*", path, _handle, expect_handler=_expect)
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
            message = f"request body not received within {endpoint.config.edge.body_timeout:g} s"
            raise Refusal(408, "request_timeout", message) from None
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
