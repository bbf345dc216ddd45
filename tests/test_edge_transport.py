"""The edge takes any transport with asyncio's transport methods, not only subclasses.

uvloop's transports are not ``asyncio.Transport`` subclasses; an ``isinstance`` check in
``connection_made`` refused every connection when ``serve``'s app ran on uvloop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from livekit.plugins.metadata.server.edge import EdgeConfig, EdgeProtocol, _EdgeState, edge_runner

pytestmark = pytest.mark.unit


class DuckTransport:
    """A transport by its methods only, as uvloop's are."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.written += chunk

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def test_a_duck_typed_transport_is_served() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/hello", hello)
    config = EdgeConfig()
    runner = edge_runner(app, config)
    await runner.setup()
    try:
        assert runner.server is not None
        protocol = EdgeProtocol(runner.server, _EdgeState(config))
        transport = DuckTransport()
        assert not isinstance(transport, asyncio.Transport)
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        for _ in range(100):
            if b"hello" in transport.written:
                break
            await asyncio.sleep(0.01)
        assert transport.written.startswith(b"HTTP/1.1 200")
        assert transport.written.endswith(b"hello")
        protocol.connection_lost(None)
    finally:
        await runner.cleanup()
