"""A real browser: LiveKit's web SDK in headless Chromium against the endpoint and the example agent.

A static page (``tests/browser/token_page.*`` next to ``livekit-client.umd.js`` from
``tests/node``) on its own loopback origin gets a token with
``TokenSource.endpoint(url).fetch(...)`` (a cross-origin POST: CORS preflight
included), joins the session's livekit-server and sees ``examples/agent.py``'s agent
publish its ``route``; it then rewrites its own metadata and sees the re-route. The
same through ``lk-metadata serve`` (aiohttp) and through the ASGI mount under
uvicorn. A refused origin gets no token; a refused request shows the JSON error.
Last, the routing playground mints a token and joins from its own page.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fixtures.browser import livekit_client_umd, static_site
from tests.fixtures.e2e import REPO, WorkerProcess, worker_process
from tests.fixtures.livekit_server import LiveKitServer
from tests.fixtures.servers import free_port, stop_process, unavailable

pytestmark = pytest.mark.e2e

SUPPORT_ES = '{"department": "support", "language": "es"}'
TO_SALES = '{"department": "sales", "language": "en"}'
WAIT_MS = 60_000
PAGE = REPO / "tests" / "browser"


@pytest.fixture(scope="module")
def site() -> Iterator[int]:
    """The test page's own origin: http://127.0.0.1:<port>/ (localhost:<port> is refused)."""
    files = {
        "/": PAGE / "token_page.html",
        "/token_page.js": PAGE / "token_page.js",
        "/livekit-client.umd.js": livekit_client_umd(),
    }
    with static_site(files) as port:
        yield port


@pytest.fixture(scope="module")
def agent(
    livekit_server: LiveKitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """``examples/agent.py`` (the rules' ``router-demo`` worker) against the session's server."""
    log = tmp_path_factory.mktemp("browser-agent") / "worker.log"
    with worker_process(livekit_server, ["examples/agent.py", "start"], log_path=log) as worker:
        yield worker


def _config(site: int) -> dict[str, Any]:
    origin = f"http://127.0.0.1:{site}"
    return {
        "cors_origins": [origin],
        "allow_update_own_metadata": True,
        "playground_sdk_url": f"{origin}/livekit-client.umd.js",
    }


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path, port: int) -> Iterator[Path]:
    """Run ``argv`` until the block ends (stopped by PID); wait for ``/healthz`` on ``port``."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + 60
        while not _healthy(port, "/healthz") and not _healthy(port, "/lk/healthz"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{argv[2]} did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield log
    finally:
        stop_process(proc, grace=15.0)


def _healthy(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1.0) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _env(livekit_server: LiveKitServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "LK_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "plugin"), str(REPO)])
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **livekit_server.env(), **extra}


@pytest.fixture(scope="module")
def serve(
    livekit_server: LiveKitServer, site: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """``lk-metadata serve`` (aiohttp) allowing the page's origin: (endpoint URL, log)."""
    tmp = tmp_path_factory.mktemp("browser-serve")
    config = tmp / "serve.json"
    config.write_bytes(orjson.dumps(_config(site)))
    port = free_port()
    argv = [sys.executable, "-m", "livekit.plugins.metadata.cli", "serve"]
    argv += ["--config", str(config), "--port", str(port)]
    with _process(argv, _env(livekit_server), tmp / "serve.log", port) as log:
        yield f"http://127.0.0.1:{port}", log


@pytest.fixture(scope="module")
def asgi(
    livekit_server: LiveKitServer, site: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The ASGI mount (``TokenASGI`` under ``/lk`` in Starlette) run by uvicorn."""
    if importlib.util.find_spec("uvicorn") is None:
        unavailable("uvicorn not installed: uv sync (it is a dev dependency)")
    tmp = tmp_path_factory.mktemp("browser-asgi")
    config = tmp / "asgi.json"
    config.write_bytes(orjson.dumps(_config(site)))
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", "tests.browser.asgi_app:create_app"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    env = _env(livekit_server, LK_BROWSER_CONFIG=str(config))
    with _process(argv, env, tmp / "uvicorn.log", port) as log:
        yield f"http://127.0.0.1:{port}/lk", log


def _join_route_and_reroute(browser: Any, site: int, endpoint: str) -> dict[str, Any]:
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{site}/")
        t0 = time.perf_counter()
        joined = page.evaluate(
            "o => window.joinRoom(o)", {"endpoint": endpoint + "/token", "metadata": SUPPORT_ES}
        )
        assert joined["ok"], joined
        page.wait_for_function("() => window.agentRoute() === 'support-es'", timeout=WAIT_MS)
        routed = time.perf_counter() - t0
        page.evaluate("md => window.updateMetadata(md)", TO_SALES)
        page.wait_for_function("() => window.agentRoute() === 'sales'", timeout=WAIT_MS)
        rerouted = time.perf_counter() - t0
        agents = page.evaluate("() => window.state.agents")
        page.evaluate("() => window.leave()")
    finally:
        page.close()
    (attrs,) = agents.values()
    assert attrs["route.rule"] == "sales"
    print(f"\nbrowser flow {endpoint}: agent routed {routed:.1f}s, re-routed {rerouted:.1f}s")
    return dict(joined)


def test_web_sdk_gets_a_token_from_serve_and_sees_the_route_and_the_re_route(
    browser: Any, site: int, agent: WorkerProcess, serve: tuple[str, Path]
) -> None:
    endpoint, log = serve
    joined = _join_route_and_reroute(browser, site, endpoint)
    assert joined["room"]
    assert joined["identity"]
    text = log.read_text(errors="replace")
    assert "status=204" in text  # the browser's CORS preflight, answered
    assert "status=201" in text


def test_web_sdk_through_the_asgi_mount_under_uvicorn(
    browser: Any, site: int, agent: WorkerProcess, asgi: tuple[str, Path]
) -> None:
    endpoint, log = asgi
    _join_route_and_reroute(browser, site, endpoint)
    text = log.read_text(errors="replace")
    assert '"OPTIONS /lk/token HTTP/1.1" 204' in text
    assert '"POST /lk/token HTTP/1.1" 201' in text


def test_a_refused_origin_gets_no_token_and_a_refused_request_shows_the_json_error(
    browser: Any, site: int, serve: tuple[str, Path]
) -> None:
    endpoint, log = serve
    page = browser.new_page()
    try:
        page.goto(f"http://localhost:{site}/")  # another origin than the allowed one
        refused = page.evaluate(
            "o => window.joinRoom(o)", {"endpoint": endpoint + "/token", "metadata": SUPPORT_ES}
        )
        page.goto(f"http://127.0.0.1:{site}/")
        bad = page.evaluate(
            "o => window.joinRoom(o)",
            {"endpoint": endpoint + "/token", "metadata": '{"lk-metadata.session": "x"}'},
        )
        shown = page.inner_text("#error")
    finally:
        page.close()
    assert not refused["ok"]
    assert "Failed to fetch" in refused["error"]
    assert "code=origin_not_allowed" in log.read_text(errors="replace")
    request = urllib.request.Request(  # noqa: S310
        endpoint + "/token",
        method="OPTIONS",
        headers={"Origin": f"http://localhost:{site}", "Access-Control-Request-Method": "POST"},
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310 (http on loopback)
    assert answer.value.code == 403
    assert orjson.loads(answer.value.read())["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in {k.lower() for k in answer.value.headers}
    # An allowed origin reads the endpoint's JSON error, and the page shows it.
    assert not bad["ok"]
    assert "received 422" in shown
    assert '"code":"reserved_key"' in shown


def test_the_playground_mints_joins_and_shows_the_agent_and_its_re_route(
    browser: Any, agent: WorkerProcess, serve: tuple[str, Path]
) -> None:
    endpoint, _ = serve
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(endpoint + "/playground")
        page.fill("#metadata", SUPPORT_ES)
        page.wait_for_selector('#route[data-agent="support-es"]')
        page.click("#join-btn")
        page.wait_for_selector('#agents .agent[data-route="support-es"]', timeout=WAIT_MS)
        assert "In room " in page.inner_text("#room-status")
        page.fill("#metadata", TO_SALES)
        page.click("#update-btn")
        page.wait_for_selector('#agents .agent[data-route="sales"]', timeout=WAIT_MS)
        assert "route.rule" in page.inner_text("#agents")
        page.click("#leave-btn")
        page.wait_for_selector("#join-btn:not([disabled])")
    finally:
        page.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors
