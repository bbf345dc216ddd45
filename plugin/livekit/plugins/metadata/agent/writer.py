"""Writes to a job's call session that never block the room events that follow.

Room metadata and failed job writes merge into what the call session still has to get
(the latest value of each key winning), written by one task and retried with backoff
until they land or the job ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import MetadataError, StoreError
from .options import backoff
from .report import Reporter

if TYPE_CHECKING:
    from ..sessions.manager import SessionSpace

__all__ = ["CallSessionWriter"]


@dataclass(eq=False)
class CallSessionWriter:
    """The call session's writes: one now (:meth:`write`), or queued (:meth:`queue`)."""

    space: SessionSpace
    session_id: str
    report: Reporter
    task: asyncio.Task[None] | None = field(default=None, init=False)
    """The task writing queued changes, if one was started."""
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
