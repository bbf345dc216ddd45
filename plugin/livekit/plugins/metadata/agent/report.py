"""What the adapter did with each update: counted, and logged with keys and sizes, never values."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from .._util import key_label, keys_for_log
from ..errors import MetadataPluginError, StoreError
from ..log import logger
from .views import ParticipantView

__all__ = ["AdapterStats", "Reporter"]


@dataclass
class AdapterStats:
    """Counters of what the adapter did with metadata updates (one per source event).

    Attributes:
        applied: Updates applied to a view or the call session.
        invalid: Updates rejected as invalid input (nothing changed).
        failed: Store writes or reads that failed (e.g. Redis unavailable).
        events: Room events received for a tracked participant or the room.
        refused: Client input refused at a trust boundary (logged once per
            participant and reason).
        coalesced: Changes folded into an ``on_change`` call already pending.
        flooding: Participants over ``flood_rate`` updates a second (logged once).
        forgotten: Participants whose view was released when they left.
    """

    applied: int = 0
    invalid: int = 0
    failed: int = 0
    events: int = 0
    refused: int = 0
    coalesced: int = 0
    flooding: int = 0
    forgotten: int = 0


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
