"""Write-back: chosen call-session keys published as participant attributes or metadata
(:meth:`~.handle.SessionHandle.publish`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .._util import key_label, keys_for_log
from ..codec import (
    apply_attributes,
    attributes_size,
    parse_metadata,
    serialize_metadata,
    validate_attributes,
)
from ..errors import MetadataError
from ..log import logger
from .options import PublishAs

if TYPE_CHECKING:
    from livekit.agents import JobContext
    from livekit.api import LiveKitAPI
    from livekit.rtc.room import EventTypes

__all__ = ["PublishResult", "Publisher"]


@dataclass(frozen=True)
class PublishResult:
    """Outcome of :meth:`SessionHandle.publish`; ``bool(result)`` is ``confirmed`` (read back,
    or returned by the server, in time). ``keys``: those published (missing ones cleared);
    ``size``: bytes sent."""

    confirmed: bool
    target: PublishAs
    identity: str
    keys: tuple[str, ...]
    size: int

    def __bool__(self) -> bool:
        return self.confirmed


def _attribute_value(value: Any) -> str:
    """A session value as a LiveKit attribute: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else orjson.dumps(value).decode("utf-8")


def _shows(payload: dict[str, str] | str, participant: Any) -> bool:
    """True when the participant (SDK object or server's ParticipantInfo) shows ``payload``."""
    if isinstance(payload, str):
        return bool(participant.metadata == payload)
    return all(participant.attributes.get(k, "") == v for k, v in payload.items())


@dataclass(frozen=True)
class Publisher:
    """Publishes session keys of one job (limits from the adapter's options)."""

    ctx: JobContext
    max_bytes: int
    max_attributes_bytes: int

    async def publish(
        self,
        session: Callable[[], Awaitable[Mapping[str, Any]]],
        keys: Iterable[str],
        as_: PublishAs,
        participant: str | None,
        timeout: float,
        api: LiveKitAPI | None,
    ) -> PublishResult:
        """Check the keys (``ValueError``/``TypeError``), read the session, publish."""
        if as_ not in ("attributes", "metadata"):
            raise ValueError("as_ must be 'attributes' or 'metadata'")
        key_list = [keys] if isinstance(keys, str) else list(dict.fromkeys(keys))
        if not key_list:
            raise ValueError("keys must name at least one session key")
        for key in key_list:
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
        if participant is None:
            return await self._local(await session(), key_list, as_, timeout)
        return await self._remote(await session(), key_list, as_, participant, api)

    def _payload(
        self, session: Mapping[str, Any], keys: list[str], as_: PublishAs, current: Any
    ) -> tuple[dict[str, str] | str, int]:
        """The attribute update or metadata text to send, and its size in bytes."""
        attributes, metadata = (
            ({}, "") if current is None else (current.attributes, current.metadata)
        )
        if as_ == "attributes":
            update = {k: _attribute_value(session[k]) if k in session else "" for k in keys}
            limit = self.max_attributes_bytes
            validate_attributes(update, max_bytes=limit)
            attributes_size(apply_attributes(attributes, update), limit)
            return update, attributes_size(update)
        try:
            base = parse_metadata(metadata, max_bytes=max(self.max_bytes, 1 << 20))
        except MetadataError:
            base = {}
        for key in keys:
            if key in session:
                base[key] = session[key]
            else:
                base.pop(key, None)
        text = serialize_metadata(base, max_bytes=self.max_bytes)
        return text, len(text.encode("utf-8"))

    async def _local(
        self, session: Mapping[str, Any], keys: list[str], as_: PublishAs, timeout: float
    ) -> PublishResult:
        room = self.ctx.room
        local = room.local_participant
        payload, size = self._payload(session, keys, as_, local)
        changed = asyncio.Event()

        def on_change(*args: Any) -> None:
            # metadata: (participant, old, new); attributes: (changed, participant).
            who = args[0] if as_ == "metadata" else args[1]
            if getattr(who, "identity", None) == local.identity:
                changed.set()

        event: EventTypes = (
            "participant_metadata_changed"
            if as_ == "metadata"
            else "participant_attributes_changed"
        )
        room.on(event, on_change)
        try:
            if isinstance(payload, str):
                await local.set_metadata(payload)
            else:
                await local.set_attributes(payload)
            ok = await _wait_until(lambda: _shows(payload, local), changed, timeout)
        finally:
            room.off(event, on_change)
        return _result(ok, as_, local.identity, keys, size)

    async def _remote(
        self,
        session: Mapping[str, Any],
        keys: list[str],
        as_: PublishAs,
        identity: str,
        api: LiveKitAPI | None,
    ) -> PublishResult:
        from livekit.api import UpdateParticipantRequest

        ctx = self.ctx
        room = ctx.job.room.name or ctx.room.name
        payload, size = self._payload(
            session, keys, as_, ctx.room.remote_participants.get(identity)
        )
        if isinstance(payload, str):
            request = UpdateParticipantRequest(room=room, identity=identity, metadata=payload)
        else:
            request = UpdateParticipantRequest(room=room, identity=identity, attributes=payload)
        info = await (api if api is not None else ctx.api).room.update_participant(request)
        return _result(_shows(payload, info), as_, identity, keys, size)


def _result(ok: bool, as_: PublishAs, identity: str, keys: list[str], size: int) -> PublishResult:
    if not ok:
        logger.warning(
            "metadata adapter: published %s of %s not confirmed (keys=%s, %d bytes); "
            "check canUpdateOwnMetadata and the server's size limits",
            as_,
            key_label(identity),
            keys_for_log(keys),
            size,
        )
    return PublishResult(confirmed=ok, target=as_, identity=identity, keys=tuple(keys), size=size)


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
