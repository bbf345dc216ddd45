"""Hypothesis strategies shared by the property tests, and the profile-scaled example count.

Hypothesis also draws string constants it finds in the project's own source (such as
``"lk-metadata."`` or ``"lk."``), so a key strategy that merely makes a reserved key
unlikely still draws one now and then. The key strategies here exclude what the code
rightly refuses; the refusals have their own tests (``tests/test_token_sessions.py``).
"""

from __future__ import annotations

from hypothesis import settings, strategies as st

from livekit.plugins.metadata.codec import PLUGIN_ATTRIBUTE_PREFIX, RESERVED_ATTRIBUTE_PREFIX

__all__ = [
    "RESERVED_ATTRIBUTE_PREFIXES",
    "RESERVED_METADATA_PREFIXES",
    "attribute_keys",
    "examples",
    "is_reserved_attribute",
    "is_reserved_metadata_key",
    "json_scalars",
    "json_values",
    "metadata_keys",
]

RESERVED_METADATA_PREFIXES = (PLUGIN_ATTRIBUTE_PREFIX,)
"""Top-level metadata keys a caller may not send: the plugin's own namespace."""

RESERVED_ATTRIBUTE_PREFIXES = (RESERVED_ATTRIBUTE_PREFIX, PLUGIN_ATTRIBUTE_PREFIX, "sip.")
"""Attribute keys a caller may not send: LiveKit's ``lk.``, the plugin's namespace, and
``sip.`` (set by LiveKit's SIP service; the token endpoint may refuse them)."""


def is_reserved_metadata_key(key: str) -> bool:
    return key.startswith(RESERVED_METADATA_PREFIXES)


def is_reserved_attribute(key: str) -> bool:
    return key.startswith(RESERVED_ATTRIBUTE_PREFIXES)


def examples(n: int) -> int:
    """``n`` scaled by the loaded profile: n/5 (``unit``), n (``dev``), 2n (``deep``), 10n.

    An explicit ``max_examples`` in ``@settings`` beats the loaded profile, so tests
    that set their own count pass it through here to follow the profile.
    """
    return max(1, n * settings().max_examples // 100)


def metadata_keys(min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[str]:
    """Top-level metadata keys a caller may send (never in the plugin's namespace)."""
    return st.text(
        st.characters(exclude_categories=("Cs",)), min_size=min_size, max_size=max_size
    ).filter(lambda k: not is_reserved_metadata_key(k))


def attribute_keys(max_size: int = 12) -> st.SearchStrategy[str]:
    """Attribute keys a caller may send: non-empty, none with a reserved prefix."""
    return st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=max_size).filter(
        lambda k: not is_reserved_attribute(k)
    )


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
"""JSON scalars, arrays and objects, nested a few levels (nested keys are never reserved)."""
