"""The adapter's options, checked once and handed down to every session handle as one object."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from livekit import rtc

from .._util import positive_int, positive_number
from ..codec import parse_metadata, validate_schema

if TYPE_CHECKING:
    from livekit.agents import JobContext
    from pydantic import BaseModel

__all__ = [
    "DEFAULT_PARTICIPANT_KINDS",
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
"""Backoff of store retries (a token session to read, a call-session write), in seconds."""


def backoff() -> Iterator[float]:
    """Delays between store retries: 0.5 s doubling to 30 s (read when a retry starts)."""
    delay = _RETRY_FIRST
    while True:
        yield delay
        delay = min(delay * 2, _RETRY_MAX)


def _seconds(name: str, number: object) -> float:
    if not isinstance(number, (int, float)) or not number >= 0:
        raise ValueError(f"{name} must be a number of seconds >= 0")
    return float(number)


@dataclass(frozen=True, kw_only=True)
class AdapterOptions:
    """Every option of a :class:`~.adapter.MetadataAdapter` (its keywords, documented there),
    checked: ``ValueError``/``TypeError`` names the first one out of range."""

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
    raise_invalid: bool = field(init=False)
    kinds: tuple[int, ...] = field(init=False)
    protected: frozenset[str] = field(init=False)
    track_all: bool = field(init=False)

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
        confirm = _seconds("confirm_timeout", self.confirm_timeout)
        drain = _seconds("drain_timeout", self.drain_timeout)
        kinds = tuple(self.participant_kinds)
        if not kinds:
            raise ValueError("participant_kinds must name at least one kind")
        for name, value in (
            ("confirm_timeout", confirm),
            ("drain_timeout", drain),
            ("flood_rate", float(self.flood_rate)),
            ("settle", float(settle)),
            ("sync_room_metadata", bool(self.sync_room_metadata)),
            ("delete_on_shutdown", bool(self.delete_on_shutdown)),
            ("raise_invalid", self.on_invalid == "raise"),
            ("kinds", kinds),
            ("protected", frozenset(self.protected_keys)),
            ("track_all", self.track == "all"),
        ):
            object.__setattr__(self, name, value)

    def parse(self, raw: str | bytes | None) -> dict[str, Any]:
        """A metadata document within ``max_metadata_bytes`` satisfying ``schema``.

        Raises:
            MetadataError: It is not.
        """
        obj = parse_metadata(raw, max_bytes=self.max_metadata_bytes)
        if self.schema is not None:
            validate_schema(obj, self.schema)
        return obj
