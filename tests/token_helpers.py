"""Keys and decoding shared by the TokenIssuer tests (plain helpers, no fixtures)."""

from __future__ import annotations

from typing import Any

import jwt
from hypothesis import strategies as st

from tests.strategies import attribute_keys, metadata_keys

__all__ = [
    "KEY",
    "SECRET",
    "SENTINEL",
    "attribute_maps",
    "decode",
    "json_values",
    "metadata_dicts",
    "short_text",
    "without_times",
]

KEY = "APItestkey"
SECRET = "test-secret-" + "s" * 40
SENTINEL = "hunter2-sentinel-value"


def decode(token: str, secret: str = SECRET, key: str = KEY) -> dict[str, Any]:
    """The claims of a token, verified with PyJWT."""
    return jwt.decode(token, secret, algorithms=["HS256"], issuer=key)


def without_times(claims: dict[str, Any]) -> dict[str, Any]:
    """Claims without ``nbf``/``exp``."""
    return {k: v for k, v in claims.items() if k not in ("nbf", "exp")}


short_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    short_text,
)
json_values = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=8,
)
# Keys outside the reserved namespaces (refusing those: test_token_sessions.py).
metadata_dicts = st.dictionaries(metadata_keys(min_size=1), json_values, max_size=4)
attribute_maps = st.dictionaries(attribute_keys(), st.text(max_size=8), max_size=3)
