"""The token endpoint as a plain ASGI app: mount it in FastAPI, Starlette or Litestar::

    tokens = TokenASGI(ServerConfig(auth=...))
    app.mount("/lk", tokens)          # POST /lk/token, GET /lk/healthz, ...

The core of ``lk-metadata serve`` (:class:`~.core.TokenEndpoint`); connection limits,
deadlines and the ``Server`` header are the ASGI server's job (README, "Mount it in your app").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .config import Principal, ServerConfig
from .core import TokenEndpoint
from .messages import EndpointRequest, EndpointResponse
from .state import Refusal

__all__ = ["TokenASGI"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class TokenASGI:
    """An ASGI 3 application serving the token endpoint; ``config`` may be a built
    :class:`TokenEndpoint`, to share one between adapters."""

    def __init__(
        self,
        config: ServerConfig | TokenEndpoint | None = None,
        *,
        warn_dev_keys: bool = True,
    ) -> None:
        if isinstance(config, TokenEndpoint):
            self.endpoint = config
        else:
            self.endpoint = TokenEndpoint.from_config(config, warn_dev_keys=warn_dev_keys)
        self._max_body = self.endpoint.config.max_body_bytes

    async def aclose(self) -> None:
        """Close the store and limits the endpoint built (a mounted app gets no lifespan)."""
        await self.endpoint.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            answer = await self.endpoint.handle(self._request(scope, receive, None))
            await _send(answer, send, head=scope["method"] == "HEAD")
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def respond(
        self, scope: Scope, receive: Receive, *, principal: Principal | None = None
    ) -> EndpointResponse:
        """A token request from a host app's own route (any path), as ``principal``; send the
        answer as it is (FastAPI: ``Response(answer.body, answer.status, answer.headers)``)."""
        request = self._request(scope, receive, principal)
        request.path = self.endpoint.config.path
        return await self.endpoint.handle(request)

    def _request(
        self, scope: Scope, receive: Receive, principal: Principal | None
    ) -> EndpointRequest:
        headers: dict[str, str] = {}
        for name, value in reversed(scope.get("headers") or ()):
            headers[name.decode("latin-1").lower()] = value.decode("utf-8", "surrogateescape")
        client = scope.get("client")
        path = scope.get("path", "/")
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # Starlette's Mount keeps the full path
            path = path[len(root) :] or "/"
        max_body = self._max_body

        async def read_body() -> bytes:
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise Refusal(400, "bad_request", "the client went away")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_body:
                    raise Refusal(413, "body_too_large", "request body is over the size limit")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)

        return EndpointRequest(
            scope["method"],
            path,
            headers,
            client=client[0] if client else None,
            principal=principal,
            read_body=read_body,
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send(answer: EndpointResponse, send: Send, *, head: bool) -> None:
    body = answer.body
    headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()
    ]
    if answer.status != 204:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
