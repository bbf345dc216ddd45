"""SessionHandle: one job's call session and the views of its callers, for the entrypoint and tools.

Two places, never mixed: the call session (``get()``/``set()``) in the store, keyed by the
room sid (else the job id): the job's metadata, synced room metadata and the agent's writes;
and each caller's view (``participant_metadata()``, :mod:`.views`) in the job's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from livekit import rtc

from .._util import key_label, keys_for_log
from ..codec import serialize_metadata, validate_schema
from ..errors import MetadataError, StoreError
from ..log import logger
from .options import AdapterOptions, AdapterStats, OnChange, PublishAs, Reporter
from .publish import Publisher, PublishResult
from .settle import CallSessionWriter, ChangeNotifier
from .tracking import Tracker
from .views import RouteInput

if TYPE_CHECKING:
    from livekit.agents import JobContext
    from livekit.api import LiveKitAPI

    from ..sessions.manager import SessionManager, SessionSpace

__all__ = ["SessionHandle"]


class SessionHandle:
    """The session of one job (from :meth:`MetadataAdapter.attach`): read and write it, wait
    for queued updates, publish keys."""

    def __init__(
        self,
        ctx: JobContext,
        session_id: str,
        space: SessionSpace,
        sessions: SessionManager,
        options: AdapterOptions,
        stats: AdapterStats,
        on_close: Callable[[SessionHandle], None],
    ) -> None:
        self.id: Final = session_id
        """The room sid (or ``session_id(ctx)``)."""
        self.space: Final = space
        """``call``, or ``named`` with ``session_id=``."""
        self._sessions = sessions
        self._options = options
        self._on_close = on_close
        self._idle = asyncio.Event()
        self._report = Reporter(session_id, stats)
        self._notifier = ChangeNotifier(
            session_id, options.settle, options.flood_rate, stats, self._idle
        )
        self._writer = CallSessionWriter(space, session_id, self._report)
        self._tracker = Tracker(
            ctx, sessions, options, self._report, self._notifier, self._writer, self._idle
        )
        self._publisher = Publisher(ctx, options.max_metadata_bytes, options.max_attributes_bytes)
        self._room: rtc.Room | None = None
        self._subscriptions: list[tuple[str, Callable[..., None]]] = []
        self._agent_writes = asyncio.Lock()
        self._agent_keys: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"SessionHandle(id={self.id!r}, tracked={sorted(self._tracker.tracked)!r}, "
            f"applied={self.applied_updates}, invalid={self.invalid_updates}, "
            f"failed={self.failed_updates}, closed={self.closed})"
        )

    @property
    def tracked(self) -> frozenset[str]:
        return frozenset(self._tracker.tracked)

    @property
    def closed(self) -> bool:
        return self._tracker.closed

    @property
    def participants(self) -> tuple[str, ...]:
        """The tracked identities, in the order they were first tracked."""
        return tuple(self._tracker.views)

    @property
    def applied_updates(self) -> int:
        return self._report.applied

    @property
    def invalid_updates(self) -> int:
        """Updates rejected as invalid input (nothing changed)."""
        return self._report.invalid

    @property
    def failed_updates(self) -> int:
        """Updates the store could not apply."""
        return self._report.failed

    def participant_metadata(self, identity: str) -> dict[str, Any]:
        """One caller's own view (what a tool serving it reads): its token session, private keys
        included, under its live metadata; ``{}`` if untracked."""
        view = self._tracker.views.get(identity)
        return dict(view.metadata) if view is not None else {}

    def participant_attributes(self, identity: str) -> dict[str, str]:
        """One caller's live attributes (no ``lk-metadata.*``); ``{}`` if untracked."""
        view = self._tracker.views.get(identity)
        return dict(view.attributes) if view is not None else {}

    def participant_protected(self, identity: str) -> frozenset[str]:
        """The keys of a caller's view the server decided, plus ``protected_keys``."""
        view = self._tracker.views.get(identity)
        return view.protected if view is not None else frozenset()

    def caller_session_id(self, identity: str) -> str | None:
        """Where :meth:`update_participant` persists a caller's writes, in the call key space
        (``"<call session id>/<participant sid>"``, both from LiveKit); None if untracked."""
        view = self._tracker.views.get(identity)
        return None if view is None else f"{self.id}/{view.participant.sid or identity}"

    async def update_participant(
        self, identity: str, updates: Mapping[str, Any], *, remove: Iterable[str] = ()
    ) -> None:
        """A tool's write to one caller's view, checked like client metadata, persisted
        (:meth:`caller_session_id`) before it shows, then ``on_change`` at once. Writes apply
        in order; a later new value from the client for the same key wins.

        Raises LookupError (untracked), ReservedKey, ProtectedKey, MetadataTooLarge,
        SchemaViolation, TypeError (not JSON) or StoreError (the view unchanged).
        """
        updates = dict(updates)
        removed = list(dict.fromkeys(remove))
        for key in [*updates, *removed]:
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
        views = self._tracker.views
        async with self._agent_writes:
            view = views.get(identity)
            if view is None or self.closed:
                raise LookupError("the participant is not tracked by this session")
            serialize_metadata(updates, max_bytes=1 << 30)  # only JSON values
            agent = view.check_agent_write(updates, removed, self._options.max_metadata_bytes)
            if self._options.schema is not None:
                validate_schema({**view.live, **agent}, self._options.schema)
            where = f"{self.id}/{view.participant.sid or identity}"
            try:
                await self._sessions.call_sessions.update(where, updates, remove=removed)
            except StoreError as exc:
                self._report.store_failed(
                    "an agent write to a participant's view", exc, raise_=True
                )
            if views.get(identity) is not view:
                raise LookupError("the participant left or reconnected during the write")
            # A key the server decided since (a view bound late) is hidden by view.metadata.
            view.agent = {k: v for k, v in {**view.agent, **updates}.items() if k not in removed}
            self._agent_keys.add(where)
            self._report.count_applied()
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "metadata adapter: agent wrote %s to participant %s",
                    keys_for_log([*updates, *removed]),
                    key_label(identity),
                )
        self._notifier.mark(identity, at_once=True)  # the agent's own write: no flood to wait out

    def route_input(self) -> RouteInput:
        """The ``route_on`` participant's :class:`~.views.RouteInput` (the job's alone if none)."""
        return self._tracker.route_input(self._tracker.route_view())

    def participant_route_input(self, identity: str) -> RouteInput:
        """The job's metadata under this caller's view, its attributes under the job's."""
        return self._tracker.route_input(self._tracker.views.get(identity))

    async def get(self) -> dict[str, Any]:
        """A copy of the call session (``{}`` if empty); no caller's keys."""
        return await self.space.get(self.id)

    async def set(self, mapping_or_key: Mapping[str, Any] | str, value: Any = None, /) -> None:
        """Merge keys into the session: ``set({"k": v})`` or ``set("k", v)`` (see :meth:`update`)."""
        if isinstance(mapping_or_key, str):
            mapping_or_key = {mapping_or_key: value}
        await self.update(mapping_or_key)

    async def update(self, updates: Mapping[str, Any], *, remove: Iterable[str] = ()) -> None:
        """Merge ``updates`` and remove ``remove`` in one atomic write. Raises TypeError (a value
        JSON cannot hold) or MetadataTooLarge (the session unchanged)."""
        await self.space.update(self.id, updates, remove=remove)

    async def wait_idle(self) -> None:
        """Until every room event so far is applied, its ``on_change`` has run, and the call
        session holds what was written (or a failing write waits for its retry)."""
        while not self.closed and (self._tracker.building or self._notifier.busy):
            self._idle.clear()
            await self._idle.wait()
        await self._writer.wait_settled()

    async def load_job(self) -> None:
        """See :meth:`MetadataAdapter.load_job`."""
        await self._tracker.load_job()

    def follow(self, room: rtc.Room, *, on_change: OnChange | None = None) -> None:
        """Subscribe to the room's events (once); ``on_change`` as in :meth:`MetadataAdapter.attach`
        (``None`` keeps the one installed)."""
        if on_change is not None:
            self._notifier.callback = on_change
        if self._room is not None:
            return
        self._room = room
        tracker = self._tracker
        self._subscriptions = [
            ("participant_metadata_changed", tracker.on_metadata_changed),
            ("participant_attributes_changed", tracker.on_attributes_changed),
            ("participant_connected", tracker.on_participant_connected),
            ("participant_disconnected", tracker.on_participant_disconnected),
        ]
        if self._options.sync_room_metadata:
            self._subscriptions.append(("room_metadata_changed", tracker.on_room_metadata_changed))
        for event, callback in self._subscriptions:
            room.on(event, callback)  # type: ignore[arg-type]
        if self._options.sync_room_metadata:
            tracker.on_room_metadata_changed("", room.metadata)

    async def track(self, participant: rtc.Participant) -> None:
        """Build a participant's view now and follow its changes.

        Raises MetadataError (``on_invalid="raise"``: its metadata or attributes are invalid;
        it is not tracked) or RuntimeError (the handle is closed or has no room).
        """
        if self.closed:
            raise RuntimeError("this session handle is closed")
        if self._room is None:
            raise RuntimeError("track() needs a room; use MetadataAdapter.attach(ctx)")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # One synchronous block: no event can slip between the snapshot and tracking.
        self._tracker.tracked.add(participant.identity)
        self._tracker.snapshot(participant, done)
        try:
            await done
        except MetadataError:
            self._tracker.tracked.discard(participant.identity)
            raise

    async def publish(
        self,
        keys: Iterable[str],
        *,
        as_: PublishAs = "attributes",
        participant: str | None = None,
        timeout: float | None = None,
        api: LiveKitAPI | None = None,
    ) -> PublishResult:
        """Publish chosen session keys as participant attributes or metadata.

        To the agent's own participant (``participant=None``) through the SDK, confirmed by
        reading it back within ``timeout`` (default ``confirm_timeout``); to another through
        the server API (``api``, default ``ctx.api``). Attributes: str values as they are,
        others as JSON, a missing key deleted. Metadata: merged into the current object.

        Raises InvalidAttributes, MetadataTooLarge (over the limits) or ValueError (``as_``
        unknown, ``keys`` empty).
        """
        wait = self._options.confirm_timeout if timeout is None else timeout
        return await self._publisher.publish(self.get, keys, as_, participant, wait, api)

    async def aclose(self, *, delete: bool | None = None) -> None:
        """Stop following the room, let pending writes land, then delete (default:
        ``delete_on_shutdown``; never one named with ``session_id=``) or keep the session."""
        if self.closed:
            return
        self._tracker.close()
        self._notifier.close()
        self._writer.close()
        if self._room is not None:
            for event, callback in self._subscriptions:
                with contextlib.suppress(Exception):
                    self._room.off(event, callback)  # type: ignore[arg-type]
        # Views still being built and call-session writes in flight get drain_timeout.
        writer = self._writer.task
        building = (*self._tracker.tasks(retries=False), writer)
        if waiting := [t for t in building if t is not None and not t.done()]:
            await asyncio.wait(waiting, timeout=self._options.drain_timeout)
        tasks = [t for t in (*self._tracker.tasks(), writer, self._notifier.task) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tracker.release()
        self._idle.set()
        self._writer.closed_down()
        self._on_close(self)
        delete = self._options.delete_on_shutdown if delete is None else delete
        if delete and self.space is not self._sessions.call_sessions:
            logger.warning(
                "metadata adapter: kept session %s: only a call session is deleted at "
                "shutdown, and this one was named with session_id=",
                key_label(self.id),
            )
        elif delete:
            try:
                for where in self._agent_keys:
                    await self.space.delete(where)
                await self.space.delete(self.id)
            except StoreError as exc:
                logger.warning(
                    "metadata adapter: could not delete session %s: %s", key_label(self.id), exc
                )
