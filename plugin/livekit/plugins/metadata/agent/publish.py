"""Write-back: chosen call-session keys published as participant attributes or metadata.

The agent's own participant is written through the SDK setters, confirmed by reading
the value back; another participant through the server API (``UpdateParticipant``),
whose answer confirms it. See :meth:`~.handle.SessionHandle.publish`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
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

__all__ = ["PublishResult", "Publisher", "publish_keys"]


@dataclass(frozen=True)
class PublishResult:
    """Outcome of :meth:`SessionHandle.publish`; ``bool(result)`` is ``confirmed``.

    ``confirmed``: read back (local) or returned by the server (remote) in time;
    ``target``: ``"attributes"`` or ``"metadata"``; ``identity``: who was written to;
    ``keys``: the keys published (missing ones cleared); ``size``: bytes sent.
    """

    confirmed: bool
    target: PublishAs
    identity: str
    keys: tuple[str, ...]
    size: int

    def __bool__(self) -> bool:
        return self.confirmed


def publish_keys(keys: Iterable[str], as_: str) -> list[str]:
    """The keys to publish, checked (``ValueError``/``TypeError`` otherwise)."""
    if as_ not in ("attributes", "metadata"):
        raise ValueError("as_ must be 'attributes' or 'metadata'")
    key_list = [keys] if isinstance(keys, str) else list(dict.fromkeys(keys))
    if not key_list:
        raise ValueError("keys must name at least one session key")
    for key in key_list:
        if not isinstance(key, str):
            raise TypeError(f"keys must be str, not {type(key).__name__}")
    return key_list


def _attribute_value(value: Any) -> str:
    """A session value as a LiveKit attribute: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode("utf-8")


@dataclass(frozen=True)
class Publisher:
    """Publishes session keys of one job (limits from the adapter's options)."""

    ctx: JobContext
    max_bytes: int
    max_attributes_bytes: int

    async def publish(
        self,
        session: Mapping[str, Any],
        keys: list[str],
        as_: PublishAs,
        participant: str | None,
        timeout: float,
        api: LiveKitAPI | None,
    ) -> PublishResult:
        if participant is None:
            return await self._local(session, keys, as_, timeout)
        return await self._remote(session, keys, as_, participant, api)

    def _attribute_update(
        self, session: Mapping[str, Any], keys: list[str], current: Mapping[str, str]
    ) -> dict[str, str]:
        update = {k: _attribute_value(session[k]) if k in session else "" for k in keys}
        limit = self.max_attributes_bytes
        validate_attributes(update, max_bytes=limit)
        attributes_size(apply_attributes(current, update), limit)
        return update

    def _metadata_text(self, session: Mapping[str, Any], keys: list[str], current: str) -> str:
        try:
            base = parse_metadata(current, max_bytes=max(self.max_bytes, 1 << 20))
        except MetadataError:
            base = {}
        for key in keys:
            if key in session:
                base[key] = session[key]
            else:
                base.pop(key, None)
        return serialize_metadata(base, max_bytes=self.max_bytes)

    async def _local(
        self, session: Mapping[str, Any], keys: list[str], as_: PublishAs, timeout: float
    ) -> PublishResult:
        room = self.ctx.room
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
        return _result(ok, as_, identity, keys, size)

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
        room_name = ctx.job.room.name or ctx.room.name
        known = ctx.room.remote_participants.get(identity)
        if as_ == "attributes":
            update = self._attribute_update(
                session, keys, dict(known.attributes) if known is not None else {}
            )
            size = attributes_size(update)
            request = UpdateParticipantRequest(room=room_name, identity=identity, attributes=update)
        else:
            text = self._metadata_text(session, keys, known.metadata if known is not None else "")
            size = len(text.encode("utf-8"))
            request = UpdateParticipantRequest(room=room_name, identity=identity, metadata=text)
        client = api if api is not None else ctx.api
        info = await client.room.update_participant(request)
        if as_ == "attributes":
            ok = all(info.attributes.get(k, "") == v for k, v in update.items())
        else:
            ok = info.metadata == text
        return _result(ok, as_, identity, keys, size)


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
