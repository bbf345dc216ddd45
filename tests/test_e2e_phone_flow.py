"""The README's phone flow, step by step, with the simulated call (real processes, real server).

1. ``livekit-server --dev``: the session's local-only livekit-server fixture plays it
   (no Redis: ``sip call`` needs none);
2. ``python examples/telephony/agent.py dev`` with ``LIVEKIT_URL`` & keys;
3. every ``lk-metadata sip call`` line of the README's block, as written.

Also what a newcomer meets on the way: ``sip sync`` against a server without Redis,
wrong keys, a call nobody answers, an unreadable number (logged once, never echoed).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.fixtures.e2e import REPO
from tests.fixtures.livekit_server import LiveKitServer
from tests.readme_blocks import blocks
from tests.test_e2e_local_flow import process, wait_until

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
RULES = "examples/telephony/rules.yaml"


def phone_block() -> str:
    found = [b for b in blocks("README.md") if "examples/telephony/agent.py dev" in b.code]
    assert len(found) == 1
    assert found[0].marker == "needs-livekit"
    return found[0].code


@pytest.fixture(scope="module")
def phone_env(livekit_server: LiveKitServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "LK_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **livekit_server.env()}


@pytest.fixture(scope="module")
def phone_worker_dev(
    phone_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Step 2, as written: ``python examples/telephony/agent.py dev``."""
    log = tmp_path_factory.mktemp("phone") / "worker.log"
    argv = [sys.executable, "examples/telephony/agent.py", "dev"]
    with process(argv, phone_env, log):
        wait_until(lambda: "registered worker" in log.read_text(errors="replace"), "worker", log)
        yield log


def lk_metadata(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "lk-metadata"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_readme_calls_reach_the_agents_they_expect(
    phone_env: dict[str, str], phone_worker_dev: Path
) -> None:
    calls = [
        line
        for line in phone_block().splitlines()
        if line.startswith("uv run lk-metadata sip call")
    ]
    assert len(calls) == 2
    for line in calls:
        argv = shlex.split(line.split("#", 1)[0])[3:]  # after `uv run lk-metadata`
        result = lk_metadata(phone_env, *argv)
        expected = argv[argv.index("--expect") + 1]
        assert result.returncode == 0, result.stdout + result.stderr
        assert "(simulated: no SIP media, no trunk)" in result.stdout
        assert "joined room call-" in result.stdout
        assert "(participant kind sip)" in result.stdout
        assert "agent joined: " in result.stdout
        assert f"route: {expected} (rule: " in result.stdout
        assert "Traceback" not in result.stderr
        assert "Warning" not in result.stderr


def test_the_phone_flow_block_is_what_this_module_runs() -> None:
    code = phone_block()
    for step in (
        "livekit-server --dev",
        "export LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret",
        "uv run python examples/telephony/agent.py dev",
        f"uv run lk-metadata sip call --rules {RULES}",
    ):
        assert step in code, step


def test_a_hidden_number_reaches_the_default_and_json_says_so(
    phone_env: dict[str, str], phone_worker_dev: Path
) -> None:
    result = lk_metadata(
        phone_env, "sip", "call", "--rules", RULES, "--to", "+34910000002", "--json"
    )
    assert result.returncode == 0, result.stderr
    out = orjson.loads(result.stdout)
    assert out["answered"] is True
    assert out["dispatch"] == "phone-agents"
    assert out["route"] == "support"
    assert out["route.rule"] == "support-line"
    assert out["room"].startswith("call-anonymous_")


def test_the_wrong_agent_answering_exits_1(
    phone_env: dict[str, str], phone_worker_dev: Path
) -> None:
    result = lk_metadata(
        phone_env, "sip", "call", "--rules", RULES, "--to", "+34910000001", "--expect", "support"
    )
    assert result.returncode == 1
    assert "route: sales" in result.stdout
    assert "expected support, but sales answered" in result.stdout


def test_an_unreadable_number_routes_to_the_default_and_is_logged_once_without_it(
    phone_env: dict[str, str], phone_worker_dev: Path
) -> None:
    result = lk_metadata(
        phone_env, "sip", "call", "--rules", RULES, "--to", "not-a-number", "--from", "+34600000077"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "route: reception (rule: default)" in result.stdout
    log = phone_worker_dev.read_text(errors="replace")
    note = "attribute sip.trunkPhoneNumber (12 characters) is not a phone number (it has no digits)"
    assert log.count(note) == 1, log[-3000:]
    ours = [line for line in log.splitlines() if "livekit.plugins.metadata" in line]
    assert ours
    assert not [line for line in ours if "not-a-number" in line or "+34600000077" in line]
    # (livekit.agents' own DEBUG lines in dev mode name the participant, sip_<number>.)


def test_a_call_nobody_answers_exits_1_naming_the_worker(phone_env: dict[str, str]) -> None:
    result = lk_metadata(
        phone_env,
        "sip",
        "call",
        "--agent",
        "nobody-registered",
        "--to",
        "+34910000001",
        "--wait",
        "2",
    )
    assert result.returncode == 1
    assert (
        "no agent joined within 2s: is a worker registered as 'nobody-registered'" in result.stdout
    )


def test_wrong_keys_and_an_unreachable_server_are_one_line_each(
    phone_env: dict[str, str],
) -> None:
    wrong = {**phone_env, "LIVEKIT_API_SECRET": "not-the-secret-" + "x" * 20}
    result = lk_metadata(wrong, "sip", "call", "--agent", "a", "--to", "+34910000001")
    assert result.returncode == 1
    errors = [x for x in result.stderr.splitlines() if x.strip()]
    assert errors == [
        "error: LiveKit refused the caller's token (HTTP 401): set LIVEKIT_API_KEY and "
        "LIVEKIT_API_SECRET to a key pair from the server's `keys:` "
        "(`livekit-server --dev`: devkey / secret)"
    ]
    down = {**phone_env, "LIVEKIT_URL": "ws://127.0.0.1:9"}
    result = lk_metadata(down, "sip", "call", "--agent", "a", "--to", "+34910000001")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: cannot reach LiveKit at 127.0.0.1:9: start `livekit-server --dev`, or set "
        "LIVEKIT_URL to your server's URL"
    ]


def test_sip_sync_without_redis_and_with_a_wrong_secret_names_the_fix(
    phone_env: dict[str, str],
) -> None:
    result = lk_metadata(phone_env, "sip", "sync", "--rules", RULES, "--dry-run")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: could not list the SIP dispatch rules: this livekit-server has no SIP API "
        "(SIP needs Redis): start `redis-server` and run `livekit-server --dev --redis-host "
        "127.0.0.1:6379` (or add `redis:` to its config)"
    ]
    wrong = {**phone_env, "LIVEKIT_API_SECRET": "not-the-secret-" + "x" * 20}
    result = lk_metadata(wrong, "sip", "sync", "--rules", RULES, "--dry-run")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "HTTP 401" in lines[0]
    assert "LIVEKIT_API_KEY and LIVEKIT_API_SECRET" in lines[0]
