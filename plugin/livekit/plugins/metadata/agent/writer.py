"""Writes to a job's call session that never block the room events that follow.

Room metadata and a job write that failed are merged into what the call session still
has to get (the latest value of each key winning) and written by one task; a write the
store refuses is retried with backoff (0.5 s doubling to 30 s) until it lands or the
job ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import MetadataError, StoreError
from .options import backoff
from .report import Reporter

if TYPE_CHECKING:
    from ..sessions.manager import SessionSpace

__all__ = ["CallSessionWriter"]


class CallSessionWriter:
    """The call session's writes: one now (:meth:`write`), or queued (:meth:`queue`)."""

    def __init__(self, space: SessionSpace, session_id: str, reporter: Reporter) -> None:
        self._space = space
        self._id = session_id
        self._report = reporter
        self._unwritten: dict[str, Any] = {}
        self._unremoved: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._closed = False

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task writing queued changes, if one was started."""
        return self._task

    async def wait_settled(self) -> None:
        """Until the queue is written, or a write is failing and waits to be retried."""
        task = self._task
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
            await self._space.update(self._id, updates, remove=removed)
        except (MetadataError, TypeError, ValueError) as exc:
            # Parsed metadata is always JSON; TypeError would be a value the store refuses.
            self._report.invalid_input(source, exc, size=size, keys=list(updates), raise_=raise_)
            return False
        except StoreError as exc:
            self._report.store_failed(source, exc, raise_=raise_)
            self.queue(updates, removed)  # retried with backoff until it lands
            return False
        self._report.count_applied()
        return True

    def queue(self, updates: Mapping[str, Any], removed: Collection[str] = ()) -> None:
        """Merge a change into what the call session still has to get, and write it soon."""
        for key in removed:
            self._unwritten.pop(key, None)
            self._unremoved.add(key)
        for key, value in updates.items():
            self._unwritten[key] = value
            self._unremoved.discard(key)
        if self._task is None or self._task.done():
            self._settled.clear()
            self._task = asyncio.create_task(
                self._flush(), name=f"metadata-adapter:write:{self._id}"
            )

    async def _flush(self) -> None:
        delays = backoff()
        try:
            while (self._unwritten or self._unremoved) and not self._closed:
                updates, removed = self._unwritten, list(self._unremoved)
                self._unwritten, self._unremoved = {}, set()
                try:
                    await self._space.update(self._id, updates, remove=removed)
                except (MetadataError, TypeError, ValueError) as exc:
                    self._report.invalid_input(
                        "room metadata", exc, size=0, keys=list(updates), raise_=False
                    )
                    continue
                except StoreError as exc:
                    self._report.store_failed("a call-session write", exc, raise_=False)
                    # Put it back under anything newer, and wait before the next try.
                    self._unwritten = {**updates, **self._unwritten}
                    self._unremoved |= {k for k in removed if k not in self._unwritten}
                    self._settled.set()
                    await asyncio.sleep(next(delays))
                    self._settled.clear()
                    continue
                delays = backoff()
                self._report.count_applied()
        finally:
            self._settled.set()
