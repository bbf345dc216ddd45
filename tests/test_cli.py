"""Unit tests for ``lk-metadata`` through typer's CliRunner (real processes: test_processes.py)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning
from typer.testing import CliRunner

from livekit.plugins.metadata import cli
from livekit.plugins.metadata.cli import app, parse_duration
from livekit.plugins.metadata.tokens.issuer import TokenIssuer

pytestmark = pytest.mark.unit

KEY = "APIclitest"
SECRET = "cli-secret-" + "q" * 40
ENV = {"LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET, "COLUMNS": "200", "NO_COLOR": "1"}
SENTINEL = "hunter2-sentinel"

RULES = """\
rules:
  - name: blocked
    when: {tenant: banned}
    reject: true
  - name: spanish
    when: {lang: es}
    agent: support-es
default: general
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str, env: dict[str, str] | None = None, **kw: Any) -> Any:
    return runner.invoke(app, list(args), env=ENV if env is None else env, **kw)


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, SECRET, algorithms=["HS256"], issuer=KEY)


def assert_clean(result: Any) -> None:
    text = result.stdout + result.stderr
    assert "Traceback" not in text
    assert SECRET not in text
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --------------------------------------------------------------------------- token


def test_token_prints_a_verifiable_token(runner: CliRunner) -> None:
    result = invoke(
        runner,
        "token",
        "--identity",
        "user-1",
        "--room",
        "room-1",
        "--name",
        "Ada",
        "--metadata",
        '{"tier": "gold"}',
        "--attribute",
        "queue=vip",
        "-a",
        "empty=",
        "--agent",
        "triage",
        "--deployment",
        "staging",
        "--job-metadata",
        '{"lang": "es"}',
    )
    assert result.exit_code == 0, result.stderr
    assert_clean(result)
    token = result.stdout.strip()
    claims = claims_of(token)
    assert claims["sub"] == "user-1"
    assert claims["name"] == "Ada"
    assert claims["metadata"] == '{"tier":"gold"}'
    assert claims["attributes"] == {"queue": "vip", "empty": ""}
    assert claims["roomConfig"] == {
        "agents": [{"agentName": "triage", "metadata": '{"lang":"es"}', "deployment": "staging"}]
    }
    assert claims["video"] == {
        "roomJoin": True,
        "room": "room-1",
        "canPublish": True,
        "canSubscribe": True,
        "canPublishData": True,
    }
    assert claims["exp"] - claims["nbf"] == 600


def test_token_json_output_and_flags(runner: CliRunner, tmp_path: Path) -> None:
    md = tmp_path / "md.json"
    md.write_text('{\n  "from": "file"\n}\n', encoding="utf-8")
    args = ["token", "-i", "u", "-r", "r", "-m", f"@{md}", "--valid-for", "1h30m"]
    result = invoke(runner, *args, "--allow-update-metadata", "--json", "--url", "wss://lk.test")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    # The token endpoint's answer, so the same client code can read either.
    assert out == {"server_url": "wss://lk.test", "participant_token": out["participant_token"]}
    claims = claims_of(out["participant_token"])
    assert claims["video"]["canUpdateOwnMetadata"] is True
    assert claims["metadata"] == '{"from":"file"}'
    assert claims["exp"] - claims["nbf"] == 5400
    from_env = invoke(runner, *args, "--json", env={**ENV, "LIVEKIT_URL": "wss://env.test"})
    assert json.loads(from_env.stdout)["server_url"] == "wss://env.test"
    default = invoke(runner, *args, "--json")
    assert json.loads(default.stdout)["server_url"] == "ws://localhost:7880"
    assert "LIVEKIT_URL is not set" in default.stderr


def test_token_and_verify_fall_back_to_dev_keys(runner: CliRunner) -> None:
    minted = invoke(runner, "token", "-i", "u", "-r", "r", env={"COLUMNS": "200"})
    assert minted.exit_code == 0, minted.stderr
    token = minted.stdout.strip()
    with pytest.warns(InsecureKeyLengthWarning):  # the dev secret is 6 bytes
        assert jwt.decode(token, "secret", algorithms=["HS256"], issuer="devkey")["sub"] == "u"
    for result in (minted, invoke(runner, "verify", token, env={"COLUMNS": "200"})):
        assert result.exit_code == 0, result.stderr
        # The same warning as `serve`, once, and no PyJWT warning with a file path.
        assert result.stderr.startswith(
            "WARNING: LIVEKIT_API_KEY / LIVEKIT_API_SECRET are not set."
        )
        assert result.stderr.count("WARNING") == 1
        assert "InsecureKeyLengthWarning" not in result.stderr
        assert ".py:" not in result.stderr
    assert "identity:   u" in result.stdout


def test_short_secret_warns_in_one_clean_line(runner: CliRunner) -> None:
    env = {"LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": "short", "COLUMNS": "200"}
    result = invoke(runner, "token", "-i", "u", "-r", "r", env=env)
    assert result.exit_code == 0
    assert result.stderr == (
        "warning: the API secret is 5 bytes; HS256 needs at least 32 "
        "(PyJWT's InsecureKeyLengthWarning)\n"
    )


def test_the_dev_pair_set_on_purpose_prints_nothing(runner: CliRunner) -> None:
    """devkey/secret exported for `livekit-server --dev` is known to be short: no noise."""
    env = {"LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "secret", "COLUMNS": "200"}
    result = invoke(runner, "token", "-i", "u", "-r", "r", env=env)
    assert result.exit_code == 0
    assert result.stderr == ""
    other = invoke(runner, "token", "-i", "u", "-r", "r", env={**env, "LIVEKIT_API_KEY": "k2"})
    assert "the API secret is 6 bytes" in other.stderr


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--metadata", '{"a": '], "--metadata"),
        (["--metadata", "[1, 2]"], "--metadata"),
        (["--metadata", "@/nonexistent/md.json"], "--metadata"),
        (["--agent", "a", "--job-metadata", "not json"], "--job-metadata"),
        (["--attribute", "novalue"], "--attribute"),
        (["--valid-for", "10x"], "--valid-for"),
        (["--valid-for", "600"], "--valid-for"),
        (["--valid-for", "0s"], "--valid-for"),
        (["--deployment", "d"], "--deployment"),
    ],
)
def test_token_usage_errors_exit_2_naming_the_flag(
    runner: CliRunner, args: list[str], flag: str
) -> None:
    result = invoke(runner, "token", "-i", "u", "-r", "r", *args)
    assert result.exit_code == 2
    assert flag in result.stderr
    assert result.stdout == ""
    assert_clean(result)


def test_token_validation_errors_are_one_line(runner: CliRunner) -> None:
    result = invoke(runner, "token", "-i", "x" * 257, "-r", "r")
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == "error: identity is 257 bytes (UTF-8), over LiveKit's limit of 256"
    )
    result = invoke(runner, "token", "-i", "u", "-r", "r", "-a", f"lk.x={SENTINEL}")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: attribute 'lk.x'")
    assert SENTINEL not in result.stderr
    assert_clean(result)


def test_token_needs_both_keys_or_neither(runner: CliRunner) -> None:
    result = invoke(runner, "token", "-i", "u", "-r", "r", env={"LIVEKIT_API_KEY": KEY})
    assert result.exit_code == 1
    assert "LIVEKIT_API_SECRET" in result.stderr
    assert_clean(result)
    result = invoke(runner, "verify", "x", env={"LIVEKIT_API_SECRET": SECRET})
    assert result.exit_code == 1
    assert "LIVEKIT_API_KEY" in result.stderr
    result = invoke(
        runner,
        "token",
        "-i",
        "u",
        "-r",
        "r",
        "--api-key",
        "APIflag",
        "--api-secret",
        SECRET,
        env={},
    )
    assert result.exit_code == 0
    assert jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])["iss"] == "APIflag"


# --------------------------------------------------------------------------- verify


def test_verify_prints_claims(runner: CliRunner) -> None:
    token = TokenIssuer(KEY, SECRET).mint(
        "user-1",
        "room-1",
        name="Ada",
        metadata={"tier": "gold"},
        attributes={"q": "1"},
        dispatch="triage",
        job_metadata={"lang": "es"},
    )
    result = invoke(runner, "verify", token)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "valid:      yes" in out
    assert "identity:   user-1" in out
    assert "room:       room-1" in out
    assert '    "tier": "gold"' in out  # pretty-printed
    assert "dispatch:   triage" in out
    assert '"lang": "es"' in out
    assert "(in 9m" in out or "(in 10m" in out
    assert token not in out
    assert_clean(result)

    as_json = invoke(runner, "verify", "--json", "-", input=token + "\n")
    assert as_json.exit_code == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["valid"] is True
    assert data["metadata"] == {"tier": "gold"}
    assert data["dispatches"] == [{"agent_name": "triage", "metadata": {"lang": "es"}}]
    assert data["grants"]["video"]["roomJoin"] is True


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: TokenIssuer(KEY, "z" * 40).mint("u", "r"), "signature check failed"),
        (lambda: TokenIssuer("APIother", SECRET).mint("u", "r"), "issuer check failed"),
        (
            lambda: TokenIssuer(KEY, SECRET, clock=lambda: time.time() - 7200).mint("u", "r"),
            "expired",
        ),
        (lambda: "garbage", "malformed"),
    ],
)
def test_verify_invalid_exits_1_with_reason(runner: CliRunner, make: Any, reason: str) -> None:
    token = make()
    result = invoke(runner, "verify", token)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: token is invalid: ")
    assert reason in result.stderr
    assert token not in result.stderr
    assert result.stdout == ""
    assert_clean(result)


def odd_token(**claims: Any) -> str:
    payload = {
        "sub": "u",
        "iss": KEY,
        "exp": int(time.time()) + 600,
        "video": {"roomJoin": True, "room": "r"},
        **claims,
    }
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, SECRET, "HS256")


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"metadata": {"a": SENTINEL}}, "'metadata' claim must be a string"),
        ({"metadata": 5}, "'metadata' claim must be a string"),
        ({"exp": 1e20}, "'exp' claim is not a date in range"),
        ({"roomConfig": {"agents": "x"}}, "'roomConfig' claim is not a valid RoomConfiguration"),
        ({"attributes": ["k", SENTINEL]}, "'attributes' claim"),
        ({"sub": None}, "no participant identity"),
        ({"video": None}, "no video grant"),
        ({"video": {"room": "r"}}, "no roomJoin"),
    ],
)
def test_verify_odd_claims_exit_1_naming_the_claim(
    runner: CliRunner, claims: dict[str, Any], reason: str
) -> None:
    result = invoke(runner, "verify", odd_token(**claims))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: token is invalid: ")
    assert reason in result.stderr
    assert "unexpected failure" not in result.stderr
    assert SENTINEL not in result.stderr
    assert_clean(result)


def test_verify_shows_every_grant(runner: CliRunner) -> None:
    from livekit import api

    token = TokenIssuer(KEY, SECRET).mint("u", "r", grants=[api.SIPGrants(call=True)])
    result = invoke(runner, "verify", "--json", token)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["grants"]["sip"] == {"admin": False, "call": True}


# --------------------------------------------------------------------------- route / serve


def test_route_and_explain(runner: CliRunner, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    result = invoke(runner, "route", "--rules", str(rules), "--metadata", '{"lang": "es"}')
    assert result.exit_code == 0, result.stderr
    assert "support-es" in result.stdout
    explained = invoke(
        runner,
        "route",
        "--rules",
        str(rules),
        "-m",
        f'{{"lang": "fr", "x": "{SENTINEL}"}}',
        "--explain",
    )
    assert explained.exit_code == 0, explained.stderr
    assert "general" in explained.stdout
    assert "spanish" in explained.stdout
    assert "blocked" in explained.stdout
    assert SENTINEL not in explained.stdout
    rejected = invoke(runner, "route", "--rules", str(rules), "-m", '{"tenant": "banned"}')
    assert rejected.exit_code == 0
    assert "reject" in rejected.stdout


def test_route_explain_prints_the_trace_even_when_nothing_matches(
    runner: CliRunner, tmp_path: Path
) -> None:
    rules = tmp_path / "nodefault.yaml"
    rules.write_text(
        "rules:\n  - name: sales-only\n    when: {department: sales}\n    agent: sales\n",
        encoding="utf-8",
    )
    result = invoke(
        runner, "route", "--rules", str(rules), "-m", '{"department": "x"}', "--explain"
    )
    assert result.exit_code == 1
    assert "sales-only" in result.stdout
    assert result.stderr.startswith("error: the one routing rule did not match")
    assert "[[" not in result.stderr  # the keys, never a nested list
    assert_clean(result)


def test_route_errors(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [{agent: a, when: {x: {bogus: 1}}}]\n", encoding="utf-8")
    result = invoke(runner, "route", "--rules", str(bad), "-m", "{}")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert_clean(result)
    missing = invoke(runner, "route", "--rules", str(tmp_path / "none.yaml"), "-m", "{}")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: ")
    assert_clean(missing)
    bad_json = invoke(runner, "route", "--rules", str(bad), "-m", "{")
    assert bad_json.exit_code == 2
    assert "--metadata" in bad_json.stderr


def test_serve_calls_server_run(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    from livekit.plugins.metadata.server import run as server

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(server, "run", lambda **kw: calls.append(kw))
    result = invoke(runner, "serve", "--config", "cfg.yaml", "--host", "127.0.0.1", "--port", "9")
    assert result.exit_code == 0, result.stderr
    assert calls == [{"config_path": "cfg.yaml", "host": "127.0.0.1", "port": 9, "workers": 1}]
    result = invoke(runner, "serve", "--workers", "3")
    assert result.exit_code == 0, result.stderr
    assert calls[-1]["workers"] == 3
    assert invoke(runner, "serve", "--workers", "0").exit_code == 2


def test_serve_without_server_module(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "livekit.plugins.metadata.server.run", None)
    result = invoke(runner, "serve")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the token server is not available")
    assert_clean(result)


@pytest.mark.parametrize("command", [[], ["token"], ["verify"], ["route"], ["serve"]])
def test_help_everywhere(runner: CliRunner, command: list[str]) -> None:
    result = invoke(runner, *command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.stdout
    assert SECRET not in result.stdout
    assert "<bool>" not in result.stdout


def test_parse_duration() -> None:
    assert parse_duration("90s").total_seconds() == 90
    assert parse_duration("10m").total_seconds() == 600
    assert parse_duration("1h30m").total_seconds() == 5400
    assert parse_duration("1.5h").total_seconds() == 5400
    assert parse_duration("500ms").total_seconds() == 0.5
    for bad in ("", "10", "m", "10 m", "-5m", "1d"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_main_never_shows_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(SENTINEL)

    monkeypatch.setattr(cli, "app", boom)
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err == "error: unexpected failure (RuntimeError)\n"


def test_the_module_docstring_names_every_command() -> None:
    """``lk-metadata``'s docstring lists each command and sub-command it registers."""
    import typer.main

    group = typer.main.get_command(app)
    assert isinstance(group, typer.main.TyperGroup)
    doc = cli.__doc__ or ""
    for name, command in group.commands.items():
        assert f"``{name}" in doc, name
        for sub in getattr(command, "commands", {}):
            assert sub in doc.split(f"``{name} ", 1)[1].split("``", 1)[0], f"{name} {sub}"
