"""The README's local flow, step by step, as a newcomer runs it (real processes, real server).

1. ``livekit-server --dev``: the session's local-only livekit-server fixture plays it
   (same role: loopback, API keys; its config sets ``agents.target_load`` as the
   README's note says to on a busy machine);
2. the example worker: ``python examples/agent.py dev`` with ``LIVEKIT_URL`` & keys;
3. ``lk-metadata serve`` (default config, then one allowing metadata updates);
4. ``python examples/client.py ...``: asks the endpoint for a token, joins, prints
   the agent, its route, and what happened to its metadata update.

The client sends its update the moment the route attribute appears, so the
re-route case also proves that no update is lost after ``attach()`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.e2e import REPO
from tests.fixtures.livekit_server import LiveKitServer
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
SUPPORT_ES = '{"department": "support", "language": "es"}'
TO_SALES = '{"department": "sales", "language": "en"}'


@contextlib.contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` in its own process group (the dev worker forks); stop that group by id."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def wait_until(check: object, what: str, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not callable(check) or not check():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{what} not ready within {timeout:.0f}s:\n{tail}")
        time.sleep(0.1)


def healthy(port: int) -> bool:
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def flow_env(livekit_server: LiveKitServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "LK_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **livekit_server.env()}


@pytest.fixture(scope="module")
def example_worker_dev(
    flow_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Step 2, as written: ``python examples/agent.py dev``."""
    log = tmp_path_factory.mktemp("flow") / "worker.log"
    with process([sys.executable, "examples/agent.py", "dev"], flow_env, log):
        wait_until(lambda: "registered worker" in log.read_text(errors="replace"), "worker", log)
        yield log


@contextlib.contextmanager
def serve(flow_env: dict[str, str], tmp: Path, config: str | None) -> Iterator[int]:
    """Step 3: ``lk-metadata serve`` (on a free port; ``--config`` when given)."""
    port = free_port()
    argv = [str(BIN / "lk-metadata"), "serve", "--port", str(port)]
    if config is not None:
        path = tmp / "token_server.yaml"
        path.write_text(config, encoding="utf-8")
        argv += ["--config", str(path)]
    log = tmp / f"serve-{port}.log"
    with process(argv, flow_env, log):
        wait_until(lambda: healthy(port), "lk-metadata serve", log)
        yield port


async def client(flow_env: dict[str, str], port: int, *extra: str) -> tuple[int, str]:
    """Step 4: ``python examples/client.py`` against the endpoint; (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "examples/client.py",
        "--endpoint",
        f"http://127.0.0.1:{port}/token",
        *extra,
        cwd=REPO,
        env=flow_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_default_endpoint_routes_and_refuses_the_update_clearly(
    flow_env: dict[str, str], example_worker_dev: Path, tmp_path: Path
) -> None:
    with serve(flow_env, tmp_path, None) as port:
        code, out = await client(flow_env, port, "--metadata", SUPPORT_ES, "--update", TO_SALES)
    assert code == 0, out
    assert "agent joined: " in out, out
    assert "route: support-es (rule: support-es)" in out, out
    assert "update: NOT_ALLOWED" in out, out
    assert "canUpdateOwnMetadata" in out


async def test_update_sent_the_moment_the_route_appears_re_routes(
    flow_env: dict[str, str], example_worker_dev: Path, tmp_path: Path
) -> None:
    with serve(flow_env, tmp_path, "allow_update_own_metadata: true\n") as port:
        code, out = await client(flow_env, port, "--metadata", SUPPORT_ES, "--update", TO_SALES)
    assert code == 0, out
    assert "route: support-es" in out, out
    assert "update: applied by the server" in out, out
    assert "update: agent re-routed to sales" in out, out


def test_the_readme_shows_exactly_these_steps() -> None:
    """The README's flow block holds the commands this module runs, with the same metadata."""
    from tests.readme_blocks import blocks

    flow = [b for b in blocks("README.md") if "examples/agent.py dev" in b.code]
    assert len(flow) == 1
    assert flow[0].marker == "needs-livekit"
    code = flow[0].code
    for step in (
        "livekit-server --dev",
        "LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret",
        "uv run python examples/agent.py dev",
        "uv run lk-metadata serve",
        f"uv run python examples/client.py --metadata '{SUPPORT_ES}' --update '{TO_SALES}'",
    ):
        assert step in code, step


def test_the_busy_machine_config_matches_dev_mode_and_offers_jobs() -> None:
    """examples/livekit-dev.yaml: --dev's keys and port, loopback only, target_load raised."""
    import yaml

    config = yaml.safe_load((REPO / "examples" / "livekit-dev.yaml").read_text(encoding="utf-8"))
    assert config["keys"] == {"devkey": "secret"}
    assert config["port"] == 7880
    assert config["bind_addresses"] == ["127.0.0.1"]
    assert config["rtc"]["node_ip"] == "127.0.0.1"
    assert config["rtc"]["tcp_port"] == 0
    assert config["rtc"]["stun_servers"] == ["127.0.0.1:3478"]
    assert config["agents"]["target_load"] >= 1.0
