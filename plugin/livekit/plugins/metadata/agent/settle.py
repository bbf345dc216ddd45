"""``on_change`` once per settled state: coalescing of a participant's changes, flood accounting.

The first change after a quiet spell is delivered at once; later ones fold into one
call, made after ``settle`` quiet seconds (at the latest ``8 * settle`` after the first),
reading the latest state in a task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from .._util import key_label
from ..log import logger
from .options import OnChange
from .report import AdapterStats

__all__ = ["ChangeNotifier"]


@dataclass(eq=False)
class ChangeNotifier:
    """Asks for ``on_change(identity)`` per participant, coalesced, and counts floods."""

    name: str
    settle: float
    flood_rate: float
    stats: AdapterStats
    idle: asyncio.Event
    callback: OnChange | None = None
    """The ``on_change`` to call; None asks for nothing."""
    # When each changed participant's call is due (an ordered set), when the first
    # change still waiting for it came, and when its last call started.
    _dirty: dict[str, float] = field(default_factory=dict, init=False)
    _first_change: dict[str, float] = field(default_factory=dict, init=False)
    _last_call: dict[str, float] = field(default_factory=dict, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _notifying: bool = field(default=False, init=False)
    _closed: bool = field(default=False, init=False)
    # Flood accounting: (window start, events in the window) per participant.
    _flood: dict[str, tuple[float, int]] = field(default_factory=dict, init=False)
    _flooding: set[str] = field(default_factory=set, init=False)

    @property
    def busy(self) -> bool:
        """A call is due or running."""
        return bool(self._dirty) or self._notifying

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def count(self, identity: str) -> None:
        """Count one event of a participant; log once when it floods."""
        flood = self._flood.get(identity)
        now = time.monotonic()
        if flood is None or now - flood[0] >= 1.0:
            self._flood[identity] = (now, 1)
            return
        count = flood[1] + 1
        self._flood[identity] = (flood[0], count)
        limit = self.flood_rate
        if count > limit and identity not in self._flooding:
            self._flooding.add(identity)
            self.stats.flooding += 1
            logger.warning(
                "metadata adapter: participant %s sent more than %g updates in a second; "
                "each is applied, on_change runs for the latest state only",
                key_label(identity),
                limit,
            )

    def forget(self, identity: str) -> None:
        """Drop a participant who left: its due call and rate window."""
        self._dirty.pop(identity, None)
        self._first_change.pop(identity, None)
        self._last_call.pop(identity, None)
        self._flood.pop(identity, None)
        self._flooding.discard(identity)

    def close(self) -> None:
        """Ask for nothing more (the running task is the caller's to cancel)."""
        self._closed = True
        self._dirty.clear()

    def mark(self, identity: str, *, at_once: bool = False) -> None:
        """Ask for ``on_change(identity)`` once the participant's state has settled.

        ``at_once`` (a tool's write) skips the wait; a call already running still folds
        what follows into one more.
        """
        if self.callback is None or self._closed:
            return
        now = time.monotonic()
        settle = self.settle
        due = self._dirty.get(identity)
        if due is None:
            self._first_change[identity] = now
            last = self._last_call.get(identity)
            quiet = at_once or last is None or now - last >= settle
            self._dirty[identity] = now if quiet else now + settle
        else:
            self.stats.coalesced += 1
            if at_once:
                self._dirty[identity] = min(due, now)
            elif due > now:  # not yet due: wait for quiet, bounded by the first change's age
                self._dirty[identity] = min(now + settle, self._first_change[identity] + 8 * settle)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(
                self._notify_all(), name=f"metadata-adapter:on_change:{self.name}"
            )

    async def _notify_all(self) -> None:
        """Run ``on_change`` for every participant whose change is due, the latest state."""
        callback = self.callback
        try:
            while self._dirty and callback is not None and not self._closed:
                identity, due = min(self._dirty.items(), key=lambda item: item[1])
                wait = due - time.monotonic()
                if wait > 0:
                    self._wake.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                    continue
                del self._dirty[identity]
                self._last_call[identity] = time.monotonic()
                self._notifying = True
                try:
                    await callback(identity)
                except Exception:
                    logger.exception(
                        "metadata adapter: on_change failed for participant %s",
                        key_label(identity),
                    )
                finally:
                    self._notifying = False
        finally:
            self.idle.set()
