"""What every session handle is handed: the adapter's options, checked once, and the counters
and logs of what it did with each update (keys and sizes, never values)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from livekit import rtc

from .._util import key_label, keys_for_log, positive_int, positive_number
from ..codec import (
    DEFAULT_MAX_ATTRIBUTES_BYTES,
    DEFAULT_MAX_METADATA_BYTES,
    parse_metadata,
    validate_schema,
)
from ..errors import MetadataPluginError, StoreError
from ..log import logger

if TYPE_CHECKING:
    from livekit.agents import JobContext
    from pydantic import BaseModel

    from .views import ParticipantView

__all__ = [
    "DEFAULT_PARTICIPANT_KINDS",
    "AdapterKeywords",
    "AdapterOptions",
    "AdapterStats",
    "OnChange",
    "OnInvalid",
    "PublishAs",
    "Reporter",
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
        """A metadata document within ``max_metadata_bytes`` satisfying ``schema`` (else
        MetadataError)."""
        obj = parse_metadata(raw, max_bytes=self.max_metadata_bytes)
        if self.schema is not None:
            validate_schema(obj, self.schema)
        return obj


@dataclass
class AdapterStats:
    """Counters of what the adapter did with metadata updates (one per source event)."""

    applied: int = 0  # applied to a view or the call session
    invalid: int = 0  # rejected as invalid input (nothing changed)
    failed: int = 0  # store writes or reads that failed
    events: int = 0  # room events of a tracked participant or the room
    refused: int = 0  # client input refused at a trust boundary (logged once each)
    coalesced: int = 0  # changes folded into an on_change call already pending
    flooding: int = 0  # participants over flood_rate (logged once)
    forgotten: int = 0  # participants whose view was released when they left


@dataclass(eq=False, slots=True)
class Reporter:
    """Counts one session's updates (its own counters and the adapter's ``stats``) and logs
    the ones that did not apply."""

    session_id: str
    stats: AdapterStats
    applied: int = 0
    invalid: int = 0
    failed: int = 0

    def count_applied(self) -> None:
        self.applied += 1
        self.stats.applied += 1

    def refused(self, view: ParticipantView, reason: str, why: str, keys: Collection[str]) -> None:
        """Count a refusal at a trust boundary; log it once per participant and reason."""
        self.stats.refused += 1
        if reason in view.reported:
            return
        view.reported.add(reason)
        logger.warning(
            "metadata adapter: participant %s: ignored %s%s",
            key_label(view.identity),
            why,
            f" {keys_for_log(keys)}" if keys else "",
        )

    def store_failed(self, source: str, exc: StoreError, *, raise_: bool) -> None:
        self.failed += 1
        self.stats.failed += 1
        logger.warning(
            "metadata adapter: could not store %s for session %s: %s",
            source,
            key_label(self.session_id),
            exc,
        )
        if raise_:
            raise exc

    def invalid_input(
        self, source: str, exc: Exception, *, size: int, keys: Iterable[str], raise_: bool
    ) -> None:
        self.invalid += 1
        self.stats.invalid += 1
        # MetadataPluginError messages never carry values; other messages are not shown.
        reason = str(exc) if isinstance(exc, MetadataPluginError) else type(exc).__name__
        logger.warning(
            "metadata adapter: rejected %s for session %s (%d bytes, keys=%s): %s",
            source,
            key_label(self.session_id),
            size,
            keys_for_log(keys),
            reason,
        )
        if raise_:
            raise exc
