"""The framework-free request and response the token endpoint's core speaks.

An adapter (aiohttp for ``lk-metadata serve``, ASGI for FastAPI/Starlette/Litestar)
turns its framework's request into an :class:`EndpointRequest`, awaits
:meth:`TokenEndpoint.handle <livekit.plugins.metadata.server.core.TokenEndpoint.handle>`
and sends the :class:`EndpointResponse` back as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from .config import Principal

__all__ = ["EndpointRequest", "EndpointResponse", "json_error"]


@dataclass
class EndpointRequest:
    """One HTTP request, as the core sees it.

    ``headers`` are keyed by lower-case names. The body is either given
    (``body``) or read on demand (``read_body``, which an adapter bounds by
    ``max_body_bytes`` and which raises a 413 :class:`~.state.Refusal` beyond it):
    the core reads it only after the checks that need no body.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes | None = None
    client: str | None = None
    """The peer's address (None when unknown)."""
    principal: Principal | None = None
    """The caller, when the host app has authenticated it already: no bearer key,
    no ``authorize`` hook is consulted then."""
    read_body: Callable[[], Awaitable[bytes]] | None = None
    native: Any = None
    """The framework's own request object, handed to the ``authorize`` hook
    (the aiohttp ``web.Request`` under ``serve``); None: the hook gets this object."""
    log: dict[str, Any] = field(default_factory=dict)

    async def read(self) -> bytes:
        if self.body is None:
            self.body = b"" if self.read_body is None else await self.read_body()
        return self.body


@dataclass
class EndpointResponse:
    """Status, headers and body, ready to send."""

    status: int
    headers: dict[str, str]
    body: bytes


def json_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> EndpointResponse:
    """The endpoint's JSON error ``{"error": {"code", "message"}}``."""
    out = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    if headers:
        out.update(headers)
    return EndpointResponse(
        status, out, orjson.dumps({"error": {"code": code, "message": message}})
    )
