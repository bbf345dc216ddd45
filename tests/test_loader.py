"""The one config loader: YAML 1.2 scalars, plain JSON data, and a named refusal for the rest.

Every refusal must name the file, the line (when the format can tell) and the field, and
never echo a value from the file: configs hold secrets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from livekit.plugins.metadata.errors import ConfigError
from livekit.plugins.metadata.loader import ConfigFormat, format_of, load_file, load_text

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("language: no", {"language": "no"}),
        ("a: yes\nb: on\nc: off\nd: y", {"a": "yes", "b": "on", "c": "off", "d": "y"}),
        ("a: true\nb: False\nc: TRUE", {"a": True, "b": False, "c": True}),
        ("a: 0777", {"a": 777}),
        ("a: 0o17\nb: 0x1F\nc: -5", {"a": 15, "b": 31, "c": -5}),
        ("a: 1_000\nb: 1:30", {"a": "1_000", "b": "1:30"}),
        ("a: 1.5e3\nb: .5\nc: -2.", {"a": 1500.0, "b": 0.5, "c": -2.0}),
        ("a: ~\nb: null\nc:", {"a": None, "b": None, "c": None}),
        ("a: '2024-01-01'\nb: !!str 2024-01-01", {"a": "2024-01-01", "b": "2024-01-01"}),
        ("a: !!int '5'\nb: !!float '1'", {"a": 5, "b": 1.0}),
        ("a: &x [1, 2]\nb: *x", {"a": [1, 2], "b": [1, 2]}),
        ("'+34910000000': x\nb: +34910000000", {"+34910000000": "x", "b": 34910000000}),
        ("", None),
    ],
)
def test_yaml_reads_the_yaml_1_2_core_schema(text: str, expected: Any) -> None:
    assert load_text(text, "yaml") == expected


def test_aliases_build_independent_copies() -> None:
    data = load_text("a: &x {k: [1]}\nb: *x", "yaml")
    data["a"]["k"].append(2)
    assert data["b"] == {"k": [1]}


YAML_REFUSALS = [
    # (document, line, field, reason)
    ("a: 1\nb:\n  c: 2\n  c: 3\n", 4, "b.c", "duplicate key"),
    ("x:\n  member_since: 2024-01-01\n", 2, "x.member_since", "date or timestamp"),
    ("t: 2024-01-01T10:00:00Z", 1, "t", "date or timestamp"),
    ("t: 2024-01-01 10:00:00", 1, "t", "date or timestamp"),
    ("x: !!timestamp '2024-01-01'", 1, "x", "date or timestamp"),
    ("x: !!binary aGVsbG8=", 1, "x", "binary"),
    ("x: !!set {a, b}", 1, "x", "a set has no JSON value"),
    ("x: !!omap [{a: 1}]", 1, "x", "omap"),
    ("x: !!pairs [{a: 1}]", 1, "x", "pairs"),
    ("x: .nan", 1, "x", "NaN"),
    ("x: [1, -.inf]", 1, "x[1]", "NaN and infinities"),
    ("x: 1e999", 1, "x", "NaN and infinities"),
    ("a: &a {k: 1}\nb:\n  <<: *a\n", 3, "b", "merge keys"),
    ("a: &a [*a]", 1, "a[0]", "refers to itself"),
    ("1: x", 1, "", "keys must be strings"),
    ("x:\n  true: 1", 2, "x", "keys must be strings"),
    ("x:\n  ? [a]\n  : 1", 2, "x", "keys must be strings"),
    ("a: !!python/object:os.system x", 1, "a", "python/object"),
    ("a: !custom x", 1, "a", "!custom"),
    ("a: !!bool yes", 1, "a", "true or false"),
    ("a: !!int x1", 1, "a", "not an integer"),
]


def test_billion_laughs_is_refused_not_expanded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(ConfigError, match="more than 1,000,000 values"):
        load_text("\n".join(lines), "yaml")


def test_yaml_syntax_errors_give_the_position_but_no_document_text() -> None:
    secret = "sk_live_do_not_print"
    with pytest.raises(ConfigError) as info:
        load_text(f"api_secret: '{secret}\n", "yaml", source="'cfg.yaml'")
    assert "line 2" in str(info.value)
    assert "invalid YAML" in str(info.value)
    assert secret not in str(info.value)


def test_a_control_character_in_yaml_is_a_config_error() -> None:
    """PyYAML's reader refuses it before parsing; that is a ConfigError too, not a ReaderError."""
    with pytest.raises(ConfigError, match=r"^'cfg\.yaml': invalid YAML: special characters"):
        load_text("api_secret: s3cr3t\x07value\n", "yaml", source="'cfg.yaml'")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("api_secret: s3cr3t-value\napi_secret: s3cr3t-other\n", "s3cr3t"),
        ("when: 2031-05-06\n", "2031"),
        ("key: !!binary czNjcjN0\n", "czNjcjN0"),
    ],
)
def test_refusals_never_echo_values(text: str, secret: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(text, "yaml")
    assert secret not in str(info.value)


TOML_REFUSALS = [
    ("a = 1\n[t]\nwhen = 2024-01-01\n", 3, "t.when", "a date is not a JSON value"),
    ("t = 2024-01-01T10:00:00Z", 1, "t", "datetime"),
    ("t = 10:00:00", 1, "t", "a time is not"),
    ("a = nan", 1, "a", "NaN"),
    ("a = [1, inf]", 1, "a[1]", "NaN"),
]


REFUSALS = [("yaml", *r) for r in YAML_REFUSALS] + [("toml", *r) for r in TOML_REFUSALS]


@pytest.mark.parametrize(("fmt", "text", "line", "field", "reason"), REFUSALS)
def test_refusals_name_file_line_and_field(
    fmt: ConfigFormat, text: str, line: int, field: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(text, fmt, source=f"'cfg.{fmt}'")
    message = str(info.value)
    assert message.startswith(f"'cfg.{fmt}', line {line}")
    if field:
        assert f"field {field!r}" in message
    assert reason in message


def test_toml_duplicate_keys_and_syntax_errors_give_the_position() -> None:
    with pytest.raises(ConfigError, match=r"'cfg\.toml': invalid TOML: .*line 2"):
        load_text("a = 1\na = 2\n", "toml", source="'cfg.toml'")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_text("rules = [", "toml", source="'cfg.toml'")


def test_toml_reads_plain_data() -> None:
    assert load_text('a = "no"\n[[rules]]\nagent = "x"\n', "toml") == {
        "a": "no",
        "rules": [{"agent": "x"}],
    }


@pytest.mark.parametrize(
    ("text", "line", "field", "reason"),
    [
        ('{"a": 1,\n "b": {"c": 1,\n  "c": 2}}', 3, "c", "duplicate key"),
        ('{"a": NaN}', None, "", "NaN is not a JSON number"),
        ('{"a": -Infinity}', None, "", "-Infinity is not a JSON number"),
        ('{"a": }', 1, "", "invalid JSON at column 7"),
    ],
)
def test_json_refusals(text: str, line: int | None, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(text, "json", source="'cfg.json'")
    message = str(info.value)
    head = "'cfg.json'" + (f", line {line}" if line else "")
    assert message.startswith(head)
    if field:
        assert f"field {field!r}" in message
    assert reason in message


def test_bytes_must_be_utf8() -> None:
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_text(b"a: \xff", "yaml")
    assert load_text("a: é".encode(), "yaml") == {"a": "é"}


def test_an_unknown_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="fmt must be one of"):
        load_text("", "ini")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.yaml", "yaml"), ("a.YML", "yaml"), ("a.toml", "toml"), ("a.json", "json")],
)
def test_format_follows_the_extension(name: str, fmt: ConfigFormat) -> None:
    assert format_of(name) == fmt


def test_load_file_reads_and_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "cfg.yaml"
    good.write_text("trusted_metadata: {language: no}\n", encoding="utf-8")
    assert load_file(good) == {"trusted_metadata": {"language": "no"}}
    bad = tmp_path / "cfg.yml"
    bad.write_text("a: 1\nmember_since: 2024-01-01\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_file(bad)
    assert str(info.value).startswith(f"{str(bad)!r}, line 2, field 'member_since'")
    with pytest.raises(ConfigError, match=r"unknown file type '\.ini'"):
        load_file(tmp_path / "cfg.ini")
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_file(tmp_path / "missing.json")
    as_json = tmp_path / "cfg.txt"
    as_json.write_text('{"a": 1}', encoding="utf-8")
    assert load_file(as_json, "json") == {"a": 1}
