"""The async ``SessionStore`` protocol every backend implements (contracts:
``docs/sessions.md``; their executable form: ``tests/store_conformance.py``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypedDict, runtime_checkable

import orjson

from ..errors import MetadataTooLarge

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "MergeAndGet",
    "MergeOptions",
    "SessionStore",
    "SessionWrite",
    "check_max_age",
    "entry_size",
    "merge_options",
    "object_size",
    "too_large",
]


def entry_size(key: str, encoded_value: bytes) -> int:
    """Bytes one ``"key":value`` entry takes in compact JSON (without the comma)."""
    return len(orjson.dumps(key)) + 1 + len(encoded_value)


def object_size(entry_sizes_total: int, count: int) -> int:
    """Bytes of a compact JSON object of ``count`` entries whose :func:`entry_size` sum is given."""
    return 2 + entry_sizes_total + max(count - 1, 0)


class SessionWrite(NamedTuple):
    """One ``merge`` as the ``SessionManager`` hands it to the store: the store key (the
    space's tag and the session id) and compact JSON per top-level key, checked."""

    key: str
    fields: dict[str, bytes]
    ttl: float
    max_bytes: int


class _MergeRequired(TypedDict):
    ttl: float
    max_bytes: int


class MergeOptions(_MergeRequired, total=False):
    """``merge``'s keywords: ``ttl`` (seconds to live after this write), ``max_bytes``
    (largest result) and ``remove`` (top-level keys to drop; a key also set is set)."""

    remove: Collection[str]


_MERGE_KEYWORDS = frozenset(MergeOptions.__required_keys__ | MergeOptions.__optional_keys__)


def merge_options(
    options: Mapping[str, Any], method: str = "merge"
) -> tuple[Collection[str], float, int]:
    """``remove``, ``ttl`` and ``max_bytes``; TypeError for a missing or unknown keyword."""
    try:
        ttl, max_bytes = options["ttl"], options["max_bytes"]
    except KeyError as exc:
        raise TypeError(f"{method}() missing required keyword argument {exc.args[0]!r}") from None
    if len(options) > 2 and not _MERGE_KEYWORDS.issuperset(options):
        unknown = sorted(set(options) - _MERGE_KEYWORDS)[0]
        raise TypeError(f"{method}() got an unexpected keyword argument {unknown!r}")
    return options.get("remove", ()), ttl, max_bytes


def check_max_age(max_age: object) -> None:
    """``cleanup(max_age=)``'s one check: None or a number of seconds (not NaN, not a bool)."""
    if max_age is not None and (
        isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or max_age != max_age
    ):
        raise ValueError("max_age must be a number of seconds or None")


@runtime_checkable
class SessionStore(Protocol):
    """Async session storage, safe for concurrent calls from one event loop; ``merge`` and
    ``remove_keys`` are atomic (a concurrent writer never loses another's keys)."""

    async def merge(
        self, session_id: str, fields: Mapping[str, bytes], **options: Unpack[MergeOptions]
    ) -> None:
        """Set ``fields``, drop ``remove``, create the session and restart its TTL; over
        ``max_bytes``, raise ``MetadataTooLarge`` changing nothing."""

    async def get(self, session_id: str) -> dict[str, Any]:
        """A fresh, decoded copy of the session; ``{}`` if unknown or expired."""

    async def delete(self, session_id: str) -> bool:
        """Remove the session and everything kept for it; True if it existed."""

    async def remove_keys(self, session_id: str, keys: Collection[str], *, ttl: float) -> int:
        """Remove top-level keys; how many existed. Restarts the TTL; deletes an emptied session."""

    async def touch(self, session_id: str, *, ttl: float) -> bool:
        """Restart the session's TTL without changing it; True if it exists."""

    async def cleanup(self, *, max_age: float | None = None) -> int:
        """Remove expired sessions (or written over ``max_age`` ago); how many (native TTL: 0)."""

    async def aclose(self) -> None:
        """Release connections and other resources."""


@runtime_checkable
class MergeAndGet(Protocol):
    """Optional: ``merge`` and read back in one round trip (``RedisStore``: one ``EVALSHA``)."""

    async def merge_and_get(
        self, session_id: str, fields: Mapping[str, bytes], **options: Unpack[MergeOptions]
    ) -> dict[str, Any]:
        """Exactly ``merge``, then the session as ``get`` would return it with no writer between."""


def too_large(size: int, limit: float) -> MetadataTooLarge:
    """The refusal of a write whose session would be ``size`` bytes, over ``limit``."""
    return MetadataTooLarge(
        f"session metadata would be {size} bytes, over the limit of {int(limit)}; "
        "nothing was changed",
        size=size,
        limit=int(limit),
    )
