"""First contact (issue 25): what a newcomer meets on the way from a clone to a routed call.

Each test pins one finding: a message in the user's terms, a refusal with a non-zero
exit, a limitation said out loud. The e2e flows live in ``test_e2e_local_flow.py`` and
``test_e2e_telephony.py``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import JobContext
from livekit.agents.testing import fake_job_context as _fake_job_context
from typer.testing import CliRunner

from livekit.plugins.metadata.agent.selection import AgentFactoryMap
from livekit.plugins.metadata.cli import app
from livekit.plugins.metadata.errors import ConfigError
from livekit.plugins.metadata.routing.router import MetadataRouter

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
PHONE_RULES = REPO / "examples" / "telephony" / "rules.yaml"
KEY, SECRET = "APIkey123", "s3cr3t-0123456789abcdef0123456789abcdef"
ENV = {"LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET, "LIVEKIT_URL": ""}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=ENV if env is None else env)


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[JobContext]:
    with _fake_job_context(job_id=job_id) as ctx:
        try:
            yield ctx
        finally:
            ctx._tempdir.cleanup()


# --------------------------------------------------------------------------- invalid numbers


@pytest.mark.parametrize(
    ("number", "reason"),
    [("not-a-number", "it has no digits"), ("12", "too short"), ("+34 12", "too short")],
)
def test_explain_says_a_caller_number_could_not_be_read_and_why(
    runner: CliRunner, number: str, reason: str
) -> None:
    attrs = f'{{"sip.trunkPhoneNumber": "{number}"}}'
    result = invoke(
        runner, "route", "--rules", str(PHONE_RULES), "-m", "{}", "--attributes", attrs, "--explain"
    )
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("rules[0]"))
    assert f"a string of {len(number)} characters that is not a phone number" in line
    assert reason in line
    assert number not in result.stdout  # never the value


def test_a_number_that_reads_but_does_not_match_is_just_a_string(runner: CliRunner) -> None:
    attrs = '{"sip.trunkPhoneNumber": "+34 910 999 999"}'
    result = invoke(
        runner, "route", "--rules", str(PHONE_RULES), "-m", "{}", "--attributes", attrs, "--explain"
    )
    assert "(found: string)" in result.stdout
    assert "not a phone number" not in result.stdout


def _factories() -> dict[str, Any]:
    from livekit.agents import Agent

    return {
        name: (lambda route: Agent(instructions="x"))
        for name in ("sales", "support", "support-pt", "reception")
    }


async def test_the_worker_logs_an_unreadable_number_once_per_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    agents = AgentFactoryMap(MetadataRouter.from_file(PHONE_RULES), _factories())
    caller = {"sip.trunkPhoneNumber": "not-a-number", "sip.phoneNumber": "+34600000001"}
    caplog.set_level(logging.WARNING, logger="livekit.plugins.metadata")
    with job_context("AJ_one"):
        for _ in range(3):  # the first route and two re-routes of one call
            assert agents.select({}, attributes=caller).route.agent == "reception"
    with job_context("AJ_two"):
        agents.select({}, attributes=caller)
    lines = [r.getMessage() for r in caplog.records if "not a phone number" in r.getMessage()]
    assert len(lines) == 2, lines  # once per call
    assert "AJ_one" in lines[0]
    assert "AJ_two" in lines[1]
    assert "sip.trunkPhoneNumber (12 characters)" in lines[0]
    assert "it has no digits" in lines[0]
    assert all("not-a-number" not in line and "+34600000001" not in line for line in lines)


async def test_readable_numbers_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    agents = AgentFactoryMap(MetadataRouter.from_file(PHONE_RULES), _factories())
    caplog.set_level(logging.WARNING, logger="livekit.plugins.metadata")
    with job_context("AJ_ok"):
        agents.select({}, attributes={"sip.trunkPhoneNumber": "910 000 001"})
    assert not [r for r in caplog.records if "not a phone number" in r.getMessage()]


# --------------------------------------------------------------------------- messages (item 6)


def _rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_default_names_the_metadata_keys_plainly(runner: CliRunner, tmp_path: Path) -> None:
    rules = _rules(tmp_path, "rules:\n  - when: {x: 1}\n    agent: a\n")
    empty = invoke(runner, "route", "--rules", str(rules), "-m", "{}")
    assert empty.exit_code == 1
    assert "[[" not in empty.stderr
    assert "[]" not in empty.stderr
    assert "empty metadata" in empty.stderr
    assert "default: <agent>" in empty.stderr
    keyed = invoke(runner, "route", "--rules", str(rules), "-m", '{"y": 1, "z": 2}')
    assert "metadata keys ['y', 'z']" in keyed.stderr


@pytest.mark.parametrize(("bound", "found"), [("abc", "found text"), ("true", "found true/false")])
def test_a_numeric_bound_that_is_not_a_number_says_what_it_found(
    tmp_path: Path, bound: str, found: str
) -> None:
    rules = _rules(tmp_path, f"rules:\n  - when: {{x: {{gt: {bound}}}}}\n    agent: a\n")
    with pytest.raises(ConfigError) as err:
        MetadataRouter.from_file(rules)
    assert "booleans are not numbers" not in err.value.message
    assert "expected a number to compare with, e.g. gt: 10" in err.value.message
    assert found in err.value.message


@pytest.mark.parametrize(
    ("number", "says", "never"),
    [
        ("+34 12", "too short for its country", "phone_region"),
        ("+999 1234", "no country has the code", "phone_region"),
        ("910 000 001", "phone_region", "too short"),
    ],
)
def test_a_bad_rule_number_says_why_and_only_suggests_phone_region_for_national_ones(
    tmp_path: Path, number: str, says: str, never: str
) -> None:
    rules = _rules(
        tmp_path,
        f'rules:\n  - when_attributes: {{sip.phoneNumber: {{phone: "{number}"}}}}\n'
        "    agent: a\ndefault: b\n",
    )
    with pytest.raises(ConfigError) as err:
        MetadataRouter.from_file(rules)
    assert says in err.value.message
    assert never not in err.value.message


@pytest.mark.parametrize("command", ["token", "route"])
def test_a_missing_at_file_says_what_the_os_says(runner: CliRunner, command: str) -> None:
    args = ["-i", "a", "-r", "b"] if command == "token" else ["--rules", str(PHONE_RULES)]
    result = invoke(runner, command, *args, "-m", "@/no/such/metadata.json")
    assert result.exit_code == 2
    assert "cannot read /no/such/metadata.json: No such file or directory" in result.stderr
    assert "FileNotFoundError" not in result.stderr


# --------------------------------------------------------------------------- LiveKit URLs


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("not-a-url", "it has no scheme"),
        ("127.0.0.1:7880", "it has no scheme"),
        ("redis://127.0.0.1:6379", "its scheme is 'redis'"),
        ("ws://", "it has no host"),
        ("ws://host:notaport", "does not parse"),
    ],
)
def test_token_refuses_a_livekit_url_that_no_sdk_can_use(
    runner: CliRunner, url: str, problem: str
) -> None:
    result = invoke(
        runner, "token", "-i", "a", "-r", "b", "--json", env={**ENV, "LIVEKIT_URL": url}
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    assert problem in result.stderr
    assert "ws://127.0.0.1:7880" in result.stderr  # the fix, by example
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("url", ["ws://127.0.0.1:7880", "wss://x.livekit.cloud", "https://h/"])
def test_token_takes_every_livekit_url_form(runner: CliRunner, url: str) -> None:
    result = invoke(
        runner, "token", "-i", "a", "-r", "b", "--json", env={**ENV, "LIVEKIT_URL": url}
    )
    assert result.exit_code == 0, result.stderr
    assert f'"server_url": "{url}"' in result.stdout


def test_the_token_server_config_refuses_a_bad_livekit_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from livekit.plugins.metadata.server.config import ServerConfig

    monkeypatch.setenv("LIVEKIT_URL", "not-a-url")
    with pytest.raises(ConfigError) as err:
        ServerConfig.from_mapping({})
    assert (
        "server_url (or LIVEKIT_URL) is not a LiveKit URL (it has no scheme)" in err.value.message
    )
    assert "Value error" not in err.value.message


# --------------------------------------------------------------------------- sip sync errors


class _RefusingSip:
    """A SIP service stand-in that answers every call with one Twirp error."""

    def __init__(self, code: str, message: str, status: int) -> None:
        self.error = (code, message, status)

    async def list_dispatch_rule(self, request: object) -> object:
        from livekit import api

        code, message, status = self.error
        raise api.TwirpError(code, message, status=status)


class _Client:
    def __init__(self, sip: _RefusingSip) -> None:
        self.sip = sip


async def test_a_server_without_sip_says_redis_is_required_and_how() -> None:
    from livekit.plugins.metadata.errors import DispatchError
    from livekit.plugins.metadata.provision.sip import list_dispatch_rules

    sip = _RefusingSip("internal", "sip not connected (redis required)", 500)
    with pytest.raises(DispatchError) as err:
        await list_dispatch_rules(_Client(sip))  # type: ignore[arg-type]
    message = err.value.message
    assert "no SIP API (SIP needs Redis)" in message
    assert "--redis-host 127.0.0.1:6379" in message
    assert "\n" not in message


async def test_a_wrong_key_or_secret_names_both_and_the_dev_pair() -> None:
    from livekit.plugins.metadata.errors import DispatchError
    from livekit.plugins.metadata.provision.sip import list_dispatch_rules

    with pytest.raises(DispatchError) as err:
        await list_dispatch_rules(_Client(_RefusingSip("unknown", "", 401)))  # type: ignore[arg-type]
    message = err.value.message
    assert "LIVEKIT_API_KEY and LIVEKIT_API_SECRET" in message
    assert "devkey / secret" in message
    assert "server logs" not in message


# --------------------------------------------------------------------------- install script


def test_the_readme_puts_the_install_dir_on_path_before_livekit_server() -> None:
    from tests.readme_blocks import blocks

    flow = next(b.code for b in blocks("README.md") if "examples/agent.py dev" in b.code)
    lines = flow.splitlines()
    install = next(i for i, x in enumerate(lines) if "bash .ci/install-livekit-server" in x)
    path = next(i for i, x in enumerate(lines) if 'export PATH="$HOME/.local/bin:$PATH"' in x)
    server = next(i for i, x in enumerate(lines) if x.startswith("livekit-server --dev"))
    assert install < path < server


async def test_entrypoint_metadata_loads_the_job_and_greets() -> None:
    """examples/entrypoint_metadata.py's entrypoint, on a stand-in room."""
    import importlib.util

    from tests.test_adapter import Participant, Room, fake_job_context

    spec = importlib.util.spec_from_file_location(
        "entrypoint_metadata", REPO / "examples" / "entrypoint_metadata.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    room = Room()
    room.join(Participant("caller-1", metadata='{"language": "es"}'))
    with fake_job_context(room=room, job_metadata='{"plan": "pro"}') as ctx:
        await module.entrypoint(ctx)
    assert room.local_participant.attributes == {"greeted": "true"}


def test_every_example_file_is_in_a_readme() -> None:
    readmes = (REPO / "README.md").read_text() + (REPO / "examples" / "README.md").read_text()
    files = [
        p.relative_to(REPO / "examples").as_posix()
        for p in (REPO / "examples").rglob("*")
        if p.is_file() and p.name != "README.md" and "__pycache__" not in p.parts
    ]
    assert files
    missing = [f for f in files if f"({f})" not in readmes and f"examples/{f}" not in readmes]
    assert not missing, missing


def test_examples_import_from_where_the_readme_does() -> None:
    """The package top level, or a submodule the README itself imports from."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    deep = [
        f"{p.relative_to(REPO)}: {line.strip()}"
        for p in (REPO / "examples").rglob("*.py")
        for line in p.read_text(encoding="utf-8").splitlines()
        if line.startswith(("from livekit.plugins.metadata.", "import livekit.plugins.metadata."))
        and f"{line.split()[1]} import" not in readme
    ]
    assert not deep, deep


# --------------------------------------------------------------------------- dev keys, verify


def test_a_worker_with_the_dev_keys_says_so_once_and_pyjwt_never(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import warnings

    import jwt
    from jwt.warnings import InsecureKeyLengthWarning

    from livekit.plugins.metadata.agent import plugin

    monkeypatch.setenv("LIVEKIT_API_KEY", "devkey")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "secret")
    monkeypatch.delenv("LK_METADATA_DEV_KEYS_SAID", raising=False)
    monkeypatch.setattr(plugin, "_quieted", False)
    caplog.set_level(logging.WARNING, logger="livekit.plugins.metadata")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert plugin.quiet_dev_keys()
        assert plugin.quiet_dev_keys()
        jwt.encode({"sub": "agent"}, "secret", algorithm="HS256")  # what the worker does
    assert not [w for w in seen if issubclass(w.category, InsecureKeyLengthWarning)]
    notes = [r for r in caplog.records if r.getMessage() == plugin.DEV_KEYS_NOTE]
    assert len(notes) == 1
    # A job process the worker starts inherits the marker and says nothing.
    monkeypatch.setattr(plugin, "_quieted", False)
    caplog.clear()
    assert plugin.quiet_dev_keys()
    assert not caplog.records


def test_other_keys_keep_pyjwts_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from livekit.plugins.metadata.agent import plugin

    monkeypatch.setenv("LIVEKIT_API_KEY", "mykey")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "short")
    monkeypatch.setattr(plugin, "_quieted", False)
    assert not plugin.quiet_dev_keys()


def test_verify_says_when_a_token_is_valid_only_within_the_leeway(runner: CliRunner) -> None:
    import time as _time

    import jwt

    now = int(_time.time())
    claims = {"iss": KEY, "sub": "user-1", "exp": now - 5, "nbf": now - 600}
    claims["video"] = {"roomJoin": True, "room": "r"}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    lenient = invoke(runner, "verify", token)
    assert lenient.exit_code == 0, lenient.stderr
    first = lenient.stdout.splitlines()[0]
    assert first.startswith("valid:      yes, only within the leeway: it expired ")
    assert "(--leeway 60s; --leeway 0s refuses it)" in first
    as_json = invoke(runner, "verify", "--json", token)
    assert '"within_leeway_only": true' in as_json.stdout
    strict = invoke(runner, "verify", "--leeway", "0s", token)
    assert strict.exit_code == 1
    assert "token is invalid" in strict.stderr
    wide = invoke(runner, "verify", "--leeway", "1s", token)
    assert wide.exit_code == 1


def test_verify_of_a_fresh_token_says_plainly_valid(runner: CliRunner) -> None:
    token = invoke(runner, "token", "-i", "a", "-r", "b").stdout.strip()
    result = invoke(runner, "verify", token)
    assert (
        result.stdout.splitlines()[0]
        == "valid:      yes (signature, issuer, expiry and claims checked)"
    )
    assert '"within_leeway_only": false' in invoke(runner, "verify", "--json", token).stdout


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["token"],
        ["verify"],
        ["route"],
        ["serve"],
        ["sip"],
        ["sip", "export"],
        ["sip", "sync"],
        ["sip", "call"],
    ],
    ids=lambda c: " ".join(c) or "lk-metadata",
)
def test_help_uses_one_metavar_style(runner: CliRunner, command: list[str]) -> None:
    """Every value is an UPPERCASE word (FILE, JSON, URL...): no <str>, <path>, {TOKEN}."""
    import re

    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert not re.search(r"<[a-z][^>]*>|\{[A-Z]+\}", result.stdout), result.stdout


def test_the_benchmark_table_lives_in_bench_readme_with_a_short_summary_left() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Performance\n", 1)[1].split("\n## ", 1)[0]
    assert "| what |" not in readme
    assert len([line for line in section.splitlines() if line.strip()]) == 3
    assert "[`bench/README.md`](bench/README.md)" in section
    bench = (REPO / "bench" / "README.md").read_text(encoding="utf-8")
    assert "| what | ours vs the peer (same run) |" in bench
    assert "![MetadataRouter indexed vs naive scan](scaling_router.png)" in bench
