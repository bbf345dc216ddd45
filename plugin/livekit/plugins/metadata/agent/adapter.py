"""MetadataAdapter: LiveKit job and participant metadata, as each caller's view and a call session.

``handle = await adapter.attach(ctx)`` in the entrypoint; README "In an agent entrypoint".
Options are checked once (:mod:`.options`) and handed to one :class:`~.handle.SessionHandle`
per job; invalid input is logged without values and counted (:mod:`.options`).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any

from livekit import rtc

from .._util import key_label, raw_size
from ..errors import MetadataError
from ..log import logger
from .handle import SessionHandle
from .options import (
    DEFAULT_PARTICIPANT_KINDS,
    AdapterKeywords,
    AdapterOptions,
    AdapterStats,
    OnChange,
)
from .publish import PublishResult
from .views import RouteInput

if TYPE_CHECKING:
    from livekit.agents import JobContext, JobRequest
    from typing_extensions import Unpack

    from ..sessions.manager import SessionManager

__all__ = [
    "DEFAULT_PARTICIPANT_KINDS",
    "AdapterStats",
    "MetadataAdapter",
    "PublishResult",
    "RouteInput",
    "SessionHandle",
]


class MetadataAdapter:
    """Loads LiveKit job and participant metadata into a session and keeps it in sync.

    Args:
        sessions: The :class:`~..sessions.manager.SessionManager`.
        session_id: ``(ctx) -> str`` naming a job's session yourself, in the named key
            space (never after anything a client picks). Default: the call key space
            under the room sid LiveKit assigned (else the job id).
        schema: A pydantic model every metadata document must satisfy (not attributes).
        on_invalid: ``"log"`` (log, count, change nothing) or ``"raise"``.
        participant_kinds: Kinds ``attach`` waits for (default: all but agents).
        max_metadata_bytes, max_attributes_bytes: Size limits, in UTF-8 bytes.
        sync_room_metadata: Also merge room metadata and its changes.
        delete_on_shutdown: Delete the call session at job shutdown (default: leave it
            to the store's TTL). Never a token session, nor with ``session_id=``.
        protected_keys: Keys participant metadata/attributes may never write.
        confirm_timeout: Default seconds :meth:`SessionHandle.publish` waits.
        drain_timeout: Seconds shutdown waits for queued updates.
        route_on: Whose metadata :meth:`SessionHandle.route_input` returns: ``"first"``
            tracked standard or SIP participant, ``"sip"`` (``attach`` waits for one),
            or a callable picking one of the tracked participants (join order) or None.
        track: ``"first"`` (the participant ``attach`` takes) or ``"all"`` (every caller
            of ``participant_kinds``, each with its own view).
        flood_rate: Updates per second per participant above which a flood is logged, once.
        settle: Seconds of quiet before ``on_change`` runs for a participant (README
            "Floods, churn and faults"); ``0``: as soon as the previous call returns.

    Raises ValueError (an option out of range) or TypeError (``session_id`` not callable,
    ``schema`` not a model class).
    """

    def __init__(self, sessions: SessionManager, **options: Unpack[AdapterKeywords]) -> None:
        self.options = AdapterOptions(**options)
        self.sessions = sessions
        self.stats = AdapterStats()
        self._handles: weakref.WeakKeyDictionary[JobContext, SessionHandle] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        o = self.options
        return (
            f"MetadataAdapter(on_invalid={o.on_invalid!r}, sync_room_metadata="
            f"{o.sync_room_metadata}, delete_on_shutdown={o.delete_on_shutdown}, stats={self.stats!r})"
        )

    def session_id_for(self, ctx: JobContext) -> str:
        """A job's call session id: ``session_id(ctx)``, else the room sid (else the job id).

        Raises ValueError (empty id) or TypeError (``session_id`` returned no str).
        """
        factory = self.options.session_id
        sid = factory(ctx) if factory is not None else ctx.job.room.sid or ctx.job.id
        if not isinstance(sid, str):
            raise TypeError(f"session_id(ctx) must return str, not {type(sid).__name__}")
        if not sid:
            raise ValueError(
                "session id is empty: the job has no room sid nor id; pass session_id="
            )
        return sid

    async def load_job(self, ctx: JobContext) -> SessionHandle:
        """Merge the job's metadata and attributes into its session, without the room (works
        before connecting); the same handle for the same job. Raises MetadataError with
        ``on_invalid="raise"`` (metadata is applied before attributes are checked)."""
        handle = self._handles.get(ctx)
        if handle is None or handle.closed:
            handle = self._handles[ctx] = self._new_handle(ctx)
        await handle.load_job()
        return handle

    def _new_handle(self, ctx: JobContext) -> SessionHandle:
        sessions = self.sessions
        named = self.options.session_id is not None
        space = sessions.named_sessions if named else sessions.call_sessions

        def forget(closed: SessionHandle) -> None:  # the handle refers to ctx: drop it
            if self._handles.get(ctx) is closed:
                del self._handles[ctx]

        handle = SessionHandle(
            ctx, self.session_id_for(ctx), space, sessions, self.options, self.stats, forget
        )
        ctx.add_shutdown_callback(handle.aclose)
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
            participant: The caller (default: the first of ``participant_kinds`` to join).
            wait_timeout: Seconds to wait for that participant (default: no limit).
            on_change: ``async (identity) -> None``, run in its own task after a tracked
                participant's change has settled (not for the first view); installed
                before any room event, so nothing is missed. Re-route from here.

        Raises MetadataError (``on_invalid="raise"``: invalid job or participant input) or
        asyncio.TimeoutError (no participant within ``wait_timeout``).
        """
        handle = await self.load_job(ctx)
        await ctx.connect()
        options = self.options
        if participant is None:
            sip = options.route_on == "sip"
            kinds = [rtc.ParticipantKind.PARTICIPANT_KIND_SIP] if sip else list(options.kinds)
            waiting = ctx.wait_for_participant(kind=kinds)  # type: ignore[arg-type]
            participant = await asyncio.wait_for(waiting, wait_timeout)
        handle.follow(ctx.room, on_change=on_change)
        await handle.track(participant)
        if options.track_all:
            for other in list(ctx.room.remote_participants.values()):
                if other.identity not in handle.tracked and other.kind in options.kinds:
                    await handle.track(other)
        return handle

    def parse_request(self, req: JobRequest) -> dict[str, Any]:
        """The parsed ``req.job.metadata``, for ``on_request``; ``{}`` if empty or invalid.

        Raises MetadataError for invalid metadata with ``on_invalid="raise"``.
        """
        raw = req.job.metadata
        try:
            return self.options.parse(raw)
        except MetadataError as exc:
            self.stats.invalid += 1
            logger.warning(
                "metadata adapter: rejected job request metadata (job %s, %d bytes): %s",
                key_label(req.job.id),
                raw_size(raw),
                exc,
            )
            if self.options.raise_invalid:
                raise
            return {}
