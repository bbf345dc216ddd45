"""``lk-metadata route --attributes``: routing a phone call from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from livekit.plugins.metadata.cli import app

pytestmark = pytest.mark.unit

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}
CALLER = "+34600123456"

RULES = """\
worker: phones
rules:
  - name: madrid-line
    when_attributes:
      sip.trunkPhoneNumber: {phone: "+34 910 000 000"}
    agent: madrid
  - name: hidden
    when_attributes:
      sip.phoneNumber: {exists: false}
    agent: operator
default: general
"""


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env=ENV)


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


def test_route_reads_attributes(rules: Path) -> None:
    attrs = f'{{"sip.trunkPhoneNumber": "0034910000000", "sip.phoneNumber": "{CALLER}"}}'
    result = invoke("route", "--rules", str(rules), "-m", "{}", "--attributes", attrs)
    assert result.exit_code == 0, result.stderr
    assert "agent:       madrid" in result.stdout
    assert "agent_name:  phones" in result.stdout
    assert "madrid-line" in result.stdout


def test_route_without_attributes_sees_a_hidden_number(rules: Path) -> None:
    result = invoke("route", "--rules", str(rules), "-m", "{}")
    assert result.exit_code == 0, result.stderr
    assert "agent:       operator" in result.stdout


def test_route_explain_with_attributes_never_prints_their_values(rules: Path) -> None:
    attrs = f'{{"sip.trunkPhoneNumber": "+34950000000", "sip.phoneNumber": "{CALLER}"}}'
    result = invoke("route", "--rules", str(rules), "-m", "{}", "--attributes", attrs, "--explain")
    assert result.exit_code == 0, result.stderr
    assert "attribute sip.trunkPhoneNumber phone" in result.stdout
    assert "general" in result.stdout
    assert CALLER not in result.stdout
    assert "950000000" not in result.stdout


@pytest.mark.parametrize(
    ("value", "reason"),
    [('{"sip.phoneNumber": 34}', "str value"), ("[1]", "JSON object"), ("{", "JSON")],
)
def test_bad_attributes_are_usage_errors(rules: Path, value: str, reason: str) -> None:
    result = invoke("route", "--rules", str(rules), "-m", "{}", "--attributes", value)
    assert result.exit_code == 2
    assert "--attributes" in result.stderr
    assert reason in result.stderr


def test_attributes_from_a_file(rules: Path, tmp_path: Path) -> None:
    path = tmp_path / "attrs.json"
    path.write_text('{"sip.trunkPhoneNumber": "tel:+34-910-000-000"}', encoding="utf-8")
    result = invoke("route", "--rules", str(rules), "-m", "{}", "--attributes", f"@{path}")
    assert result.exit_code == 0, result.stderr
    assert "agent:       madrid" in result.stdout


def test_sip_export_prints_the_dispatch_rules_as_json() -> None:
    import json

    example = Path(__file__).parents[1] / "examples" / "telephony" / "rules.yaml"
    result = invoke("sip", "export", "--rules", str(example), "--trunk", "ST_1")
    assert result.exit_code == 0, result.stderr
    exported = json.loads(result.stdout)
    assert [r["name"] for r in exported] == ["lk-metadata/sales", "lk-metadata/support"]
    assert exported[1]["numbers"] == ["+34910000002", "+34910000003"]
    assert exported[1]["trunk_ids"] == ["ST_1"]
    assert "skipped portugal-callers" in result.stderr


def test_sip_sync_needs_a_server_and_keys(rules: Path) -> None:
    result = CliRunner().invoke(
        app, ["sip", "sync", "--rules", str(rules)], env={**ENV, "LIVEKIT_URL": ""}
    )
    assert result.exit_code == 1
    assert "LIVEKIT_URL" in result.stderr
    result = CliRunner().invoke(
        app,
        ["sip", "sync", "--rules", str(rules), "--url", "ws://127.0.0.1:9"],
        env={**ENV, "LIVEKIT_API_KEY": "", "LIVEKIT_API_SECRET": ""},
    )
    assert result.exit_code == 1
    assert "LIVEKIT_API_KEY" in result.stderr


def test_sip_commands_report_bad_rules_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - agent: a\n    when_attributes: {n: {phone: '+34 1'}}\n")
    result = invoke("sip", "export", "--rules", str(bad))
    assert result.exit_code == 1
    assert "not a valid phone number" in result.stderr
