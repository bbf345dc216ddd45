"""The metadata contract: LiveKit metadata strings <-> JSON objects, and attributes.

Total: :func:`parse_metadata` returns a ``dict`` or raises a :class:`~.errors.MetadataError`
whatever the input; messages carry positions, sizes and JSON types, never the input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

import orjson

from ._util import key_label, non_finite_path
from .errors import (
    InvalidAttributes,
    InvalidMetadataJSON,
    MetadataNotAnObject,
    MetadataTooLarge,
    ReservedKey,
    SchemaViolation,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "DEFAULT_MAX_ATTRIBUTES_BYTES",
    "DEFAULT_MAX_METADATA_BYTES",
    "MAX_DEPTH",
    "PLUGIN_ATTRIBUTE_PREFIX",
    "RESERVED_ATTRIBUTE_PREFIX",
    "SERVICE_ATTRIBUTE_PREFIXES",
    "SESSION_KEY",
    "SESSION_OWNER_KEY",
    "apply_attributes",
    "attributes_size",
    "json_error_reason",
    "json_type_name",
    "parse_metadata",
    "refuse_reserved",
    "serialize_metadata",
    "validate_attributes",
    "validate_schema",
]

DEFAULT_MAX_METADATA_BYTES = 64_000
"""Default metadata limit: 64,000 UTF-8 bytes, safe on every LiveKit server version."""

DEFAULT_MAX_ATTRIBUTES_BYTES = 65_536
"""LiveKit's attribute limit: the sum of ``len(key) + len(value)`` in UTF-8 bytes."""

MAX_DEPTH = 64
"""Deepest nesting of JSON containers (objects and arrays) accepted in metadata."""

RESERVED_ATTRIBUTE_PREFIX = "lk."
"""Attribute keys with this prefix are set by LiveKit itself (e.g. ``lk.agent.name``)."""

PLUGIN_ATTRIBUTE_PREFIX = "lk-metadata."
"""This plugin's namespace for attributes and job-metadata keys; a client may not send one."""

SESSION_KEY = PLUGIN_ATTRIBUTE_PREFIX + "session"
"""The attribute and job-metadata key carrying a token's session id (set by the issuer)."""

SESSION_OWNER_KEY = PLUGIN_ATTRIBUTE_PREFIX + "owner"
"""Session key of a token session's owner record (``{"identity", "room", "protected"}``)."""

SERVICE_ATTRIBUTE_PREFIXES = ("sip.", RESERVED_ATTRIBUTE_PREFIX)
"""Attribute namespaces LiveKit's services set; from a client they are forgeries."""

_WHITESPACE = b" \t\r\n"
_NON_FINITE = (b"NaN", b"Infinity", b"-Infinity")

# _too_deep keeps only quotes and brackets, both bracket kinds as "(" and ")".
_DEPTH_TABLE = bytes.maketrans(b"{}[]", b"()()")
_DEPTH_DELETE = bytes(b for b in range(256) if b not in b'"{}[]')
# A document shorter than this cannot nest MAX_DEPTH + 1 containers.
_MIN_DEEP_SIZE = 2 * (MAX_DEPTH + 1)

M = TypeVar("M", bound="BaseModel")

_JSON_TYPE_NAMES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (dict, "object"),
    (list, "array"),
    (str, "string"),
    (bool, "boolean"),
    ((int, float), "number"),
    (type(None), "null"),
)


def json_type_name(value: object) -> str:
    """The JSON type name of a parsed value (``object``, ``array``, ...)."""
    return next(
        (name for kind, name in _JSON_TYPE_NAMES if isinstance(value, kind)), type(value).__name__
    )


def _to_bytes(raw: str | bytes | bytearray | memoryview) -> bytes:
    if isinstance(raw, str):
        try:
            return raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidMetadataJSON(
                f"metadata is not valid UTF-8: lone surrogate at character {exc.start}"
            ) from None
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return bytes(raw)
    raise TypeError(f"metadata must be str, bytes or None, not {type(raw).__name__}")


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def _too_deep(data: bytes, value: Any) -> bool:
    """Whether ``value`` (parsed from ``data``) nests deeper than :data:`MAX_DEPTH`.

    At C speed: keep only quotes and brackets; once strings are ``""`` pairs, removing
    innermost ``()`` pairs takes as many passes as the depth. A string holding a bracket
    breaks that: then walk ``value``.
    """
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = data.translate(_DEPTH_TABLE, _DEPTH_DELETE)
    quotes = skeleton.count(b'"')
    if quotes:
        # The "" pairs cover every quote exactly when no string holds a bracket.
        if skeleton.count(b'""') * 2 != quotes:
            return _depth_exceeds(value, MAX_DEPTH)
        skeleton = skeleton.translate(None, b'"')
    if len(skeleton) <= 2 * MAX_DEPTH:
        return False
    for _ in range(MAX_DEPTH):
        skeleton = skeleton.replace(b"()", b"")
        if not skeleton:
            return False
    return True


def _decode_error(data: bytes, exc: orjson.JSONDecodeError) -> InvalidMetadataJSON:
    pos = exc.pos
    line, column = exc.lineno, exc.colno
    reason = exc.msg
    if reason.startswith("str is not valid UTF-8"):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as uerr:
            return InvalidMetadataJSON(
                f"metadata is not valid UTF-8: invalid byte at offset {uerr.start}"
            )
        reason = "invalid UTF-8"
    elif any(data.startswith(tok, pos) for tok in _NON_FINITE) or (
        pos > 0 and data.startswith(b"-Infinity", pos - 1)
    ):
        reason = "NaN and Infinity are not valid JSON numbers"
    elif reason == "depth limit exceeded":
        reason = f"nesting deeper than {MAX_DEPTH} levels"
    return InvalidMetadataJSON(
        f"metadata is not valid JSON at line {line}, column {column}: {reason}",
        line=line,
        column=column,
    )


@overload
def parse_metadata(
    raw: str | bytes | bytearray | memoryview | None,
    *,
    max_bytes: int = ...,
    schema: None = None,
) -> dict[str, Any]: ...


@overload
def parse_metadata(
    raw: str | bytes | bytearray | memoryview | None,
    *,
    max_bytes: int = ...,
    schema: type[M],
) -> M: ...


def parse_metadata(
    raw: str | bytes | bytearray | memoryview | None,
    *,
    max_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    schema: type[M] | None = None,
) -> dict[str, Any] | M:
    """Parse a LiveKit metadata string (``ctx.job.metadata``, ...) into a JSON object.

    ``None``, ``""`` or whitespace is ``{}``. Else a strict JSON object (no NaN, BOM or
    trailing content) of at most ``max_bytes`` UTF-8 bytes, nested at most
    :data:`MAX_DEPTH` deep; integers beyond 64 bits become floats; the last duplicate
    key wins. With ``schema`` (a pydantic model class) the model instance is returned.

    Raises:
        InvalidMetadataJSON, MetadataNotAnObject, MetadataTooLarge, SchemaViolation.
        TypeError: ``raw`` is not str/bytes/None, or ``schema`` is no model class.
        ValueError: ``max_bytes`` is not an int >= 0.
    """
    # Hot path: checks not needed to decide "dict or error" run only on the error path.
    if type(raw) is bytes:
        data: bytes = raw
    elif raw is None:
        return {} if schema is None else validate_schema({}, schema)
    else:
        data = _to_bytes(raw)
    size = len(data)
    try:
        too_large = size > max_bytes
    except TypeError:
        too_large = True
    if too_large:
        if type(max_bytes) is not int or max_bytes < 0:
            raise ValueError("max_bytes must be an int >= 0")
        raise MetadataTooLarge(
            f"metadata is {size} bytes, over the limit of {max_bytes} bytes",
            size=size,
            limit=max_bytes,
        )
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if not data.strip(_WHITESPACE):
            obj = {}  # no metadata
        else:
            raise _decode_error(data, exc) from None
    if type(obj) is not dict:
        found = json_type_name(obj)
        raise MetadataNotAnObject(
            f"metadata must be a JSON object, got a JSON {found}", json_type=found
        )
    if size >= _MIN_DEEP_SIZE and _too_deep(data, obj):
        raise InvalidMetadataJSON(f"metadata nests deeper than {MAX_DEPTH} levels")
    if schema is None:
        return obj
    return validate_schema(obj, schema)


def validate_schema(obj: Mapping[str, Any], schema: type[M]) -> M:
    """The pydantic model instance of a parsed metadata object.

    Raises:
        SchemaViolation: It does not match (``fields``: the dotted paths, never values).
        TypeError: ``schema`` is not a pydantic model class.
    """
    from pydantic import BaseModel, ValidationError

    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise TypeError(f"schema must be a pydantic model class, not {schema!r}")
    try:
        return schema.model_validate(obj)
    except ValidationError as exc:
        fields: list[str] = []
        problems: list[str] = []
        for err in exc.errors(include_input=False, include_url=False):
            path = ".".join(key_label(part, quote=False) for part in err["loc"]) or "<root>"
            fields.append(path)
            problems.append(f"{path} ({err['type']})")
        raise SchemaViolation(
            f"metadata does not match {schema.__name__}: " + ", ".join(problems),
            fields=fields,
        ) from None


def serialize_metadata(
    obj: Mapping[str, Any] | BaseModel, *, max_bytes: int = DEFAULT_MAX_METADATA_BYTES
) -> str:
    """A mapping or pydantic model as compact JSON; ``parse_metadata`` gives it back.

    Raises:
        TypeError: Not a mapping/model, non-str keys, or a value JSON cannot hold.
        ValueError: A float is NaN or infinite.
        InvalidMetadataJSON, MetadataTooLarge: As :func:`parse_metadata` would.
    """
    if isinstance(obj, Mapping):
        value: Any = obj if isinstance(obj, dict) else dict(obj)
    elif hasattr(obj, "model_dump") and callable(obj.model_dump):
        value = obj.model_dump(mode="json")
    else:
        raise TypeError(f"metadata must be a mapping or a pydantic model, not {type(obj).__name__}")
    try:
        data = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        reason = json_error_reason(exc)
        if reason.startswith("Recursion limit"):
            raise InvalidMetadataJSON(f"metadata nests deeper than {MAX_DEPTH} levels") from None
        raise TypeError(f"metadata is not JSON-serializable: {reason}") from None
    if len(data) >= _MIN_DEEP_SIZE and _too_deep(data, value):
        # parse_metadata would refuse it, so refuse it here: the round trip holds.
        raise InvalidMetadataJSON(f"metadata nests deeper than {MAX_DEPTH} levels")
    if b"null" in data:
        bad = non_finite_path(value)
        if bad is not None:
            raise ValueError(
                f"metadata value at {key_label(bad)} is NaN or infinite, which JSON cannot hold"
            )
    if len(data) > max_bytes:
        raise MetadataTooLarge(
            f"serialized metadata is {len(data)} bytes, over the limit of {max_bytes} bytes",
            size=len(data),
            limit=max_bytes,
        )
    return data.decode("utf-8")


def json_error_reason(exc: orjson.JSONEncodeError) -> str:
    """The first clause of orjson's message: it names types, never values."""
    return str(exc).split("\n", 1)[0]


def refuse_reserved(keys: Iterable[str], what: str) -> None:
    """Raise :class:`ReservedKey` for the first key under :data:`PLUGIN_ATTRIBUTE_PREFIX`."""
    for key in keys:
        if key.startswith(PLUGIN_ATTRIBUTE_PREFIX):
            raise ReservedKey(
                f"{what}: key {key_label(key)} is in the namespace {PLUGIN_ATTRIBUTE_PREFIX!r}, "
                "which only this plugin writes (it carries the token-session reference); "
                "use another key",
                key=key_label(key, quote=False),
            )


def attributes_size(attributes: Mapping[str, str], max_bytes: int | None = None) -> int:
    """LiveKit's size of an attribute map (UTF-8 bytes); over ``max_bytes``: InvalidAttributes."""
    total = sum(len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in attributes.items())
    if max_bytes is not None and total > max_bytes:
        raise InvalidAttributes(
            f"attributes would total {total} bytes, over the limit of {max_bytes} bytes"
        )
    return total


def validate_attributes(
    attributes: Mapping[str, str] | None,
    *,
    max_bytes: int = DEFAULT_MAX_ATTRIBUTES_BYTES,
    allow_reserved: bool = False,
) -> dict[str, str]:
    """Check a LiveKit attribute map and return a plain ``dict`` copy of it.

    Raises:
        InvalidAttributes: Not a str->str map, an empty key, an ``lk.`` key (unless
            ``allow_reserved``), a lone surrogate, or over ``max_bytes`` in total.
    """
    if attributes is None:
        return {}
    if not isinstance(attributes, Mapping):
        raise InvalidAttributes(
            f"attributes must be a mapping of str to str, not {type(attributes).__name__}"
        )
    out: dict[str, str] = {}
    total = 0
    for key, value in attributes.items():
        if not isinstance(key, str) or not key:
            raise InvalidAttributes("attribute keys must be non-empty strings")
        if not isinstance(value, str):
            raise InvalidAttributes(
                f"attribute {key_label(key)} must have a str value, not {type(value).__name__}"
            )
        if not allow_reserved and key.startswith(RESERVED_ATTRIBUTE_PREFIX):
            raise InvalidAttributes(
                f"attribute {key_label(key)} uses the prefix {RESERVED_ATTRIBUTE_PREFIX!r}, "
                "which LiveKit reserves for itself"
            )
        try:
            total += len(key.encode("utf-8")) + len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidAttributes(
                f"attribute {key_label(key)} is not valid UTF-8 (lone surrogate)"
            ) from None
        out[key] = value
    if total > max_bytes:
        raise InvalidAttributes(
            f"attributes total {total} bytes, over the limit of {max_bytes} bytes"
        )
    return out


def apply_attributes(
    current: Mapping[str, Any], changed: Mapping[str, str], *, keys: Iterable[str] | None = None
) -> dict[str, Any]:
    """A copy of ``current`` with an update applied (an empty value deletes; ``keys``: only these)."""
    allowed = None if keys is None else set(keys)
    result = dict(current)
    for key, value in changed.items():
        if allowed is not None and key not in allowed:
            continue
        if value == "":
            result.pop(key, None)
        else:
            result[key] = value
    return result
