"""What runs beside the room events, in tasks of its own: ``on_change`` and call-session writes.

``on_change`` runs once per settled state (README "Floods, churn and faults"); room metadata
and failed job writes merge into what the call session still has to get, retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._util import key_label
from ..errors import MetadataError, StoreError
from ..log import logger
from .options import AdapterStats, OnChange, Reporter, backoff

if TYPE_CHECKING:
    from ..sessions.manager import SessionSpace

__all__ = ["CallSessionWriter", "ChangeNotifier"]


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
    task: asyncio.Task[None] | None = field(default=None, init=False)
    _notifying: bool = field(default=False, init=False)
    _closed: bool = field(default=False, init=False)
    # Flood accounting: (window start, events in the window) per participant.
    _flood: dict[str, tuple[float, int]] = field(default_factory=dict, init=False)
    _flooding: set[str] = field(default_factory=set, init=False)

    @property
    def busy(self) -> bool:
        """A call is due or running."""
        return bool(self._dirty) or self._notifying

    def count(self, identity: str) -> None:
        """Count one event of a participant; log once when it floods."""
        now = time.monotonic()
        start, count = self._flood.get(identity, (now - 1.0, 0))
        if now - start >= 1.0:  # a new one-second window
            self._flood[identity] = (now, 1)
            return
        self._flood[identity] = (start, count + 1)
        limit = self.flood_rate
        if count + 1 > limit and identity not in self._flooding:
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
        """Ask for ``on_change(identity)`` once the participant's state has settled (``at_once``,
        a tool's write: without waiting; a call already running still folds what follows)."""
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
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(
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


@dataclass(eq=False)
class CallSessionWriter:
    """The call session's writes: one now (:meth:`write`), or queued (:meth:`queue`)."""

    space: SessionSpace
    session_id: str
    report: Reporter
    task: asyncio.Task[None] | None = field(default=None, init=False)
    _unwritten: dict[str, Any] = field(default_factory=dict, init=False)
    _unremoved: set[str] = field(default_factory=set, init=False)
    _settled: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _closed: bool = field(default=False, init=False)

    async def wait_settled(self) -> None:
        """Until the queue is written, or a write is failing and waits to be retried."""
        task = self.task
        if task is not None and not task.done() and not self._closed:
            await asyncio.wait(
                {task, asyncio.ensure_future(self._settled.wait())},
                return_when=asyncio.FIRST_COMPLETED,
            )

    def close(self) -> None:
        """Start no further write (one in flight finishes; the caller waits for :attr:`task`)."""
        self._closed = True

    def closed_down(self) -> None:
        """After the task ended: wake anyone waiting."""
        self._settled.set()

    async def write(
        self,
        source: str,
        updates: Mapping[str, Any],
        removed: Collection[str],
        *,
        size: int,
        raise_: bool,
    ) -> bool:
        """Write now; on a store failure queue it (retried until it lands). True if written."""
        if not updates and not removed:
            return True
        try:
            await self.space.update(self.session_id, updates, remove=removed)
        except (MetadataError, TypeError, ValueError) as exc:
            # Parsed metadata is always JSON; TypeError would be a value the store refuses.
            self.report.invalid_input(source, exc, size=size, keys=list(updates), raise_=raise_)
            return False
        except StoreError as exc:
            self.report.store_failed(source, exc, raise_=raise_)
            self.queue(updates, removed)  # retried with backoff until it lands
            return False
        self.report.count_applied()
        return True

    def queue(self, updates: Mapping[str, Any], removed: Collection[str] = ()) -> None:
        """Merge a change into what the call session still has to get, and write it soon."""
        for key in removed:
            self._unwritten.pop(key, None)
            self._unremoved.add(key)
        for key, value in updates.items():
            self._unwritten[key] = value
            self._unremoved.discard(key)
        if self.task is None or self.task.done():
            self._settled.clear()
            self.task = asyncio.create_task(
                self._flush(), name=f"metadata-adapter:write:{self.session_id}"
            )

    async def _flush(self) -> None:
        delays = backoff()
        try:
            while (self._unwritten or self._unremoved) and not self._closed:
                updates, removed = self._unwritten, list(self._unremoved)
                self._unwritten, self._unremoved = {}, set()
                try:
                    await self.space.update(self.session_id, updates, remove=removed)
                except (MetadataError, TypeError, ValueError) as exc:
                    self.report.invalid_input(
                        "room metadata", exc, size=0, keys=list(updates), raise_=False
                    )
                    continue
                except StoreError as exc:
                    self.report.store_failed("a call-session write", exc, raise_=False)
                    # Put it back under anything newer, and wait before the next try.
                    self._unwritten = {**updates, **self._unwritten}
                    self._unremoved |= {k for k in removed if k not in self._unwritten}
                    self._settled.set()
                    await asyncio.sleep(next(delays))
                    self._settled.clear()
                    continue
                delays = backoff()
                self.report.count_applied()
        finally:
            self._settled.set()
