"""The framework-free request and response the token endpoint's core speaks: an adapter
(aiohttp, ASGI) turns its request into an :class:`EndpointRequest`, awaits
``TokenEndpoint.handle`` and sends the :class:`EndpointResponse` back as it is."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import Principal
from .edge import error_body

__all__ = ["EndpointRequest", "EndpointResponse", "json_error"]


@dataclass
class EndpointRequest:
    """One HTTP request (``headers`` keyed by lower-case names); the body is given or read
    on demand (``read_body``, bounded by ``max_body_bytes``: a 413 ``Refusal`` beyond)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes | None = None
    client: str | None = None
    """The peer's address (None when unknown)."""
    principal: Principal | None = None
    """The caller, when the host app has authenticated it (no key or hook consulted)."""
    read_body: Callable[[], Awaitable[bytes]] | None = None
    native: Any = None
    """The framework's own request, for the ``authorize`` hook (None: this object)."""
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
    out = {"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})}
    return EndpointResponse(status, out, error_body(code, message))
