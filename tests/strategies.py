"""Hypothesis strategies shared by the session tests: JSON values as a session may hold them."""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = ["json_scalars", "json_values"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
"""Every JSON scalar orjson round-trips exactly (64-bit ints, finite floats, UTF-8 text)."""

json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
"""JSON scalars, arrays and objects, nested a few levels."""
