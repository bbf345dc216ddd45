"""The adapter's options, checked once and handed down to every session handle as one object."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from livekit import rtc

from .._util import positive_int, positive_number
from ..codec import (
    DEFAULT_MAX_ATTRIBUTES_BYTES,
    DEFAULT_MAX_METADATA_BYTES,
    parse_metadata,
    validate_schema,
)

if TYPE_CHECKING:
    from livekit.agents import JobContext
    from pydantic import BaseModel

__all__ = [
    "DEFAULT_PARTICIPANT_KINDS",
    "AdapterKeywords",
    "AdapterOptions",
    "OnChange",
    "OnInvalid",
    "PublishAs",
    "RouteOn",
    "SessionIdFactory",
    "Track",
    "backoff",
]

DEFAULT_PARTICIPANT_KINDS: tuple[int, ...] = (
    rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
    rtc.ParticipantKind.PARTICIPANT_KIND_CONNECTOR,
)
"""Participant kinds :meth:`MetadataAdapter.attach` waits for (agents are excluded)."""

OnInvalid = Literal["log", "raise"]
PublishAs = Literal["attributes", "metadata"]
SessionIdFactory = Callable[["JobContext"], str]
OnChange = Callable[[str], Awaitable[None]]
"""``await on_change(identity)`` after each update of a tracked participant was applied."""
RouteOn = Literal["first", "sip"] | Callable[[Sequence[rtc.Participant]], "rtc.Participant | None"]
Track = Literal["first", "all"]

_RETRY_FIRST = 0.5
_RETRY_MAX = 30.0


def backoff() -> Iterator[float]:
    """Seconds between store retries (a token session to read, a call-session write): 0.5
    doubling to 30 (read when a retry starts)."""
    delay = _RETRY_FIRST
    while True:
        yield delay
        delay = min(delay * 2, _RETRY_MAX)


class AdapterKeywords(TypedDict, total=False):
    """The keywords of :class:`~.adapter.MetadataAdapter` (documented there)."""

    session_id: SessionIdFactory | None
    schema: type[BaseModel] | None
    on_invalid: OnInvalid
    participant_kinds: Iterable[int]
    max_metadata_bytes: int
    max_attributes_bytes: int
    sync_room_metadata: bool
    delete_on_shutdown: bool
    protected_keys: Iterable[str]
    confirm_timeout: float
    drain_timeout: float
    route_on: RouteOn
    track: Track
    flood_rate: float
    settle: float


@dataclass(frozen=True, kw_only=True)
class AdapterOptions:
    """:class:`AdapterKeywords` with their defaults, checked: ``ValueError``/``TypeError``
    names the first one out of range."""

    session_id: SessionIdFactory | None = None
    schema: type[BaseModel] | None = None
    on_invalid: OnInvalid = "log"
    participant_kinds: Iterable[int] = DEFAULT_PARTICIPANT_KINDS
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES
    max_attributes_bytes: int = DEFAULT_MAX_ATTRIBUTES_BYTES
    sync_room_metadata: bool = False
    delete_on_shutdown: bool = False
    protected_keys: Iterable[str] = ()
    confirm_timeout: float = 5.0
    drain_timeout: float = 5.0
    route_on: RouteOn = "first"
    track: Track = "first"
    flood_rate: float = 20.0
    settle: float = 0.25
    kinds: tuple[int, ...] = field(init=False)
    protected: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.on_invalid not in ("log", "raise"):
            raise ValueError("on_invalid must be 'log' or 'raise'")
        if not callable(self.route_on) and self.route_on not in ("first", "sip"):
            raise ValueError("route_on must be 'first', 'sip' or a callable")
        if self.track not in ("first", "all"):
            raise ValueError("track must be 'first' or 'all'")
        if self.session_id is not None and not callable(self.session_id):
            raise TypeError("session_id must be a callable (ctx) -> str or None")
        if self.session_id is not None and self.delete_on_shutdown:
            raise ValueError(
                "delete_on_shutdown deletes only the call session the job owns; a session "
                "named with session_id= is yours to delete"
            )
        if self.schema is not None:
            from pydantic import BaseModel as _BaseModel

            if not (isinstance(self.schema, type) and issubclass(self.schema, _BaseModel)):
                raise TypeError("schema must be a pydantic model class or None")
        positive_int(self.max_metadata_bytes, "max_metadata_bytes", low=2)
        positive_int(self.max_attributes_bytes, "max_attributes_bytes", low=2)
        settle = self.settle
        if isinstance(settle, bool) or not isinstance(settle, (int, float)) or not 0 <= settle < 60:
            raise ValueError("settle must be a number of seconds in [0, 60)")
        positive_number(self.flood_rate, "flood_rate", "number of updates per second")
        for name in ("confirm_timeout", "drain_timeout"):
            seconds = getattr(self, name)
            if not isinstance(seconds, (int, float)) or not seconds >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0")
        kinds = tuple(self.participant_kinds)
        if not kinds:
            raise ValueError("participant_kinds must name at least one kind")
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "protected", frozenset(self.protected_keys))

    @property
    def raise_invalid(self) -> bool:
        return self.on_invalid == "raise"

    @property
    def track_all(self) -> bool:
        return self.track == "all"

    def parse(self, raw: str | bytes | None) -> dict[str, Any]:
        """A metadata document within ``max_metadata_bytes`` satisfying ``schema``.

        Raises MetadataError: it is not.
        """
        obj = parse_metadata(raw, max_bytes=self.max_metadata_bytes)
        if self.schema is not None:
            validate_schema(obj, self.schema)
        return obj
