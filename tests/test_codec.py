"""Unit tests of the metadata contract (codec): parsing is total, round trips, attributes."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import BaseModel, ConfigDict

from livekit.plugins.metadata.codec import (
    DEFAULT_MAX_ATTRIBUTES_BYTES,
    MAX_DEPTH,
    _depth_exceeds,
    apply_attributes,
    attributes_size,
    json_type_name,
    parse_metadata,
    serialize_metadata,
    validate_attributes,
    validate_schema,
)
from livekit.plugins.metadata.errors import (
    InvalidAttributes,
    InvalidMetadataJSON,
    MetadataError,
    MetadataNotAnObject,
    MetadataTooLarge,
    SchemaViolation,
)
from tests.strategies import examples

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-VALUE-do-not-log"


def _nest(depth: int) -> str:
    """A document whose nesting depth (the top-level object counts as 1) is ``depth``."""
    return '{"a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


# (id, raw input, expected error class)
MALFORMED: list[tuple[str, str | bytes, type[MetadataError]]] = [
    ("bare-word", "hello", InvalidMetadataJSON),
    ("open-brace", "{", InvalidMetadataJSON),
    ("close-brace", "}", InvalidMetadataJSON),
    ("unterminated-string", '{"a": "b', InvalidMetadataJSON),
    ("unquoted-key", "{a: 1}", InvalidMetadataJSON),
    ("single-quotes", "{'a': 1}", InvalidMetadataJSON),
    ("trailing-comma-object", '{"a": 1,}', InvalidMetadataJSON),
    ("missing-colon", '{"a" 1}', InvalidMetadataJSON),
    ("missing-comma", '{"a": 1 "b": 2}', InvalidMetadataJSON),
    ("trailing-content", '{"a": 1} x', InvalidMetadataJSON),
    ("two-documents", '{"a": 1}{"b": 2}', InvalidMetadataJSON),
    ("nan", '{"a": NaN}', InvalidMetadataJSON),
    ("infinity", '{"a": Infinity}', InvalidMetadataJSON),
    ("minus-infinity", '{"a": -Infinity}', InvalidMetadataJSON),
    ("overflowing-number", '{"a": 1e400}', InvalidMetadataJSON),
    ("leading-zero", '{"a": 01}', InvalidMetadataJSON),
    ("bare-fraction", '{"a": .5}', InvalidMetadataJSON),
    ("plus-sign", '{"a": +1}', InvalidMetadataJSON),
    ("hex-number", '{"a": 0x10}', InvalidMetadataJSON),
    ("truncated-literal", '{"a": tru}', InvalidMetadataJSON),
    ("python-none", '{"a": None}', InvalidMetadataJSON),
    ("python-true", '{"a": True}', InvalidMetadataJSON),
    ("bad-escape", '{"a": "\\x41"}', InvalidMetadataJSON),
    ("lone-high-surrogate-escape", '{"a": "\\ud800"}', InvalidMetadataJSON),
    ("control-char-in-string", '{"a": "\x01"}', InvalidMetadataJSON),
    ("comment", '{"a": 1 /* c */}', InvalidMetadataJSON),
    ("nul-byte", "\x00", InvalidMetadataJSON),
    ("bom", "\ufeff{}", InvalidMetadataJSON),
    ("invalid-utf8-bytes", b'{"a": "\xff"}', InvalidMetadataJSON),
    ("truncated-utf8-bytes", b'{"a": "\xc3"}', InvalidMetadataJSON),
    ("overlong-utf8-bytes", b'{"a": "\xc0\xaf"}', InvalidMetadataJSON),
    ("lone-surrogate-str", '{"a": "\ud800"}', InvalidMetadataJSON),
    ("too-deep", _nest(MAX_DEPTH + 1), InvalidMetadataJSON),
    ("far-too-deep", "[" * 2000 + "]" * 2000, InvalidMetadataJSON),
    (
        "too-deep-hidden-by-string-brackets",
        '{"x":"]]]]]]]]]]","a":' + "[" * 70 + "]" * 70 + "}",
        InvalidMetadataJSON,
    ),
    ("array", "[1, 2, 3]", MetadataNotAnObject),
    ("empty-array", "[]", MetadataNotAnObject),
    ("string", '"text"', MetadataNotAnObject),
    ("number", "42", MetadataNotAnObject),
    ("negative-float", "-1.5", MetadataNotAnObject),
    ("true", "true", MetadataNotAnObject),
    ("null", "null", MetadataNotAnObject),
    ("padded-array", "  [ ]  ", MetadataNotAnObject),
    ("too-large", '{"a": "' + "x" * 64_000 + '"}', MetadataTooLarge),
    ("too-large-multibyte", '{"a": "' + "é" * 32_000 + '"}', MetadataTooLarge),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [(raw, exc) for _, raw, exc in MALFORMED], ids=[i for i, _, _ in MALFORMED]
)
def test_malformed_input_raises_typed_error(raw: str | bytes, expected: type[Exception]) -> None:
    with pytest.raises(expected) as info:
        parse_metadata(raw)
    assert isinstance(info.value, MetadataError)
    assert isinstance(info.value, ValueError)  # code catching ValueError keeps working


def test_corpus_is_large_enough() -> None:
    assert len(MALFORMED) >= 40
    assert len({i for i, _, _ in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize("raw", [None, "", b"", "   ", " \t\r\n ", b"\n\n"])
def test_no_metadata_is_empty_object(raw: str | bytes | None) -> None:
    assert parse_metadata(raw) == {}


@pytest.mark.parametrize("raw", ["{}", ' {"a": 1} ', b'{"a": [1, {"b": null}]}', bytearray(b"{}")])
def test_valid_objects(raw: str | bytes | bytearray) -> None:
    assert isinstance(parse_metadata(raw), dict)


def test_parse_returns_a_new_dict_each_time() -> None:
    a = parse_metadata('{"a": 1}')
    a["b"] = 2
    assert parse_metadata('{"a": 1}') == {"a": 1}


def test_duplicate_keys_last_wins() -> None:
    assert parse_metadata('{"a": 1, "a": 2}') == {"a": 2}


def test_depth_bound_is_exact() -> None:
    assert parse_metadata(_nest(MAX_DEPTH)) == json.loads(_nest(MAX_DEPTH))
    with pytest.raises(InvalidMetadataJSON, match="deeper than 64"):
        parse_metadata(_nest(MAX_DEPTH + 1))


@pytest.mark.parametrize("depth", [1, 2, 10, 63, 64, 65, 66, 100])
@pytest.mark.parametrize(
    "decoration",
    ["", '"k":"plain",', '"k":"br]ck[ts{}",', '"k":"esc\\"aped\\\\",', '"k\\"]":"[[",'],
)
def test_bytes_depth_check_agrees_with_walk(depth: int, decoration: str) -> None:
    inner = "[" * (depth - 1) + "]" * (depth - 1) if depth > 1 else "0"
    raw = "{" + decoration + '"a":' + inner + "}"
    data = raw.encode()
    value = orjson.loads(data)
    exact = _depth_exceeds(value, MAX_DEPTH)
    if exact:
        with pytest.raises(InvalidMetadataJSON):
            parse_metadata(raw)
    else:
        assert parse_metadata(raw) == value


def test_error_positions_and_types() -> None:
    with pytest.raises(InvalidMetadataJSON) as info:
        parse_metadata('{\n  "a": nope\n}')
    assert info.value.line == 2
    assert info.value.column is not None
    with pytest.raises(MetadataNotAnObject) as not_obj:
        parse_metadata("[1]")
    assert not_obj.value.json_type == "array"
    with pytest.raises(MetadataTooLarge) as large:
        parse_metadata('{"a": "xxxxxxxx"}', max_bytes=10)
    assert (large.value.size, large.value.limit) == (17, 10)


def test_size_is_checked_before_parsing() -> None:
    """Over the limit, even though it would not parse anyway (the exact limit: test_size_limit)."""
    with pytest.raises(MetadataTooLarge):
        parse_metadata("x" * 100, max_bytes=50)


def test_non_finite_error_says_so() -> None:
    with pytest.raises(InvalidMetadataJSON, match="NaN and Infinity"):
        parse_metadata('{"a": -Infinity}')


def test_argument_errors() -> None:
    with pytest.raises(TypeError, match="str, bytes or None"):
        parse_metadata(123)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="max_bytes"):
        parse_metadata("{}", max_bytes=-1)
    with pytest.raises(TypeError, match="pydantic model"):
        parse_metadata("{}", schema=dict)  # type: ignore[type-var]


# -- messages never contain the input --------------------------------------------------------

LEAKY_DOCS = [
    '{"k": "' + SECRET + '"',
    '{"k": "' + SECRET + '" x}',
    '["' + SECRET + '"]',
    '"' + SECRET + '"',
    SECRET,
    '{"k": ' + SECRET + "}",
    '{"k": "' + SECRET + '\x01"}',
    '{"k": "' + SECRET + '\\q"}',
    '{"k": "' + SECRET + '", "n": NaN}',
    '{"k": "' + SECRET + '"}' + " " * 100,
]


@pytest.mark.parametrize("raw", LEAKY_DOCS)
def test_messages_never_contain_values(raw: str) -> None:
    for candidate in (raw, raw.encode()):
        with pytest.raises(MetadataError) as info:
            parse_metadata(candidate, max_bytes=60)
        assert SECRET not in str(info.value)
        assert SECRET not in repr(info.value)


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    age: int
    address: dict[str, str] = {}


def test_schema_returns_model_and_violations_list_paths_only() -> None:
    model = parse_metadata('{"name": "Ada", "age": 36}', schema=Profile)
    assert isinstance(model, Profile)
    assert model.age == 36
    with pytest.raises(SchemaViolation) as info:
        parse_metadata(
            '{"name": 5, "age": "' + SECRET + '", "address": {"city": 7}, "extra": "x"}',
            schema=Profile,
        )
    exc = info.value
    assert set(exc.fields) == {"name", "age", "address.city", "extra"}
    assert SECRET not in str(exc)
    assert "Ada" not in str(exc)


def test_validate_schema_on_parsed_object() -> None:
    assert validate_schema({"name": "Ada", "age": 1}, Profile).name == "Ada"
    with pytest.raises(SchemaViolation) as info:
        validate_schema({}, Profile)
    assert set(info.value.fields) == {"name", "age"}


# -- fuzz: only a dict or a MetadataError ever comes out ----------------------------------------

_json_atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_json_values = st.recursive(
    _json_atoms,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
_json_objects = st.dictionaries(st.text(max_size=10), _json_values, max_size=6)


_SEED_DOCS = [
    orjson.dumps(doc).decode()
    for doc in (
        {},
        {"a": 1},
        {"user": {"id": "u-1", "tags": ["x", "y"]}, "n": -1.5e3, "ok": True, "none": None},
        {"s": 'esc"ape\\d \u00e9 \n', "deep": [[[{"k": [1, 2, {"z": "]"}]}]]]},
        [1, "two", {"3": [4]}],
        {"emoji": "\U0001f600", "big": 18446744073709551615, "neg": -(2**63)},
    )
]


@st.composite
def _mutated_json(draw: st.DrawFn) -> str | bytes:
    """Valid JSON text with a random cut, insertion or byte flip: near-miss inputs."""
    text = draw(st.sampled_from(_SEED_DOCS))
    pos = draw(st.integers(min_value=0, max_value=len(text)))
    op = draw(st.sampled_from(["cut", "insert", "replace", "bytes"]))
    if op == "cut":
        return text[:pos]
    junk = draw(st.sampled_from(['"', "{", "}", "[", "]", ",", ":", "\\", "NaN", "\x00", "\ud800"]))
    if op == "insert":
        return text[:pos] + junk + text[pos:]
    if op == "replace":
        return text[:pos] + junk + text[pos + 1 :]
    data = text.encode()
    return data[:pos] + draw(st.binary(min_size=1, max_size=3)) + data[pos:]


_fuzz_inputs = st.one_of(st.text(), st.binary(), _mutated_json())


def _check_total(raw: str | bytes) -> None:
    try:
        result = parse_metadata(raw, max_bytes=256)
    except MetadataError as exc:
        message = str(exc)
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        if len(text.strip()) >= 12:
            assert text not in message
        return
    assert type(result) is dict


FUZZ_EXAMPLES = 1000
FUZZ_BATCH = 5  # 1,000 examples x 5 inputs = 5,000 fuzzed inputs per run


@settings(
    max_examples=examples(FUZZ_EXAMPLES),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(_fuzz_inputs, min_size=FUZZ_BATCH, max_size=FUZZ_BATCH))
def test_fuzz_parse_is_total(batch: list[str | bytes]) -> None:
    for raw in batch:
        _check_total(raw)


# -- round trip -------------------------------------------------------------------------------


@settings(max_examples=examples(150), deadline=None)
@given(_json_objects)
def test_round_trip(obj: dict[str, Any]) -> None:
    text = serialize_metadata(obj)
    assert parse_metadata(text) == obj
    assert json.loads(text) == obj
    assert text == orjson.dumps(obj).decode()


def test_serialize_is_compact_and_accepts_models_and_mappings() -> None:
    assert serialize_metadata({"a": [1, 2], "b": None}) == '{"a":[1,2],"b":null}'
    assert serialize_metadata(Profile(name="Ada", age=3)) == '{"name":"Ada","age":3,"address":{}}'
    from types import MappingProxyType

    assert serialize_metadata(MappingProxyType({"x": 1})) == '{"x":1}'


def test_serialize_refusals() -> None:
    with pytest.raises(TypeError, match="mapping or a pydantic model"):
        serialize_metadata([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not JSON-serializable"):
        serialize_metadata({"a": {1, 2}})
    with pytest.raises(TypeError):
        serialize_metadata({1: "a"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="NaN or infinite") as nan:
        serialize_metadata({"a": {"b": [1.0, math.nan]}})
    assert "a.b[1]" in str(nan.value)
    with pytest.raises(MetadataTooLarge):
        serialize_metadata({"a": "x" * 100}, max_bytes=50)
    deep: Any = []
    for _ in range(MAX_DEPTH):
        deep = [deep]
    with pytest.raises(InvalidMetadataJSON, match="deeper"):
        serialize_metadata({"a": deep})
    very_deep: Any = []
    for _ in range(300):
        very_deep = [very_deep]
    with pytest.raises(InvalidMetadataJSON, match="deeper"):
        serialize_metadata({"a": very_deep})


def test_json_type_name() -> None:
    values: tuple[Any, ...] = ({}, [], "", True, 1, 1.5, None)
    names = [json_type_name(v) for v in values]
    assert names == ["object", "array", "string", "boolean", "number", "number", "null"]


# -- attributes -------------------------------------------------------------------------------


def test_validate_attributes_accepts_and_copies() -> None:
    src = {"tier": "gold", "gone": ""}
    out = validate_attributes(src)
    assert out == src
    assert out is not src
    assert validate_attributes(None) == {}


@pytest.mark.parametrize(
    ("attrs", "match"),
    [
        (["a"], "mapping"),
        ({"": "x"}, "non-empty"),
        ({1: "x"}, "non-empty"),
        ({"a": 1}, "str value"),
        ({"a": None}, "str value"),
        ({"lk.agent.name": "x"}, "reserves"),
        ({"a": "\ud800"}, "UTF-8"),
        ({"a": "x" * DEFAULT_MAX_ATTRIBUTES_BYTES}, "over the limit"),
    ],
    ids=[
        "list",
        "empty-key",
        "int-key",
        "int-value",
        "none-value",
        "reserved",
        "surrogate",
        "size",
    ],
)
def test_validate_attributes_rejects(attrs: Any, match: str) -> None:
    with pytest.raises(InvalidAttributes, match=match) as info:
        validate_attributes(attrs)
    assert "x" * 20 not in str(info.value)


def test_reserved_prefix_allowed_on_request() -> None:
    assert validate_attributes({"lk.agent.name": "a"}, allow_reserved=True) == {
        "lk.agent.name": "a"
    }


def test_attribute_sizes_are_utf8_bytes() -> None:
    assert attributes_size({"ab": "€"}) == 5
    limit = 10
    assert validate_attributes({"abcd": "efghij"}, max_bytes=limit)
    with pytest.raises(InvalidAttributes):
        validate_attributes({"abcd": "efghi€"}, max_bytes=limit)


def test_long_keys_are_cut_in_messages() -> None:
    key = "k" * 500
    with pytest.raises(InvalidAttributes) as info:
        validate_attributes({key: 5})  # type: ignore[dict-item]
    assert key not in str(info.value)


def test_apply_attributes_empty_value_deletes() -> None:
    current = {"b": "old", "x": 9}
    merged = apply_attributes(current, {"a": "1", "b": "", "missing": ""})
    assert merged == {"x": 9, "a": "1"}
    assert current == {"b": "old", "x": 9}
    assert apply_attributes(current, {"a": "1", "b": ""}, keys=["a"]) == {
        "b": "old",
        "x": 9,
        "a": "1",
    }
