"""MetadataAdapter: LiveKit job and participant metadata, as each caller's view and a call session.

In an agent entrypoint::

    sessions = SessionManager()                     # or SessionManager(RedisStore(...))
    adapter = MetadataAdapter(sessions)

    async def entrypoint(ctx: JobContext) -> None:
        handle = await adapter.attach(ctx)          # job + caller metadata, kept in sync
        caller = await handle.route_input()         # what to route on
        md = await handle.participant_metadata(caller.identity)  # what a tool reads

Two places, never mixed:

* **The call session** (``handle.get()``/``set()``), in the store's call key
  space, keyed by what LiveKit assigned to the call: the room sid (the job id
  when there is none). It holds the job's metadata, room metadata (with
  ``sync_room_metadata=True``) and what the agent writes. No caller's key is
  ever written there, and no string a client chooses can name it.
* **Each caller's view** (``participant_metadata``/``participant_attributes``),
  in the job's memory: the caller's own token session (bound by the reference
  its own token carries, once the owner record names this participant and
  room), under its live metadata; its live attributes as a separate map. The
  keys the server decided (private and trusted keys, listed in the owner
  record) and ``protected_keys`` are never replaced by the client; an
  attribute never becomes or shadows a metadata key; ``sip.*``/``lk.*``
  attributes count only from the kinds of participant LiveKit's services set
  them on (see :mod:`.views`). ``route_input()`` routes on the job's metadata
  under one caller's view (``route_on``).

While the job lives, ``participant_metadata_changed`` and
``participant_attributes_changed`` of the tracked participant(s) (and
``room_metadata_changed`` when enabled) are applied in arrival order: each
callback only puts the event on one ordered queue, and one task applies them.
A metadata change merges the new JSON object into the view (keys it no longer
has are kept); an attribute change sets the changed keys and removes those
whose value became empty.

Untrusted input: an update that is not valid metadata (bad JSON, not an
object, too large, schema violation, bad attributes) is logged with its reason,
size and keys (never values), counted in :attr:`MetadataAdapter.stats` and
:attr:`SessionHandle.invalid_updates`, and changes nothing. A refused key or
reference (a key the server decided, a service attribute from another kind, a
reference that is not the participant's own) is logged once per participant
with its reason and counted in ``stats.refused``. With ``on_invalid="raise"``,
:meth:`MetadataAdapter.load_job`, :meth:`MetadataAdapter.attach` and
:meth:`MetadataAdapter.parse_request` raise the
:class:`~livekit.plugins.metadata.errors.MetadataError` instead; later events
are always logged and counted, since nobody could catch an error there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson
from livekit import rtc

from .._util import key_label, keys_for_log
from ..codec import (
    DEFAULT_MAX_ATTRIBUTES_BYTES,
    DEFAULT_MAX_METADATA_BYTES,
    SESSION_KEY,
    apply_attributes,
    attributes_size,
    parse_metadata,
    serialize_metadata,
    validate_attributes,
    validate_schema,
)
from ..errors import (
    InvalidAttributes,
    InvalidSessionReference,
    MetadataError,
    MetadataPluginError,
    StoreError,
)
from ..log import logger
from .views import ParticipantView, RouteInput, resolve_token_session, without_plugin_keys

if TYPE_CHECKING:
    from livekit import api as lkapi
    from livekit.agents import JobContext, JobRequest
    from livekit.rtc.room import EventTypes
    from pydantic import BaseModel

    from ..sessions.manager import SessionManager, SessionSpace

__all__ = [
    "DEFAULT_PARTICIPANT_KINDS",
    "AdapterStats",
    "MetadataAdapter",
    "PublishResult",
    "RouteInput",
    "SessionHandle",
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
_ROUTE_KINDS = (
    rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
)


_RETRY_FIRST = 0.5
_RETRY_MAX = 30.0
"""Backoff of store retries (a token session to read, a call-session write), in seconds."""


def _quiet_parse(raw: str | bytes | None, max_bytes: int) -> dict[str, Any]:
    """Parsed metadata, or ``{}`` when invalid (the caller reports invalid input itself)."""
    try:
        return parse_metadata(raw, max_bytes=max_bytes)
    except MetadataError:
        return {}


def _raw_size(raw: str | bytes | None) -> int:
    if raw is None:
        return 0
    if isinstance(raw, bytes):
        return len(raw)
    return len(raw.encode("utf-8", "surrogatepass"))


def _attribute_value(value: Any) -> str:
    """A session value as a LiveKit attribute: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode("utf-8")


@dataclass
class AdapterStats:
    """Counters of what the adapter did with metadata updates (one per source event).

    Attributes:
        applied: Updates applied to a view or the call session.
        invalid: Updates rejected as invalid input (nothing changed).
        failed: Writes or reads the store could not do (e.g. Redis unavailable).
        events: Room events received for a tracked participant or the room.
        refused: Client input refused at a trust boundary: keys the server
            decided, service attributes from another kind of participant,
            attributes shadowing a protected key, a reference that is not the
            participant's own (each counted per update, logged once per
            participant and reason).
        coalesced: Changes folded into an ``on_change`` call already pending for the
            same participant (it runs once, for the latest state).
        flooding: Participants that sent more than ``flood_rate`` updates in a second
            (each logged once).
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


@dataclass(frozen=True)
class PublishResult:
    """Outcome of :meth:`SessionHandle.publish`.

    ``bool(result)`` is ``result.confirmed``.

    Attributes:
        confirmed: The new value was read back from the participant (local) or
            returned by the server (remote) before the timeout.
        target: ``"attributes"`` or ``"metadata"``.
        identity: The participant written to.
        keys: The session keys published (missing ones were cleared).
        size: Bytes sent: the serialized metadata, or the attribute update's size.
    """

    confirmed: bool
    target: PublishAs
    identity: str
    keys: tuple[str, ...]
    size: int

    def __bool__(self) -> bool:
        return self.confirmed


class SessionHandle:
    """The session of one job: read and write it, wait for queued updates, publish keys.

    Created by :meth:`MetadataAdapter.load_job` / :meth:`MetadataAdapter.attach`;
    not meant to be constructed directly.
    """

    def __init__(
        self, adapter: MetadataAdapter, ctx: JobContext, session_id: str, space: SessionSpace
    ) -> None:
        self._adapter = adapter
        self._ctx = ctx
        self._id = session_id
        self._space = space
        self._tracked: set[str] = set()
        self._room: rtc.Room | None = None
        # Views being built (a token session to read), and events that wait for them.
        self._binding: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, list[tuple[str, Any, Any]]] = {}
        self._retries: set[asyncio.Task[None]] = set()
        # on_change: participants changed since their last call (an ordered set).
        # on_change: when each changed participant's call is due, when the first change
        # still waiting for it came, and when its last call started.
        self._dirty: dict[str, float] = {}
        self._first_change: dict[str, float] = {}
        self._last_call: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._notifier: asyncio.Task[None] | None = None
        self._notifying = False
        self._idle = asyncio.Event()
        # Flood accounting: (window start, events in the window) per participant.
        self._flood: dict[str, tuple[float, int]] = {}
        self._flooding: set[str] = set()
        # Call-session writes still to land (latest value per key), and their writer.
        self._unwritten: dict[str, Any] = {}
        self._unremoved: set[str] = set()
        self._writer: asyncio.Task[None] | None = None
        self._write_settled = asyncio.Event()
        self._subscriptions: list[tuple[str, Callable[..., None]]] = []
        self._job_loaded = False
        self._closed = False
        self._views: dict[str, ParticipantView] = {}
        self._job_view: dict[str, Any] = {}
        self._job_attributes: dict[str, str] = {}
        self._job_reference: object = None
        self._on_change: OnChange | None = None
        self._agent_writes = asyncio.Lock()
        self._agent_keys: set[str] = set()
        self.applied_updates = 0
        """Updates merged into this session."""
        self.invalid_updates = 0
        """Updates rejected as invalid input (the session was left unchanged)."""
        self.failed_updates = 0
        """Updates the store could not apply."""

    def __repr__(self) -> str:
        return (
            f"SessionHandle(id={self._id!r}, tracked={sorted(self._tracked)!r}, "
            f"applied={self.applied_updates}, invalid={self.invalid_updates}, "
            f"failed={self.failed_updates}, closed={self._closed})"
        )

    @property
    def id(self) -> str:
        """The call session's id: the room sid LiveKit assigned (or ``session_id(ctx)``).

        Another worker, a webhook handler (``event.room.sid``) or a tool finds the
        call session with ``sessions.call_sessions.get(room_sid)``.
        """
        return self._id

    @property
    def space(self) -> SessionSpace:
        """The key space of the call session: ``call``, or ``named`` with ``session_id=``."""
        return self._space

    @property
    def tracked(self) -> frozenset[str]:
        """Identities of the participants whose changes are merged into the session."""
        return frozenset(self._tracked)

    @property
    def closed(self) -> bool:
        """True once the handle was closed (at job shutdown or by :meth:`aclose`)."""
        return self._closed

    @property
    def participants(self) -> tuple[str, ...]:
        """Identities of the tracked participants, in the order they were first tracked."""
        return tuple(self._views)

    # -- the agent's view ------------------------------------------------------------------

    async def participant_metadata(self, identity: str) -> dict[str, Any]:
        """One participant's own view: its token session overlaid with its live metadata.

        This is what a tool serving that caller reads. Includes the private keys
        only its token session holds (never in any token); the keys the server
        decided are never the client's. ``{}`` for a participant that is not
        tracked. Other callers' metadata and any attribute never mix in.
        """
        view = self._views.get(identity)
        return dict(view.metadata) if view is not None else {}

    async def participant_attributes(self, identity: str) -> dict[str, str]:
        """One participant's live attributes (without ``lk-metadata.*``); ``{}`` if untracked."""
        view = self._views.get(identity)
        return dict(view.attributes) if view is not None else {}

    def participant_protected(self, identity: str) -> frozenset[str]:
        """The keys of a caller's view the server decided (never written by client or
        tool): its private and trusted keys plus ``protected_keys``; empty if untracked."""
        view = self._views.get(identity)
        return view.protected if view is not None else frozenset()

    def caller_session_id(self, identity: str) -> str | None:
        """Where :meth:`update_participant` persists a caller's agent-side writes: the
        call key space's ``"<call session id>/<participant sid>"`` (both assigned by
        LiveKit, never chosen by a client); None for an untracked participant."""
        view = self._views.get(identity)
        if view is None:
            return None
        return f"{self._id}/{view.participant.sid or identity}"

    async def update_participant(
        self, identity: str, updates: Mapping[str, Any], *, remove: Iterable[str] = ()
    ) -> None:
        """Agent-side write to one caller's view (what a tool writes), checked like client
        metadata and persisted before it shows.

        The keys land in the caller's view over its live metadata (a later new value
        from the client for the same key wins) and in the store
        (:meth:`caller_session_id`); then ``on_change(identity)`` is asked for, on the
        same coalescing path as client updates, so a write that changes the route
        hands off once. Writes are applied one at a time, in call order.

        Raises:
            LookupError: The participant is not tracked.
            ReservedKey: A key in the plugin's ``lk-metadata.`` namespace.
            ProtectedKey: A key the server decided.
            MetadataTooLarge: The view would be over the adapter's ``max_bytes``.
            SchemaViolation: With a ``schema``, the caller's live metadata with
                the write does not satisfy it.
            TypeError: A value JSON cannot hold.
            StoreError: The store could not persist it (the view is unchanged).
        """
        updates = dict(updates)
        removed = list(dict.fromkeys(remove))
        for key in [*updates, *removed]:
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
        async with self._agent_writes:
            view = self._views.get(identity)
            if view is None or self._closed:
                raise LookupError("the participant is not tracked by this session")
            serialize_metadata(updates, max_bytes=1 << 30)  # only JSON values
            agent = view.check_agent_write(updates, removed, self._adapter._max_bytes)
            if self._adapter._schema is not None:
                validate_schema({**view.live, **agent}, self._adapter._schema)
            where = self.caller_session_id(identity)
            assert where is not None
            try:
                await self._adapter._sessions.call_sessions.update(where, updates, remove=removed)
            except StoreError as exc:
                self._failed("an agent write to a participant's view", exc, raise_=True)
            if self._views.get(identity) is not view:
                raise LookupError("the participant left or reconnected during the write")
            # A key the server decided since (a view bound late) is hidden by view.metadata.
            view.agent = {k: v for k, v in {**view.agent, **updates}.items() if k not in removed}
            self._agent_keys.add(where)
            self._applied()
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "metadata adapter: agent wrote %s to participant %s",
                    keys_for_log([*updates, *removed]),
                    key_label(identity),
                )
        self._mark(identity, at_once=True)  # the agent's own write: no flood to wait out

    async def route_input(self) -> RouteInput:
        """The metadata, attributes and identity of the participant to route on.

        Chosen by the adapter's ``route_on``: by default the first tracked
        standard or SIP participant. ``metadata`` is the job's metadata overlaid
        with that participant's view; ``attributes`` its live attributes under the
        job's. With no participant it is the job's alone and ``identity`` is None.
        """
        view = self._route_view()
        if view is None:
            return RouteInput(dict(self._job_view), dict(self._job_attributes), None)
        return view.route_input(self._job_view, self._job_attributes)

    async def participant_route_input(self, identity: str) -> RouteInput:
        """What the rules would route on for this caller: the job's metadata under its
        view, its attributes under the job's (the job's alone if it is not tracked)."""
        view = self._views.get(identity)
        if view is None:
            return RouteInput(dict(self._job_view), dict(self._job_attributes), None)
        return view.route_input(self._job_view, self._job_attributes)

    def _route_view(self) -> ParticipantView | None:
        views = list(self._views.values())
        route_on = self._adapter._route_on
        if callable(route_on):
            chosen = route_on([v.participant for v in views])
            return self._views.get(chosen.identity) if chosen is not None else None
        kinds = (rtc.ParticipantKind.PARTICIPANT_KIND_SIP,) if route_on == "sip" else _ROUTE_KINDS
        return next((v for v in views if v.participant.kind in kinds), None)

    # -- reading and writing -------------------------------------------------------------

    async def get(self) -> dict[str, Any]:
        """A copy of the call session (``{}`` if it holds nothing): the job's metadata,
        room metadata when synced, and what the agent wrote. No caller's keys."""
        return await self._space.get(self._id)

    async def set(self, mapping_or_key: Mapping[str, Any] | str, value: Any = None, /) -> None:
        """Merge keys into the session: ``set({"k": v})`` or ``set("k", v)``.

        Raises:
            TypeError: A non-str key or a value JSON cannot hold.
            MetadataTooLarge: The session would exceed its size limit (unchanged).
        """
        if isinstance(mapping_or_key, str):
            await self._space.update(self._id, {mapping_or_key: value})
        else:
            await self._space.update(self._id, mapping_or_key)

    async def update(self, updates: Mapping[str, Any], *, remove: Iterable[str] = ()) -> None:
        """Merge ``updates`` and remove ``remove`` in one atomic write.

        Raises:
            TypeError: A non-str key or a value JSON cannot hold.
            MetadataTooLarge: The session would exceed its size limit (unchanged).
        """
        await self._space.update(self._id, updates, remove=remove)

    async def wait_idle(self) -> None:
        """Wait until every room event received so far is applied, its ``on_change`` has
        run, and the call session holds what was written to it (or a write is failing
        and waits to be retried)."""
        while not self._closed and (self._binding or self._dirty or self._notifying):
            self._idle.clear()
            await self._idle.wait()
        writer = self._writer
        if writer is not None and not writer.done() and not self._closed:
            await asyncio.wait(
                {writer, asyncio.ensure_future(self._write_settled.wait())},
                return_when=asyncio.FIRST_COMPLETED,
            )

    # -- tracking participants -------------------------------------------------------------

    async def track(self, participant: rtc.Participant) -> None:
        """Build a participant's view now and follow its changes.

        Raises:
            MetadataError: With ``on_invalid="raise"``, when the participant's
                current metadata or attributes are invalid (it is then not tracked).
            RuntimeError: The handle is closed or has no room (use ``attach``).
        """
        if self._closed:
            raise RuntimeError("this session handle is closed")
        if self._room is None:
            raise RuntimeError("track() needs a room; use MetadataAdapter.attach(ctx)")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # One synchronous block: no event can slip between the snapshot and tracking.
        self._tracked.add(participant.identity)
        self._snapshot(participant, done)
        try:
            await done
        except MetadataError:
            self._tracked.discard(participant.identity)
            raise

    def _start(self, room: rtc.Room) -> None:
        """Subscribe to the room's events (once)."""
        if self._room is not None:
            return
        self._room = room
        adapter = self._adapter
        subs: list[tuple[str, Callable[..., None]]] = [
            ("participant_metadata_changed", self._on_metadata_changed),
            ("participant_attributes_changed", self._on_attributes_changed),
            ("participant_connected", self._on_participant_connected),
            ("participant_disconnected", self._on_participant_disconnected),
        ]
        if adapter._sync_room_metadata:
            subs.append(("room_metadata_changed", self._on_room_metadata_changed))
        for event, callback in subs:
            room.on(event, callback)  # type: ignore[arg-type]
        self._subscriptions = subs
        if adapter._sync_room_metadata:
            self._on_room_metadata_changed("", room.metadata)

    def _unsubscribe(self) -> None:
        room = self._room
        if room is None:
            return
        for event, callback in self._subscriptions:
            with contextlib.suppress(Exception):
                room.off(event, callback)  # type: ignore[arg-type]
        self._subscriptions = []

    # -- room callbacks: plain functions, applied at once, in arrival order ----------------------

    def _received(self, identity: str) -> bool:
        """Count an event of a tracked participant; True if it is to be applied."""
        if self._closed or identity not in self._tracked:
            return False
        self._adapter.stats.events += 1
        flood = self._flood.get(identity)
        now = time.monotonic()
        if flood is None or now - flood[0] >= 1.0:
            self._flood[identity] = (now, 1)
            return True
        count = flood[1] + 1
        self._flood[identity] = (flood[0], count)
        limit = self._adapter._flood_rate
        if count > limit and identity not in self._flooding:
            self._flooding.add(identity)
            self._adapter.stats.flooding += 1
            logger.warning(
                "metadata adapter: participant %s sent more than %g updates in a second; "
                "each is applied, on_change runs for the latest state only",
                key_label(identity),
                limit,
            )
        return True

    def _on_metadata_changed(
        self, participant: rtc.Participant, old_metadata: str, new_metadata: str
    ) -> None:
        identity = participant.identity
        if not self._received(identity):
            return
        pending = self._pending.get(identity)
        if pending is not None:  # the view is being built: applied right after it
            pending.append(("metadata", new_metadata, None))
            return
        if self._apply_metadata("participant metadata", new_metadata, identity=identity):
            self._mark(identity)

    def _on_attributes_changed(
        self, changed_attributes: Mapping[str, str], participant: rtc.Participant
    ) -> None:
        # Note the argument order: LiveKit passes (changed, participant) here.
        identity = participant.identity
        if not self._received(identity):
            return
        changed, snapshot = dict(changed_attributes), dict(participant.attributes)
        pending = self._pending.get(identity)
        if pending is not None:
            pending.append(("attributes", changed, snapshot))
            return
        if self._apply_attributes(
            "participant attributes", changed, snapshot=snapshot, identity=identity
        ):
            self._mark(identity)

    def _on_participant_connected(self, participant: rtc.Participant) -> None:
        # A tracked caller that reconnects may come back with other metadata; with
        # track="all", every new caller of the adapter's kinds is followed from here.
        identity = participant.identity
        if self._closed:
            return
        if identity not in self._tracked:
            if not self._adapter._track_all or participant.kind not in self._adapter._kinds:
                return
            self._tracked.add(identity)
        self._adapter.stats.events += 1
        self._snapshot(participant, None)

    def _on_participant_disconnected(self, participant: rtc.Participant) -> None:
        """Forget a caller who left: its view, pending changes and rate window.

        Its token session stays in the store until it expires, so a reconnect finds it.
        With ``track="first"`` the identity stays tracked, to follow a reconnect.
        """
        identity = participant.identity
        if identity not in self._tracked:
            return
        view = self._views.get(identity)
        gone, current = getattr(participant, "sid", ""), view.participant.sid if view else ""
        if gone and current and gone != current:
            return  # an older session of a caller who already came back
        self._views.pop(identity, None)
        self._pending.pop(identity, None)
        self._dirty.pop(identity, None)
        self._first_change.pop(identity, None)
        self._last_call.pop(identity, None)
        self._flood.pop(identity, None)
        self._flooding.discard(identity)
        if self._adapter._track_all:
            self._tracked.discard(identity)
        self._adapter.stats.forgotten += 1

    def _on_room_metadata_changed(self, old_metadata: str, new_metadata: str) -> None:
        if self._closed:
            return
        self._adapter.stats.events += 1
        adapter = self._adapter
        try:
            obj = parse_metadata(new_metadata, max_bytes=adapter._max_bytes)
            if adapter._schema is not None:
                validate_schema(obj, adapter._schema)
        except MetadataError as exc:
            self._invalid("room metadata", exc, size=_raw_size(new_metadata), keys=(), raise_=False)
            return
        self._queue_write(without_plugin_keys(obj))

    # -- building a view (the only part that reads the store) ---------------------------------

    def _snapshot(self, participant: rtc.Participant, done: asyncio.Future[None] | None) -> None:
        """Start building a fresh view; events until it is built wait in ``_pending``."""
        identity = participant.identity
        self._pending[identity] = []
        previous = self._binding.get(identity)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(
            self._build_view(participant, done), name=f"metadata-adapter:view:{self._id}"
        )
        self._binding[identity] = task

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
            self._views.pop(identity, None)
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
                self._idle.set()
        # What arrived while the view was being built, in order.
        queued = self._pending.pop(identity, [])
        changed = False
        for kind, payload, snapshot in queued:
            if kind == "metadata":
                changed |= self._apply_metadata("participant metadata", payload, identity=identity)
            else:
                changed |= self._apply_attributes(
                    "participant attributes", payload, snapshot=snapshot, identity=identity
                )
        if done is not None:
            if not done.done():
                done.set_result(None)
            if not changed:
                return  # the first view: attach() has not returned yet
        self._mark(identity)

    async def _apply_participant(
        self, participant: rtc.Participant, *, raise_invalid: bool
    ) -> None:
        """A fresh view of a participant that joined (or rejoined): token session,
        then its metadata, then its attributes."""
        raise_ = raise_invalid and self._adapter._raise
        identity = participant.identity
        attributes = dict(participant.attributes)
        view = ParticipantView(participant, protected=self._adapter._protected)
        reference = attributes.get(SESSION_KEY)
        if reference is not None:
            await self._bind(view, reference, raise_=raise_)
        elif self._job_reference is not None:
            self._refused(
                view,
                "no-reference",
                "carries no session reference of its own: the job's token session is not "
                "applied to it (its own public metadata only)",
                (),
            )
        self._views.pop(identity, None)  # a reconnect starts a fresh view, at the end
        self._views[identity] = view
        self._apply_metadata(
            "participant metadata", participant.metadata, identity=identity, raise_=raise_
        )
        self._apply_attributes(
            "participant attributes", attributes, snapshot=None, identity=identity, raise_=raise_
        )

    async def _bind(self, view: ParticipantView, reference: str, *, raise_: bool) -> None:
        """Start ``view`` from the token session its own reference names, if trusted.

        When the store cannot be reached, the view starts without it and a retry with
        backoff binds it once the store answers (routing does not wait for the store).
        """
        try:
            session = await resolve_token_session(
                self._adapter._sessions, reference, identity=view.identity, room=self._room_name()
            )
        except InvalidSessionReference as exc:
            self._adapter.stats.refused += 1  # logged (once: a view binds once) as invalid
            source = f"the session reference of participant {key_label(view.identity)}"
            self._invalid(source, exc, size=0, keys=(), raise_=raise_)
            return
        except StoreError as exc:
            self._failed("participant session reference", exc, raise_=raise_)
            self._retries.add(
                asyncio.create_task(self._bind_later(view, reference), name="metadata-rebind")
            )
            return
        view.bind(session, self._adapter._protected)

    async def _bind_later(self, view: ParticipantView, reference: str) -> None:
        delay = _RETRY_FIRST
        try:
            while not self._closed and self._views.get(view.identity, view) is view:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                try:
                    session = await resolve_token_session(
                        self._adapter._sessions,
                        reference,
                        identity=view.identity,
                        room=self._room_name(),
                    )
                except StoreError:
                    continue
                except InvalidSessionReference as exc:
                    self._adapter.stats.refused += 1
                    source = f"the session reference of participant {key_label(view.identity)}"
                    self._invalid(source, exc, size=0, keys=(), raise_=False)
                    return
                if self._views.get(view.identity) is view:
                    view.bind(session, self._adapter._protected)
                    logger.info(
                        "metadata adapter: participant %s: token session read after a store outage",
                        key_label(view.identity),
                    )
                    self._mark(view.identity)
                return
        finally:
            self._retries.discard(asyncio.current_task())

    # -- on_change: once per settled state, never blocking the adapter -------------------------

    def _mark(self, identity: str, *, at_once: bool = False) -> None:
        """Ask for ``on_change(identity)`` once the participant's state has settled.

        The first change after a quiet ``settle`` interval is delivered at once (no
        added latency when updates are rare); changes that follow within ``settle``
        fold into one call, made when the participant has been quiet for ``settle``
        seconds, or at the latest ``8 * settle`` after the first change still waiting,
        so a flood that never pauses still moves on. The call reads the latest state.
        ``at_once`` (a tool's write) skips the wait; a call already running still folds
        what follows into one more.
        """
        if self._on_change is None or self._closed:
            return
        now = time.monotonic()
        settle = self._adapter._settle
        due = self._dirty.get(identity)
        if due is None:
            self._first_change[identity] = now
            last = self._last_call.get(identity)
            quiet = at_once or last is None or now - last >= settle
            self._dirty[identity] = now if quiet else now + settle
        else:
            self._adapter.stats.coalesced += 1
            if at_once:
                self._dirty[identity] = min(due, now)
            elif due > now:  # not yet due: wait for quiet, bounded by the first change's age
                self._dirty[identity] = min(now + settle, self._first_change[identity] + 8 * settle)
        self._wake.set()
        if self._notifier is None or self._notifier.done():
            self._notifier = asyncio.create_task(
                self._notify_all(), name=f"metadata-adapter:on_change:{self._id}"
            )

    async def _notify_all(self) -> None:
        """Run ``on_change`` for every participant whose change is due, the latest state."""
        callback = self._on_change
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
            self._idle.set()

    def _room_name(self) -> str:
        return self._ctx.job.room.name or self._ctx.room.name

    async def _load_job(self, raise_: bool) -> None:
        """Job metadata into the call session; job attributes kept apart, as attributes."""
        ctx = self._ctx
        raw = ctx.job.metadata
        adapter = self._adapter
        try:
            job = parse_metadata(raw, max_bytes=adapter._max_bytes)
            if adapter._schema is not None:
                validate_schema(job, adapter._schema)
        except MetadataError as exc:
            self._invalid("job metadata", exc, size=_raw_size(raw), keys=(), raise_=raise_)
            job = {}
        # The job's own reference binds nothing here: its token session is the view of
        # the participant whose own token carries the same reference.
        self._job_reference = job.get(SESSION_KEY)
        job = without_plugin_keys(job)
        await self._write("job metadata", job, (), size=_raw_size(raw), raise_=raise_)
        try:
            checked = validate_attributes(
                dict(ctx.job.attributes),
                max_bytes=adapter._max_attribute_bytes,
                allow_reserved=True,
            )
        except MetadataError as exc:
            self._invalid("job attributes", exc, size=0, keys=(), raise_=raise_)
            checked = {}
        self._job_attributes = {k: v for k, v in without_plugin_keys(checked).items() if v != ""}
        self._job_view = {k: v for k, v in job.items() if v != ""}

    # -- applying one source ---------------------------------------------------------------------

    def _apply_metadata(
        self, source: str, raw: str | bytes | None, *, identity: str, raise_: bool = False
    ) -> bool:
        """A participant's metadata into its view; True if the view changed."""
        adapter = self._adapter
        try:
            obj = parse_metadata(raw, max_bytes=adapter._max_bytes)
            if adapter._schema is not None:
                validate_schema(obj, adapter._schema)
        except MetadataError as exc:
            self._invalid(source, exc, size=_raw_size(raw), keys=(), raise_=raise_)
            return False
        view = self._views.get(identity)
        if view is None:
            return False
        try:
            refused = view.accept_metadata(obj, adapter._max_bytes)
        except MetadataError as exc:
            self._invalid(source, exc, size=_raw_size(raw), keys=list(obj), raise_=raise_)
            return False
        if refused:
            self._refused(view, "protected", "metadata keys the server decided", refused)
        self._applied()
        return True

    def _apply_attributes(
        self,
        source: str,
        changed: Mapping[str, str],
        *,
        snapshot: Mapping[str, str] | None,
        identity: str,
        raise_: bool = False,
    ) -> bool:
        """A participant's attribute change into its view (never into metadata); True if
        the view changed."""
        view = self._views.get(identity)
        if view is None:
            return False
        try:
            checked = validate_attributes(
                changed, max_bytes=self._adapter._max_attribute_bytes, allow_reserved=True
            )
        except MetadataError as exc:
            keys = (
                [k for k in changed if isinstance(k, str)] if isinstance(changed, Mapping) else []
            )
            self._invalid(source, exc, size=0, keys=keys, raise_=raise_)
            return False
        updates: dict[str, str] = {}
        removed: list[str] = []
        for key, value in checked.items():
            # Empty value = deleted; with a snapshot, a changed key that is gone is deleted too.
            if value == "" or (snapshot is not None and key not in snapshot):
                removed.append(key)
            else:
                updates[key] = value
        try:
            refused = view.accept_attributes(
                updates,
                removed,
                frozenset(self._job_attributes),
                self._adapter._max_attribute_bytes,
            )
        except MetadataError as exc:
            self._invalid(source, exc, size=0, keys=list(updates), raise_=raise_)
            return False
        if refused:
            self._refused(
                view,
                "attributes",
                "attributes in a LiveKit service namespace this kind of participant cannot "
                "set, or named like a key the server decided",
                refused,
            )
        self._applied()
        return True

    def _applied(self) -> None:
        self.applied_updates += 1
        self._adapter.stats.applied += 1

    def _refused(self, view: ParticipantView, reason: str, why: str, keys: Collection[str]) -> None:
        """Count a refusal at a trust boundary; log it once per participant and reason."""
        self._adapter.stats.refused += 1
        if reason in view.reported:
            return
        view.reported.add(reason)
        logger.warning(
            "metadata adapter: participant %s: ignored %s%s",
            key_label(view.identity),
            why,
            f" {keys_for_log(keys)}" if keys else "",
        )

    async def _write(
        self,
        source: str,
        updates: Mapping[str, Any],
        removed: Collection[str],
        *,
        size: int,
        raise_: bool,
    ) -> bool:
        if not updates and not removed:
            return True
        try:
            await self._space.update(self._id, updates, remove=removed)
        except MetadataError as exc:
            self._invalid(source, exc, size=size, keys=list(updates), raise_=raise_)
            return False
        except (TypeError, ValueError) as exc:
            # Parsed metadata is always JSON; this would be a value the store refuses.
            self._invalid(source, exc, size=size, keys=list(updates), raise_=raise_)
            return False
        except StoreError as exc:
            self._failed(source, exc, raise_=raise_)
            self._queue_write(updates, removed)  # retried with backoff until it lands
            return False
        self._applied()
        return True

    def _queue_write(self, updates: Mapping[str, Any], removed: Collection[str] = ()) -> None:
        """Merge a change into what the call session still has to get, and write it soon.

        Writes to the call session (room metadata, a job write that failed) never
        block the events that follow; a failed write is retried with backoff
        (0.5 s doubling to 30 s) until it lands or the job ends, the latest value of
        each key winning.
        """
        for key in removed:
            self._unwritten.pop(key, None)
            self._unremoved.add(key)
        for key, value in updates.items():
            self._unwritten[key] = value
            self._unremoved.discard(key)
        if self._writer is None or self._writer.done():
            self._write_settled.clear()
            self._writer = asyncio.create_task(
                self._flush(), name=f"metadata-adapter:write:{self._id}"
            )

    async def _flush(self) -> None:
        delay = _RETRY_FIRST
        try:
            while (self._unwritten or self._unremoved) and not self._closed:
                updates, removed = self._unwritten, list(self._unremoved)
                self._unwritten, self._unremoved = {}, set()
                try:
                    await self._space.update(self._id, updates, remove=removed)
                except (MetadataError, TypeError, ValueError) as exc:
                    self._invalid("room metadata", exc, size=0, keys=list(updates), raise_=False)
                    continue
                except StoreError as exc:
                    self._failed("a call-session write", exc, raise_=False)
                    # Put it back under anything newer, and wait before the next try.
                    self._unwritten = {**updates, **self._unwritten}
                    self._unremoved |= {k for k in removed if k not in self._unwritten}
                    self._write_settled.set()
                    await asyncio.sleep(delay)
                    self._write_settled.clear()
                    delay = min(delay * 2, _RETRY_MAX)
                    continue
                delay = _RETRY_FIRST
                self._applied()
        finally:
            self._write_settled.set()

    def _failed(self, source: str, exc: StoreError, *, raise_: bool) -> None:
        self.failed_updates += 1
        self._adapter.stats.failed += 1
        logger.warning(
            "metadata adapter: could not store %s for session %s: %s",
            source,
            key_label(self._id),
            exc,
        )
        if raise_:
            raise exc

    def _invalid(
        self, source: str, exc: Exception, *, size: int, keys: Iterable[str], raise_: bool
    ) -> None:
        self.invalid_updates += 1
        self._adapter.stats.invalid += 1
        # MetadataPluginError messages never carry values; other messages are not shown.
        reason = str(exc) if isinstance(exc, MetadataPluginError) else type(exc).__name__
        logger.warning(
            "metadata adapter: rejected %s for session %s (%d bytes, keys=%s): %s",
            source,
            key_label(self._id),
            size,
            keys_for_log(keys),
            reason,
        )
        if raise_:
            raise exc

    # -- write-back ----------------------------------------------------------------------------

    async def publish(
        self,
        keys: Iterable[str],
        *,
        as_: PublishAs = "attributes",
        participant: str | None = None,
        timeout: float | None = None,
        api: lkapi.LiveKitAPI | None = None,
    ) -> PublishResult:
        """Publish chosen session keys as participant attributes or metadata.

        With ``participant=None`` the keys go to the agent's own participant
        through the SDK setters. Those ignore server errors, so the write is
        confirmed by reading the value back (waiting for the change event up to
        ``timeout`` seconds). With ``participant="<identity>"`` the keys go to
        that participant through the server API (``UpdateParticipant``), whose
        answer confirms them.

        Attributes: string values are sent as they are, other values as compact
        JSON; a key missing from the session is sent empty, which deletes the
        attribute. Metadata: the participant's current metadata (as this agent
        sees it; ``{}`` if it is not a JSON object) is merged with the keys
        (missing keys removed) and sent as one JSON object, never as an empty
        string (the server skips empty metadata; ``{}`` clears it instead).

        Args:
            keys: Session keys to publish.
            as_: ``"attributes"`` or ``"metadata"``.
            participant: Another participant's identity, or None for the agent.
            timeout: Seconds to wait for confirmation (default: the adapter's
                ``confirm_timeout``).
            api: The server API client for remote writes (default ``ctx.api``).

        Returns:
            A :class:`PublishResult`; ``confirmed`` is False if the value could
            not be read back in time (a warning is logged).

        Raises:
            InvalidAttributes: The attributes would be invalid or over 64 KiB.
            MetadataTooLarge: The metadata would be over the adapter's ``max_bytes``.
            ValueError: ``as_`` is unknown or ``keys`` is empty.
        """
        if as_ not in ("attributes", "metadata"):
            raise ValueError("as_ must be 'attributes' or 'metadata'")
        key_list = [keys] if isinstance(keys, str) else list(dict.fromkeys(keys))
        if not key_list:
            raise ValueError("keys must name at least one session key")
        for key in key_list:
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
        wait = self._adapter._confirm_timeout if timeout is None else timeout
        session = await self.get()
        if participant is None:
            return await self._publish_local(session, key_list, as_, wait)
        return await self._publish_remote(session, key_list, as_, participant, api)

    def _attribute_update(
        self, session: Mapping[str, Any], keys: list[str], current: Mapping[str, str]
    ) -> dict[str, str]:
        update = {k: _attribute_value(session[k]) if k in session else "" for k in keys}
        validate_attributes(update, max_bytes=self._adapter._max_attribute_bytes)
        total = attributes_size(apply_attributes(current, update))
        limit = self._adapter._max_attribute_bytes
        if total > limit:
            raise InvalidAttributes(
                f"attributes would total {total} bytes, over the limit of {limit} bytes"
            )
        return update

    def _metadata_text(self, session: Mapping[str, Any], keys: list[str], current: str) -> str:
        try:
            base = parse_metadata(current, max_bytes=max(self._adapter._max_bytes, 1 << 20))
        except MetadataError:
            base = {}
        for key in keys:
            if key in session:
                base[key] = session[key]
            else:
                base.pop(key, None)
        return serialize_metadata(base, max_bytes=self._adapter._max_bytes)

    async def _publish_local(
        self, session: Mapping[str, Any], keys: list[str], as_: PublishAs, timeout: float
    ) -> PublishResult:
        room = self._ctx.room
        local = room.local_participant
        identity = local.identity
        changed = asyncio.Event()

        def on_change(*args: Any) -> None:
            # metadata: (participant, old, new); attributes: (changed, participant).
            who = args[0] if as_ == "metadata" else args[1]
            if getattr(who, "identity", None) == identity:
                changed.set()

        if as_ == "attributes":
            update = self._attribute_update(session, keys, dict(local.attributes))
            size = attributes_size(update)

            def confirmed() -> bool:
                current = local.attributes
                return all(current.get(k, "") == v for k, v in update.items())

            event: EventTypes = "participant_attributes_changed"
        else:
            text = self._metadata_text(session, keys, local.metadata)
            size = len(text.encode("utf-8"))

            def confirmed() -> bool:
                return bool(local.metadata == text)

            event = "participant_metadata_changed"

        room.on(event, on_change)
        try:
            if as_ == "attributes":
                await local.set_attributes(update)
            else:
                await local.set_metadata(text)
            ok = await _wait_until(confirmed, changed, timeout)
        finally:
            room.off(event, on_change)
        return self._result(ok, as_, identity, keys, size)

    async def _publish_remote(
        self,
        session: Mapping[str, Any],
        keys: list[str],
        as_: PublishAs,
        identity: str,
        api: lkapi.LiveKitAPI | None,
    ) -> PublishResult:
        from livekit import api as lk_api

        room_name = self._ctx.job.room.name or self._ctx.room.name
        known = self._ctx.room.remote_participants.get(identity)
        if as_ == "attributes":
            update = self._attribute_update(
                session, keys, dict(known.attributes) if known is not None else {}
            )
            size = attributes_size(update)
            request = lk_api.UpdateParticipantRequest(
                room=room_name, identity=identity, attributes=update
            )
        else:
            text = self._metadata_text(session, keys, known.metadata if known is not None else "")
            size = len(text.encode("utf-8"))
            request = lk_api.UpdateParticipantRequest(
                room=room_name, identity=identity, metadata=text
            )
        client = api if api is not None else self._ctx.api
        info = await client.room.update_participant(request)
        if as_ == "attributes":
            ok = all(info.attributes.get(k, "") == v for k, v in update.items())
        else:
            ok = info.metadata == text
        return self._result(ok, as_, identity, keys, size)

    def _result(
        self, ok: bool, as_: PublishAs, identity: str, keys: list[str], size: int
    ) -> PublishResult:
        if not ok:
            logger.warning(
                "metadata adapter: %s %s of %s not confirmed (keys=%s, %d bytes); "
                "check canUpdateOwnMetadata and the server's size limits",
                "published",
                as_,
                key_label(identity),
                keys_for_log(keys),
                size,
            )
        return PublishResult(
            confirmed=ok, target=as_, identity=identity, keys=tuple(keys), size=size
        )

    # -- shutdown ----------------------------------------------------------------------------

    async def aclose(self, *, delete: bool | None = None) -> None:
        """Stop following the room, let pending writes land, then delete or keep the session.

        Called automatically at job shutdown. Idempotent.

        Args:
            delete: Delete the call session (True) or leave it to the store's
                TTL (False); default: the adapter's ``delete_on_shutdown``. A
                session named with ``session_id=`` is never deleted here.
        """
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        self._tracked.clear()
        # Views still being built and call-session writes in flight get drain_timeout.
        waiting = [t for t in (*self._binding.values(), self._writer) if t is not None]
        if waiting:
            await asyncio.wait(
                [t for t in waiting if not t.done()] or waiting,
                timeout=self._adapter._drain_timeout,
            )
        tasks = [*self._binding.values(), *self._retries, self._writer, self._notifier]
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._pending.clear()
        self._dirty.clear()
        self._idle.set()
        self._write_settled.set()
        self._adapter._forget(self)
        should_delete = self._adapter._delete_on_shutdown if delete is None else delete
        if should_delete and self._space is not self._adapter._sessions.call_sessions:
            logger.warning(
                "metadata adapter: kept session %s: only a call session is deleted at "
                "shutdown, and this one was named with session_id=",
                key_label(self._id),
            )
        elif should_delete:
            try:
                for where in self._agent_keys:
                    await self._space.delete(where)
                await self._space.delete(self._id)
            except StoreError as exc:
                logger.warning(
                    "metadata adapter: could not delete session %s: %s", key_label(self._id), exc
                )


async def _wait_until(check: Callable[[], bool], changed: asyncio.Event, timeout: float) -> bool:
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        changed.clear()
        if check():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(changed.wait(), remaining)
        except asyncio.TimeoutError:
            return check()


class MetadataAdapter:
    """Loads LiveKit job and participant metadata into a session and keeps it in sync.

    Args:
        sessions: The :class:`~livekit.plugins.metadata.session.SessionManager`.
        session_id: A callable ``(ctx) -> str`` naming the session of a job
            yourself. Default: none, and the call session lives in the store's
            call key space under the room sid LiveKit assigned
            (``ctx.job.room.sid``; the job id where there is none), which no
            client can choose. A named session lives in the named key space
            (the SignalWire API's); keeping callers apart in it is then your
            responsibility (never name it after the room name, an identity or
            anything else a client picks).
        schema: Optional pydantic model class every metadata document (job,
            participant, room) must satisfy; the parsed object (not the model)
            is stored. Attributes are not checked against it.
        on_invalid: ``"log"`` (default: log, count, keep the session unchanged)
            or ``"raise"`` (``load_job``/``attach``/``parse_request`` raise the
            :class:`~livekit.plugins.metadata.errors.MetadataError`).
        participant_kinds: Kinds of participant ``attach`` waits for; default
            standard, SIP and connector (never agents).
        max_bytes: Largest metadata document accepted, in UTF-8 bytes.
        max_attribute_bytes: Largest attribute map (LiveKit: 64 KiB).
        sync_room_metadata: Also merge room metadata and its changes.
        delete_on_shutdown: Delete the call session at job shutdown (default:
            leave it to the store's TTL, so tools or other workers can still read
            it). Never deletes a token session, nor a session named with
            ``session_id=`` (combining the two is an error).
        protected_keys: Keys participant metadata/attributes may never write
            (the client can change those when granted ``canUpdateOwnMetadata``).
        confirm_timeout: Default seconds :meth:`SessionHandle.publish` waits
            for its confirmation.
        drain_timeout: Seconds shutdown waits for queued updates to be applied.
        route_on: Whose metadata :meth:`SessionHandle.route_input` returns:
            ``"first"`` (default: the first tracked standard or SIP participant),
            ``"sip"`` (the SIP caller; ``attach`` then waits for a participant of
            kind SIP), or a callable given the tracked participants in join
            order that returns one of them (or None).
        track: ``"first"`` (default: the participant ``attach`` takes) or
            ``"all"`` (also every other caller of ``participant_kinds``, present
            or joining later; each keeps its own view). A caller who leaves is
            forgotten (its view released); with ``"first"`` its return is followed.
        flood_rate: Updates per second per participant above which the adapter
            logs, once per participant, that it is flooded (every update is still
            applied; ``on_change`` runs for the latest state only).
        settle: Seconds a participant must be quiet for its changes to count as
            settled: the first change after a quiet spell reaches ``on_change`` at
            once; changes within ``settle`` of each other fold into one call, made
            ``settle`` seconds after the last of them (at the latest ``8 * settle``
            after the first), so a flood costs a handful of re-routes. ``0`` calls
            ``on_change`` as soon as the previous call returns.

    Raises:
        ValueError: An option is out of range.
        TypeError: ``session_id`` is not callable or ``schema`` is not a model class.
    """

    def __init__(
        self,
        sessions: SessionManager,
        *,
        session_id: SessionIdFactory | None = None,
        schema: type[BaseModel] | None = None,
        on_invalid: OnInvalid = "log",
        participant_kinds: Iterable[int] = DEFAULT_PARTICIPANT_KINDS,
        max_bytes: int = DEFAULT_MAX_METADATA_BYTES,
        max_attribute_bytes: int = DEFAULT_MAX_ATTRIBUTES_BYTES,
        sync_room_metadata: bool = False,
        delete_on_shutdown: bool = False,
        protected_keys: Iterable[str] = (),
        confirm_timeout: float = 5.0,
        drain_timeout: float = 5.0,
        route_on: RouteOn = "first",
        track: Track = "first",
        flood_rate: float = 20.0,
        settle: float = 0.25,
    ) -> None:
        if on_invalid not in ("log", "raise"):
            raise ValueError("on_invalid must be 'log' or 'raise'")
        if not callable(route_on) and route_on not in ("first", "sip"):
            raise ValueError("route_on must be 'first', 'sip' or a callable")
        if track not in ("first", "all"):
            raise ValueError("track must be 'first' or 'all'")
        if session_id is not None and not callable(session_id):
            raise TypeError("session_id must be a callable (ctx) -> str or None")
        if session_id is not None and delete_on_shutdown:
            raise ValueError(
                "delete_on_shutdown deletes only the call session the job owns; a session "
                "named with session_id= is yours to delete"
            )
        if schema is not None:
            from pydantic import BaseModel as _BaseModel

            if not (isinstance(schema, type) and issubclass(schema, _BaseModel)):
                raise TypeError("schema must be a pydantic model class or None")
        for name, value in (("max_bytes", max_bytes), ("max_attribute_bytes", max_attribute_bytes)):
            if type(value) is not int or value < 2:
                raise ValueError(f"{name} must be an int >= 2")
        if isinstance(settle, bool) or not isinstance(settle, (int, float)) or not 0 <= settle < 60:
            raise ValueError("settle must be a number of seconds in [0, 60)")
        if isinstance(flood_rate, bool) or not isinstance(flood_rate, (int, float)):
            raise ValueError("flood_rate must be a number of updates per second > 0")
        if not 0 < flood_rate < float("inf"):
            raise ValueError("flood_rate must be a number of updates per second > 0")
        for name, number in (
            ("confirm_timeout", confirm_timeout),
            ("drain_timeout", drain_timeout),
        ):
            if not isinstance(number, (int, float)) or not number >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0")
        kinds = tuple(participant_kinds)
        if not kinds:
            raise ValueError("participant_kinds must name at least one kind")
        self._sessions = sessions
        self._session_id = session_id
        self._schema = schema
        self._raise = on_invalid == "raise"
        self._kinds = kinds
        self._max_bytes = max_bytes
        self._max_attribute_bytes = max_attribute_bytes
        self._sync_room_metadata = bool(sync_room_metadata)
        self._delete_on_shutdown = bool(delete_on_shutdown)
        self._protected = frozenset(protected_keys)
        self._confirm_timeout = float(confirm_timeout)
        self._drain_timeout = float(drain_timeout)
        self._route_on = route_on
        self._track_all = track == "all"
        self._flood_rate = float(flood_rate)
        self._settle = float(settle)
        self._handles: weakref.WeakKeyDictionary[JobContext, SessionHandle] = (
            weakref.WeakKeyDictionary()
        )
        self.stats = AdapterStats()
        """Counters over every session this adapter handled."""

    def __repr__(self) -> str:
        return (
            f"MetadataAdapter(on_invalid={'raise' if self._raise else 'log'!r}, "
            f"sync_room_metadata={self._sync_room_metadata}, "
            f"delete_on_shutdown={self._delete_on_shutdown}, stats={self.stats!r})"
        )

    @property
    def sessions(self) -> SessionManager:
        """The session manager sessions are written to."""
        return self._sessions

    def session_id_for(self, ctx: JobContext) -> str:
        """The call session's id of a job: ``session_id(ctx)``, else the room sid
        LiveKit assigned (the job id when the job names no room sid).

        Raises:
            ValueError: The id is empty.
            TypeError: The ``session_id`` callable returned something other than str.
        """
        if self._session_id is not None:
            sid = self._session_id(ctx)
            if not isinstance(sid, str):
                raise TypeError(f"session_id(ctx) must return str, not {type(sid).__name__}")
        else:
            sid = ctx.job.room.sid or ctx.job.id
        if not sid:
            raise ValueError(
                "session id is empty: the job has no room sid nor id; pass session_id="
            )
        return sid

    def _handle_for(self, ctx: JobContext) -> SessionHandle:
        handle = self._handles.get(ctx)
        if handle is not None and not handle.closed:
            return handle
        sessions = self._sessions
        space = sessions.call_sessions if self._session_id is None else sessions.named_sessions
        handle = SessionHandle(self, ctx, self.session_id_for(ctx), space)
        self._handles[ctx] = handle

        async def _close_metadata_session(reason: str) -> None:
            await handle.aclose()

        ctx.add_shutdown_callback(_close_metadata_session)
        return handle

    def _forget(self, handle: SessionHandle) -> None:
        ctx = handle._ctx
        if self._handles.get(ctx) is handle:
            del self._handles[ctx]

    async def load_job(self, ctx: JobContext) -> SessionHandle:
        """Merge the job's metadata and attributes into its session; never touches the room.

        Usable before connecting, in tests with ``fake_job_context`` and
        anywhere a ``JobContext`` exists. Calling it again for the same job
        returns the same handle without re-applying.

        Raises:
            MetadataError: With ``on_invalid="raise"``, when the job metadata or
                attributes are invalid (the valid part is still applied first
                when it comes first: metadata, then attributes).
        """
        handle = self._handle_for(ctx)
        if handle._job_loaded:
            return handle
        handle._job_loaded = True
        await handle._load_job(self._raise)
        return handle

    async def attach(
        self,
        ctx: JobContext,
        participant: rtc.Participant | None = None,
        *,
        wait_timeout: float | None = None,
        on_change: OnChange | None = None,
    ) -> SessionHandle:
        """Load the job, connect if needed, take or wait for the caller, and follow it.

        Args:
            ctx: The job context of the entrypoint.
            participant: The caller; default: the first participant of one of
                ``participant_kinds`` (``ctx.wait_for_participant``).
            wait_timeout: Seconds to wait for that participant (default: no limit).
            on_change: ``async (identity) -> None``, run in a task of its own once
                a tracked participant's change (metadata, attributes, reconnect, a
                new caller with ``track="all"``, a token session read after a store
                outage) has been applied and has settled (``settle``); it reads the
                latest state, and changes made while it runs fold into one more
                call, so it never holds up the updates that follow. It is installed
                before any room event arrives, so no update after ``attach``
                returns is missed; re-route from here. The first view does not
                call it.

        Returns:
            The session handle; the caller's current metadata and attributes
            are already merged when it returns.

        Raises:
            MetadataError: With ``on_invalid="raise"`` only, for invalid job or
                participant metadata/attributes.
            asyncio.TimeoutError: No participant arrived within ``wait_timeout``.
        """
        handle = await self.load_job(ctx)
        await ctx.connect()
        if participant is None:
            kinds = [rtc.ParticipantKind.PARTICIPANT_KIND_SIP] if self._route_on == "sip" else []
            waiting = ctx.wait_for_participant(kind=kinds or list(self._kinds))  # type: ignore[arg-type]
            participant = await asyncio.wait_for(waiting, wait_timeout)
        if on_change is not None:
            handle._on_change = on_change
        handle._start(ctx.room)
        await handle.track(participant)
        if self._track_all:
            for other in list(ctx.room.remote_participants.values()):
                if other.identity not in handle._tracked and other.kind in self._kinds:
                    await handle.track(other)
        return handle

    def parse_request(self, req: JobRequest) -> dict[str, Any]:
        """The parsed metadata of a ``JobRequest`` (``req.job.metadata``), for ``on_request``.

        Returns ``{}`` for empty or (with ``on_invalid="log"``) invalid metadata.

        Raises:
            MetadataError: With ``on_invalid="raise"``, for invalid metadata.
        """
        raw = req.job.metadata
        try:
            obj = parse_metadata(raw, max_bytes=self._max_bytes)
            if self._schema is not None:
                validate_schema(obj, self._schema)
        except MetadataError as exc:
            self.stats.invalid += 1
            logger.warning(
                "metadata adapter: rejected job request metadata (job %s, %d bytes): %s",
                key_label(req.job.id),
                _raw_size(raw),
                exc,
            )
            if self._raise:
                raise
            return {}
        return obj
