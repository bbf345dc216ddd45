"""Room events of the tracked participants, applied to their views in arrival order.

Each event becomes a typed change, applied at once or, while the view is being built,
right after it. An empty attribute value deletes; invalid input changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from livekit import rtc

from .._util import key_label, raw_size
from ..codec import SESSION_KEY, validate_attributes
from ..errors import InvalidSessionReference, MetadataError, StoreError
from ..log import logger
from .options import AdapterOptions, Reporter, backoff
from .settle import CallSessionWriter, ChangeNotifier
from .views import (
    ParticipantView,
    RouteInput,
    TokenSession,
    resolve_token_session,
    without_plugin_keys,
)

if TYPE_CHECKING:
    from livekit.agents import JobContext

    from ..sessions.manager import SessionManager

__all__ = ["AttributesChanged", "Change", "MetadataChanged", "Tracker"]

_ROUTE_KINDS = (
    rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
)


@dataclass(frozen=True, slots=True)
class MetadataChanged:
    raw: str | bytes | None


@dataclass(frozen=True, slots=True)
class AttributesChanged:
    """Changed attributes, and all of them after the change (None: not known)."""

    changed: dict[str, str]
    snapshot: dict[str, str] | None


Change = MetadataChanged | AttributesChanged


@dataclass(eq=False)
class Tracker:
    """The views of a job's tracked participants, and the job's own metadata and attributes."""

    ctx: JobContext
    sessions: SessionManager
    options: AdapterOptions
    report: Reporter
    notifier: ChangeNotifier
    writer: CallSessionWriter
    idle: asyncio.Event
    tracked: set[str] = field(default_factory=set, init=False)
    views: dict[str, ParticipantView] = field(default_factory=dict, init=False)
    job_view: dict[str, Any] = field(default_factory=dict, init=False)
    job_attributes: dict[str, str] = field(default_factory=dict, init=False)
    closed: bool = field(default=False, init=False)
    _job_loaded: bool = field(default=False, init=False)
    _job_reference: object = field(default=None, init=False)
    # Views being built (a token session to read), and the changes that wait for them.
    _binding: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)
    _pending: dict[str, list[Change]] = field(default_factory=dict, init=False)
    _retries: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    @property
    def building(self) -> bool:
        return bool(self._binding)

    def tasks(self, *, retries: bool = True) -> list[asyncio.Task[None]]:
        """Views being built (and token sessions waiting to be read again)."""
        return [*self._binding.values(), *(self._retries if retries else ())]

    def close(self) -> None:
        """Follow no one any more (views being built may finish)."""
        self.closed = True
        self.tracked.clear()

    def release(self) -> None:
        """After :meth:`close` and its tasks: drop the changes still waiting."""
        self._pending.clear()

    def route_view(self) -> ParticipantView | None:
        views = list(self.views.values())
        route_on = self.options.route_on
        if callable(route_on):
            chosen = route_on([v.participant for v in views])
            return self.views.get(chosen.identity) if chosen is not None else None
        kinds = (rtc.ParticipantKind.PARTICIPANT_KIND_SIP,) if route_on == "sip" else _ROUTE_KINDS
        return next((v for v in views if v.participant.kind in kinds), None)

    def route_input(self, view: ParticipantView | None) -> RouteInput:
        """What the rules route on for ``view`` (the job's alone for None)."""
        if view is None:
            return RouteInput(dict(self.job_view), dict(self.job_attributes), None)
        return view.route_input(self.job_view, self.job_attributes)

    def _receive(self, identity: str, change: Callable[[], Change]) -> None:
        if self.closed or identity not in self.tracked:
            return
        self.report.stats.events += 1
        self.notifier.count(identity)
        pending = self._pending.get(identity)
        if pending is not None:  # the view is being built: applied right after it
            pending.append(change())
        elif self.apply(identity, change()):
            self.notifier.mark(identity)

    def on_metadata_changed(self, participant: rtc.Participant, old: str, new: str) -> None:
        self._receive(participant.identity, lambda: MetadataChanged(new))

    def on_attributes_changed(
        self, changed: Mapping[str, str], participant: rtc.Participant
    ) -> None:  # LiveKit passes (changed, participant) here
        self._receive(
            participant.identity,
            lambda: AttributesChanged(dict(changed), dict(participant.attributes)),
        )

    def on_participant_connected(self, participant: rtc.Participant) -> None:
        # A tracked caller that reconnects may come back with other metadata; with
        # track="all", every new caller of the adapter's kinds is followed from here.
        identity = participant.identity
        if self.closed:
            return
        if identity not in self.tracked:
            if not self.options.track_all or participant.kind not in self.options.kinds:
                return
            self.tracked.add(identity)
        self.report.stats.events += 1
        self.snapshot(participant, None)

    def on_participant_disconnected(self, participant: rtc.Participant) -> None:
        """Forget a caller who left (its token session stays in the store for a reconnect;
        with ``track="first"`` the identity stays tracked, to follow one)."""
        identity = participant.identity
        if identity not in self.tracked:
            return
        view = self.views.get(identity)
        gone, current = getattr(participant, "sid", ""), view.participant.sid if view else ""
        if gone and current and gone != current:
            return  # an older session of a caller who already came back
        self.views.pop(identity, None)
        self._pending.pop(identity, None)
        self.notifier.forget(identity)
        if self.options.track_all:
            self.tracked.discard(identity)
        self.report.stats.forgotten += 1

    def on_room_metadata_changed(self, old_metadata: str, new_metadata: str) -> None:
        if self.closed:
            return
        self.report.stats.events += 1
        try:
            obj = self.options.parse(new_metadata)
        except MetadataError as exc:
            size = raw_size(new_metadata)
            self.report.invalid_input("room metadata", exc, size=size, keys=(), raise_=False)
            return
        self.writer.queue(without_plugin_keys(obj))

    def snapshot(self, participant: rtc.Participant, done: asyncio.Future[None] | None) -> None:
        """Start building a fresh view; changes until it is built wait in ``_pending``."""
        identity = participant.identity
        self._pending[identity] = []
        if (previous := self._binding.get(identity)) is not None:
            previous.cancel()
        self._binding[identity] = asyncio.create_task(
            self._build_view(participant, done),
            name=f"metadata-adapter:view:{self.report.session_id}",
        )

    async def _build_view(
        self, participant: rtc.Participant, done: asyncio.Future[None] | None
    ) -> None:
        identity = participant.identity
        try:
            await self._apply_participant(participant, raise_invalid=done is not None)
        except asyncio.CancelledError:
            if done is not None and not done.done():
                done.cancel()
            raise
        except MetadataError as exc:
            self.views.pop(identity, None)
            self._pending.pop(identity, None)
            if done is not None and not done.done():
                done.set_exception(exc)
            return
        except Exception as exc:
            logger.exception("metadata adapter: unexpected error building a participant's view")
            if done is not None and not done.done():
                done.set_exception(exc)
            return
        finally:
            if self._binding.get(identity) is asyncio.current_task():
                del self._binding[identity]
                self.idle.set()
        # What arrived while the view was being built, in order.
        changed = False
        for change in self._pending.pop(identity, []):
            changed |= self.apply(identity, change)
        if done is not None:
            if not done.done():
                done.set_result(None)
            if not changed:
                return  # the first view: attach() has not returned yet
        self.notifier.mark(identity)

    async def _apply_participant(
        self, participant: rtc.Participant, *, raise_invalid: bool
    ) -> None:
        """A fresh view: token session, then metadata, then attributes."""
        raise_ = raise_invalid and self.options.raise_invalid
        identity = participant.identity
        attributes = dict(participant.attributes)
        view = ParticipantView(participant, protected=self.options.protected)
        reference = attributes.get(SESSION_KEY)
        if reference is not None:
            await self._bind(view, reference, raise_=raise_)
        elif self._job_reference is not None:
            self.report.refused(
                view,
                "no-reference",
                "carries no session reference of its own: the job's token session is not "
                "applied to it (its own public metadata only)",
                (),
            )
        self.views.pop(identity, None)  # a reconnect starts a fresh view, at the end
        self.views[identity] = view
        self.apply(identity, MetadataChanged(participant.metadata), raise_=raise_)
        self.apply(identity, AttributesChanged(attributes, None), raise_=raise_)

    async def _resolve(self, view: ParticipantView, reference: str) -> TokenSession:
        room = self.ctx.job.room.name or self.ctx.room.name
        return await resolve_token_session(
            self.sessions, reference, identity=view.identity, room=room
        )

    def _bad_reference(self, view: ParticipantView, exc: MetadataError, raise_: bool) -> None:
        self.report.stats.refused += 1  # logged (once: a view binds once) as invalid
        source = f"the session reference of participant {key_label(view.identity)}"
        self.report.invalid_input(source, exc, size=0, keys=(), raise_=raise_)

    async def _bind(self, view: ParticipantView, reference: str, *, raise_: bool) -> None:
        """Start ``view`` from the token session its own reference names, if trusted; with
        the store down, without it, bound later by retries (routing does not wait)."""
        try:
            session = await self._resolve(view, reference)
        except InvalidSessionReference as exc:
            self._bad_reference(view, exc, raise_)
            return
        except StoreError as exc:
            self.report.store_failed("participant session reference", exc, raise_=raise_)
            self._retries.add(
                asyncio.create_task(self._bind_later(view, reference), name="metadata-rebind")
            )
            return
        view.bind(session, self.options.protected)

    async def _bind_later(self, view: ParticipantView, reference: str) -> None:
        delays = backoff()
        try:
            while not self.closed and self.views.get(view.identity, view) is view:
                await asyncio.sleep(next(delays))
                try:
                    session = await self._resolve(view, reference)
                except StoreError:
                    continue
                except InvalidSessionReference as exc:
                    self._bad_reference(view, exc, False)
                    return
                if self.views.get(view.identity) is view:
                    view.bind(session, self.options.protected)
                    logger.info(
                        "metadata adapter: participant %s: token session read after a store outage",
                        key_label(view.identity),
                    )
                    self.notifier.mark(view.identity)
                return
        finally:
            self._retries.discard(asyncio.current_task())

    async def load_job(self) -> None:
        """Job metadata into the call session (once); job attributes kept apart, as attributes."""
        if self._job_loaded:
            return
        self._job_loaded = True
        raise_ = self.options.raise_invalid
        job_info = self.ctx.job
        raw, size = job_info.metadata, raw_size(job_info.metadata)
        try:
            job = self.options.parse(raw)
        except MetadataError as exc:
            self.report.invalid_input("job metadata", exc, size=size, keys=(), raise_=raise_)
            job = {}
        # The job's own reference binds nothing here: its token session is the view of
        # the participant whose own token carries the same reference.
        self._job_reference = job.get(SESSION_KEY)
        job = without_plugin_keys(job)
        await self.writer.write("job metadata", job, (), size=size, raise_=raise_)
        try:
            checked = validate_attributes(
                dict(job_info.attributes),
                max_bytes=self.options.max_attributes_bytes,
                allow_reserved=True,
            )
        except MetadataError as exc:
            self.report.invalid_input("job attributes", exc, size=0, keys=(), raise_=raise_)
            checked = {}
        self.job_attributes = {k: v for k, v in without_plugin_keys(checked).items() if v != ""}
        self.job_view = {k: v for k, v in job.items() if v != ""}

    def apply(self, identity: str, change: Change, *, raise_: bool = False) -> bool:
        """True if the view changed."""
        match change:
            case MetadataChanged(raw=raw):
                return self._apply_metadata(raw, identity, raise_)
            case AttributesChanged(changed=changed, snapshot=snapshot):
                return self._apply_attributes(changed, snapshot, identity, raise_)

    def _apply_metadata(self, raw: str | bytes | None, identity: str, raise_: bool) -> bool:
        obj: dict[str, Any] = {}
        try:
            obj = self.options.parse(raw)
            view = self.views.get(identity)
            if view is None:
                return False
            refused = view.accept_metadata(obj, self.options.max_metadata_bytes)
        except MetadataError as exc:
            size, keys = raw_size(raw), list(obj)
            self.report.invalid_input(
                "participant metadata", exc, size=size, keys=keys, raise_=raise_
            )
            return False
        if refused:
            self.report.refused(view, "protected", "metadata keys the server decided", refused)
        self.report.count_applied()
        return True

    def _apply_attributes(
        self,
        changed: Mapping[str, str],
        snapshot: Mapping[str, str] | None,
        identity: str,
        raise_: bool,
    ) -> bool:
        """With a snapshot, a changed key that is gone is deleted too."""
        view = self.views.get(identity)
        if view is None:
            return False
        limit = self.options.max_attributes_bytes
        keys = [k for k in changed if isinstance(k, str)]
        try:
            checked = validate_attributes(changed, max_bytes=limit, allow_reserved=True)
            removed = [
                k
                for k, v in checked.items()
                if v == "" or (snapshot is not None and k not in snapshot)
            ]
            updates = {k: v for k, v in checked.items() if k not in removed}
            keys = list(updates)
            shielded = frozenset(self.job_attributes)
            refused = view.accept_attributes(updates, removed, shielded, limit)
        except MetadataError as exc:
            self.report.invalid_input(
                "participant attributes", exc, size=0, keys=keys, raise_=raise_
            )
            return False
        if refused:
            self.report.refused(
                view,
                "attributes",
                "attributes in a LiveKit service namespace this kind of participant cannot "
                "set, or named like a key the server decided",
                refused,
            )
        self.report.count_applied()
        return True
