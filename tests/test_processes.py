"""The command line and the examples as real processes (integration tier).

Each test starts a fresh interpreter (``python -m livekit.plugins.metadata.cli``, an
example script, ``lk-metadata serve``) and checks what a user sees: the exit code,
one clear line, no traceback, no secret. They need no server; they live here rather
than in the unit tier because every process pays the full import of the SDKs.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from livekit import api

import livekit.plugins.metadata as md
from livekit.plugins.metadata import __version__
from livekit.plugins.metadata.tokens.issuer import TokenIssuer
from tests.fixtures.lk_serve import launch_serve, stop_serve

pytestmark = pytest.mark.integration

REPO = ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- examples (#25)

WORKERS = ["examples/agent.py", "examples/telephony/agent.py", "examples/entrypoint_metadata.py"]


def _run_example(argv: list[str], env: dict[str, str]) -> Any:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "REDIS_"))}
    return subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("example", WORKERS)
def test_every_worker_example_without_livekit_url_says_so_and_exits_1(example: str) -> None:
    result = _run_example([example, "dev"], {})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: LIVEKIT_URL is not set; start `livekit-server --dev` and export "
        "LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret"
    ]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"LIVEKIT_URL": "not-a-url", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s"},
            "error: LIVEKIT_URL is not a LiveKit URL",
        ),
        (
            {"LIVEKIT_URL": "ws://127.0.0.1:7880"},
            "LIVEKIT_API_KEY / LIVEKIT_API_SECRET are not set",
        ),
        (
            {"LIVEKIT_URL": "ws://127.0.0.1:9", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s"},
            "error: nothing answers at LIVEKIT_URL (127.0.0.1:9)",
        ),
    ],
    ids=["bad-url", "no-keys", "unreachable"],
)
def test_the_phone_worker_says_the_missing_setting_in_one_line_and_exits_1(
    env: dict[str, str], says: str
) -> None:
    result = _run_example(["examples/telephony/agent.py", "dev"], env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert says in lines[0]
    assert "Traceback" not in result.stderr


def test_the_client_says_when_the_token_endpoint_is_down() -> None:
    result = _run_example(["examples/client.py", "--endpoint", "http://127.0.0.1:9/token"], {})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: cannot reach the token endpoint at http://127.0.0.1:9/token: start it with "
        "`uv run lk-metadata serve`, or pass --endpoint URL"
    ]


@contextlib.contextmanager
def _endpoint(status: int, body: dict[str, Any]) -> Iterator[str]:
    """A token endpoint stand-in answering every POST with ``status`` and ``body``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token"
    finally:
        server.shutdown()
        server.server_close()


def test_the_client_says_when_livekit_is_unreachable() -> None:
    body = {"server_url": "ws://127.0.0.1:9", "participant_token": "x.y.z"}
    with _endpoint(201, body) as url:
        result = _run_example(["examples/client.py", "--endpoint", url], {})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: cannot connect to LiveKit at ws://127.0.0.1:9 (the endpoint's server_url): "
        "start `livekit-server --dev`, or set LIVEKIT_URL where the endpoint runs"
    ], result.stderr


def test_the_client_shows_the_endpoints_refusal() -> None:
    body = {"error": {"code": "agent_not_allowed", "message": "agent 'x' is not allowed"}}
    with _endpoint(403, body) as url:
        result = _run_example(["examples/client.py", "--endpoint", url], {})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: the token endpoint answered HTTP 403: agent 'x' is not allowed"
    ]


# --------------------------------------------------------------------------- lk-metadata
# Two real processes, started together: each pays the full ``livekit.agents`` import.

CLI_KEY = "APIclitest"
CLI_SECRET = "cli-secret-" + "q" * 40
CLI_ENV = {
    "LIVEKIT_API_KEY": CLI_KEY,
    "LIVEKIT_API_SECRET": CLI_SECRET,
    "COLUMNS": "200",
    "NO_COLOR": "1",
}


def start_cli(*args: str, script: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, **CLI_ENV}
    entry = Path(sys.executable).with_name("lk-metadata")
    if script and entry.exists():
        command = [str(entry), *args]
    else:
        command = [sys.executable, "-m", "livekit.plugins.metadata.cli", *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def test_real_processes() -> None:
    """``python -m ...cli`` mints a verifiable token; the console script exits 2 cleanly."""
    minting = start_cli("token", "-i", "u", "-r", "r", "-m", '{"a": 1}', "--agent", "triage")
    failing = start_cli("token", "-i", "u", "-r", "r", "--metadata", "{nope", script=True)
    out, err = minting.communicate(timeout=120)
    bad_out, bad_err = failing.communicate(timeout=120)

    assert minting.returncode == 0, err
    verified = TokenIssuer(CLI_KEY, CLI_SECRET).verify(out.strip())
    assert verified.metadata == {"a": 1}
    assert [d.agent_name for d in verified.dispatches] == ["triage"]

    assert failing.returncode == 2
    assert "--metadata" in bad_err
    assert bad_out == ""
    for text in (out, err, bad_out, bad_err):
        assert "Traceback" not in text
        assert CLI_SECRET not in text


def test_version_option_of_the_installed_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "livekit.plugins.metadata.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, f"lk-metadata {__version__}\n"), done.stderr


# --------------------------------------------------------------------------- files and stdin (#22.7)


def _cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugin"), str(ROOT)])
    return subprocess.run(
        [sys.executable, "-m", "livekit.plugins.metadata.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_serve_on_a_device_config_exits_with_one_clear_line(tmp_path: Path) -> None:
    link = tmp_path / "server.yaml"
    link.symlink_to("/dev/zero")
    result = _cli("serve", "-c", str(link))
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "not a regular file" in err
    assert "unexpected failure" not in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "stdin",
    [b"\xff\xfe\x00\x01binary", bytes(range(256)), b"\xe9t\xe9", b"", b"a" * 70_000],
    ids=["binary", "all-bytes", "latin-1", "empty", "huge"],
)
def test_verify_reads_any_bytes_on_stdin_and_answers_clearly(stdin: bytes) -> None:
    result = _cli("verify", "-", "--api-key", "k", "--api-secret", "s" * 32, stdin=stdin)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.startswith("error: token is invalid: standard input")
    assert "unexpected failure" not in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- lk-metadata serve


def test_serve_command_as_a_subprocess(tmp_path: Path) -> None:
    """``lk-metadata serve`` with no config: dev keys (said on stderr), the default rules."""
    server = launch_serve(tmp_path, edge_defaults=False, split_stderr=True)
    try:
        server.wait_ready(30)
        req = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/token",
            data=orjson.dumps({"participant_metadata": '{"department": "sales"}'}),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback http
            assert resp.status == 201
            body = orjson.loads(resp.read())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            claims = api.TokenVerifier("devkey", "secret").verify(body["participant_token"])
        assert claims.room_config is not None
        assert claims.room_config.agents[0].agent_name == "router-demo"
    finally:
        stop_serve(server)
    stdout, stderr = server.log_bytes().decode(), server.stderr_text()
    assert f"http://127.0.0.1:{server.port}/token" in stdout
    assert "curl" in stdout
    assert "devkey" in stderr
    assert body["participant_token"] not in stdout + stderr


# --------------------------------------------------------------------------- imports and the Plugin record

AGENT_SIDE = {
    "AdapterStats", "MetadataAdapter", "PublishResult", "RouteInput", "SessionHandle",
    "AgentFactoryMap", "Selection", "reroute", "route_of",
}  # fmt: skip
"""Names whose modules import ``livekit.agents`` (the agent wing)."""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (sys.modules and Plugin registry start empty)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


CORE = sorted(set(md.__all__) - AGENT_SIDE)
IMPORTS = {
    # what is imported -> the LiveKit modules it must not load
    "the bare package": ("import livekit.plugins.metadata", ("livekit.a", "livekit.rtc")),
    "the core names and the CLI": (
        "import livekit.plugins.metadata as md, livekit.plugins.metadata.cli\n"
        f"for name in {CORE!r}: getattr(md, name)",
        ("livekit.agents", "livekit.rtc"),
    ),
}


@pytest.mark.parametrize("case", sorted(IMPORTS))
def test_imports_without_the_agents_framework(case: str) -> None:
    """The package loads no SDK; the core and the CLI never load livekit.agents or rtc."""
    code, forbidden = IMPORTS[case]
    result = _python(
        f"import sys\n{code}\nprint(sorted(m for m in sys.modules if m.startswith({forbidden!r})))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_importing_the_adapter_registers_the_plugin_once() -> None:
    """In a fresh worker-like process, the agent wing registers exactly one Plugin record."""
    result = _python(
        "from livekit.agents import Plugin\n"
        "before = [p.package for p in Plugin.registered_plugins]\n"
        "from livekit.plugins.metadata import MetadataAdapter\n"
        "from livekit.plugins.metadata.agent.plugin import register\n"
        "again = register()\n"
        "mine = [p for p in Plugin.registered_plugins if p.package == 'livekit.plugins.metadata']\n"
        "import livekit.plugins.metadata as md\n"
        "print(before.count('livekit.plugins.metadata'), len(mine), again,"
        " mine[0].version == md.__version__, mine[0].title)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "1", "False", "True", "livekit.plugins.metadata"]


def test_registration_off_the_main_thread_does_not_raise() -> None:
    """LiveKit refuses registrations off the main thread: the record waits, the job goes on."""
    result = _python(
        "import threading\n"
        "from livekit.agents import Plugin\n"
        "from livekit.plugins.metadata.agent import plugin\n"
        "Plugin.registered_plugins.clear()\n"
        "out = []\n"
        "t = threading.Thread(target=lambda: out.append(plugin.register()))\n"
        "t.start(); t.join()\n"
        "print(out, len(Plugin.registered_plugins), plugin.register(), len(Plugin.registered_plugins))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[False] 0 True 1"
