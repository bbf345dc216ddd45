"""Session keys and values checked and encoded once, at write time, for every store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from .._util import key_label, non_finite_path
from ..codec import json_error_reason

__all__ = ["MAX_SESSION_ID_LENGTH", "check_keys", "check_session_id", "encode"]

MAX_SESSION_ID_LENGTH: Final = 256  # characters

_dumps = orjson.dumps
_JSON_ERROR = orjson.JSONEncodeError
# datetimes and dataclasses are not JSON: make orjson refuse them instead of converting.
_OPTS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _encode_value(key: str, value: Any) -> bytes:
    try:
        if type(value) is float:
            if value - value != 0.0:  # NaN or +-Infinity
                raise ValueError(
                    f"metadata value for key {key_label(key)} is NaN or infinite, "
                    "which JSON cannot hold"
                )
            return _dumps(value)
        encoded = _dumps(value, option=_OPTS)
    except _JSON_ERROR as exc:
        raise TypeError(
            f"metadata value for key {key_label(key)} is not JSON-serializable "
            f"({json_error_reason(exc)})"
        ) from None
    if encoded.find(b"null") != -1 and non_finite_path(value) is not None:
        raise ValueError(
            f"metadata value for key {key_label(key)} contains NaN or infinity, "
            "which JSON cannot hold"
        )
    return encoded


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"metadata keys must be str, not {type(key).__name__}")
    try:
        key.encode()
    except UnicodeEncodeError:
        raise TypeError(
            f"metadata key {key_label(key)} is not valid UTF-8 (a lone surrogate)"
        ) from None
    return str(key)


def encode(metadata: Mapping[str, Any]) -> dict[str, bytes]:
    """Compact JSON per value (a store's input); TypeError or ValueError naming a bad key."""
    out: dict[str, bytes] = {}
    for key, value in metadata.items():
        t = type(value)
        # Fast path: an ASCII str key and a scalar; what orjson refuses (a lone
        # surrogate, an int beyond 64 bits) the general path explains.
        if (t is str or t is int or t is bool or value is None) and (
            type(key) is str and key.isascii()
        ):
            try:
                out[key] = _dumps(value)
                continue
            except _JSON_ERROR:
                pass
        key = _check_key(key)
        out[key] = _encode_value(key, value)
    return out


def check_session_id(session_id: object) -> str:
    if type(session_id) is str and 0 < len(session_id) <= MAX_SESSION_ID_LENGTH:
        return session_id
    if not isinstance(session_id, str):
        raise TypeError(f"session_id must be a str, not {type(session_id).__name__}")
    if not session_id:
        raise ValueError("session_id must not be empty")
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        raise ValueError(
            f"session_id is {len(session_id)} characters, over the limit of {MAX_SESSION_ID_LENGTH}"
        )
    return str(session_id)


def check_keys(keys: Iterable[str], what: str) -> list[str]:
    if isinstance(keys, (str, bytes)):
        raise TypeError(
            f"{what} must be an iterable of str keys, not a single {type(keys).__name__}"
        )
    out = []
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"{what} must contain str keys, not {type(key).__name__}")
        out.append(str(key))
    return out
