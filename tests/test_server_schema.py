"""Schemathesis against the token endpoint's own OpenAPI document (integration tier).

Positive and negative cases for every operation: no 5xx, and every answer conforms
to the document (status, content type, headers, body). The app runs in-process on a
loopback port, on its own event loop in a thread; the default rules route.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiohttp import web

from livekit.plugins.metadata.server.app import create_app
from livekit.plugins.metadata.server.config import ServerConfig
from livekit.plugins.metadata.sessions.manager import SessionManager

pytestmark = pytest.mark.integration


@contextmanager
def threaded_server(config: ServerConfig) -> Iterator[str]:
    """The app on its own event loop in a thread, for blocking clients."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(create_app(config), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]

    def target() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(holder["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"http://127.0.0.1:{holder['port']}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_schemathesis_finds_no_server_errors() -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    conformance = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]

    config = ServerConfig.from_mapping(
        {
            "api_key": "APItestkey",
            "api_secret": "test-secret-" + "z" * 40,
            "server_url": "ws://127.0.0.1:7880",
            "rate_limit": None,
            "allowed_agents": ["sales"],
            "cors_origins": ["https://app.example.com"],
        }
    )
    config.sessions = SessionManager(secret_key=b"k" * 32)
    failures: list[str] = []
    calls = 0
    with threaded_server(config) as base:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()
            has_body = operation.method.upper() == "POST"
            modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if has_body else []
            for mode in modes or [GenerationMode.POSITIVE]:
                strategy = operation.as_strategy(generation_mode=mode)

                @settings(
                    max_examples=30 if has_body else 5,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def check(case: Any) -> None:
                    nonlocal calls
                    calls += 1
                    response = case.call(base_url=base, timeout=10)
                    if response.status_code >= 500:
                        failures.append(f"{case.method} {case.path}: {response.status_code}")
                    case.validate_response(response, checks=conformance)

                check()
    assert calls > 60
    assert failures == []
