"""Function tools that read and write the caller's session, through LiveKit's ``RunContext``.

Put the served caller's :class:`CallerSession` in the ``AgentSession``'s ``userdata``; every
tool reaches it, typed (README "Tools"). :class:`CallerSessionTools` is a ready ``Toolset``;
:func:`sign_tool_call` signs a call that leaves the process.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from livekit.agents import RunContext, function_tool
from livekit.agents.llm import Toolset

from .._util import key_label
from ..errors import MetadataError, ProtectedKey, ReservedKey, RoutingError, StoreError
from ..log import logger
from .views import RouteInput

if TYPE_CHECKING:
    from ..routing.router import MetadataRouter
    from ..sessions.manager import SessionManager
    from .handle import SessionHandle

__all__ = [
    "TOOL_TOKEN_HEADER",
    "CallerSession",
    "CallerSessionTools",
    "SignedToolCall",
    "caller_session",
    "sign_tool_call",
    "verify_tool_call",
]

TOOL_TOKEN_HEADER = "X-Tool-Token"  # noqa: S105 (a header name)
"""Header that carries the tool token of a signed call (never a URL query: logs keep those)."""


@dataclass(frozen=True)
class CallerSession:
    """The session of the caller an ``AgentSession`` serves: put it in ``userdata``."""

    handle: SessionHandle
    identity: str

    def metadata(self) -> dict[str, Any]:
        """The caller's own view (``SessionHandle.participant_metadata``)."""
        return self.handle.participant_metadata(self.identity)

    def attributes(self) -> dict[str, str]:
        return self.handle.participant_attributes(self.identity)

    @property
    def protected(self) -> frozenset[str]:
        """Keys the server decided for this caller (``SessionHandle.participant_protected``)."""
        return self.handle.participant_protected(self.identity)

    async def update(self, updates: Mapping[str, Any], *, remove: Iterable[str] = ()) -> None:
        """Write keys to the caller's view (see ``SessionHandle.update_participant``)."""
        await self.handle.update_participant(self.identity, updates, remove=remove)

    def route_input(self) -> RouteInput:
        return self.handle.participant_route_input(self.identity)


def caller_session(context: RunContext[Any]) -> CallerSession:
    """``userdata`` or its ``caller_session`` attribute; RuntimeError when neither is one."""
    try:
        data = context.userdata
    except ValueError:
        data = None
    if isinstance(data, CallerSession):
        return data
    nested = getattr(data, "caller_session", None)
    if isinstance(nested, CallerSession):
        return nested
    raise RuntimeError(
        "this AgentSession's userdata holds no CallerSession: start it with "
        "AgentSession(userdata=CallerSession(handle, identity)) (or a userdata object "
        "with a caller_session attribute)"
    )


_WHY: tuple[tuple[type[Exception], str | None], ...] = (
    (ProtectedKey, "the server decided this key; it cannot be changed"),
    (ReservedKey, "the key is reserved"),
    (MetadataError, None),  # its typed message, which never carries values
    (StoreError, "the session store is unavailable; try again later"),
    (LookupError, "the caller has left"),
)


def _why(exc: Exception) -> str:
    for kind, why in _WHY:
        if isinstance(exc, kind):
            return str(exc) if why is None else why
    return "the value is not valid"


class CallerSessionTools(Toolset):
    """LiveKit tools that let the LLM read and write named keys of the caller's session.

    Args:
        read: Keys the LLM may read (a key the server decided only when listed).
        write: Keys the LLM may write, never one the server decided; each write is
            checked like client metadata, and a refused one changes nothing.
        read_public: Also every key the server did not decide.
        transfer_key: Adds a ``transfer`` tool setting this key to one of
            ``destinations``; the rules (``router``, to name who answers) decide.
    """

    def __init__(
        self,
        *,
        read: Collection[str] = (),
        write: Collection[str] = (),
        read_public: bool = False,
        transfer_key: str | None = None,
        destinations: Collection[str] = (),
        router: MetadataRouter | None = None,
        id: str = "caller_session",
    ) -> None:
        self._readable = frozenset(read)
        self._writable = frozenset(write)
        self._read_public = bool(read_public)
        self._transfer_key = transfer_key
        self._destinations = tuple(destinations)
        self._router = router
        if transfer_key is not None and not self._destinations:
            raise ValueError("transfer_key needs at least one destination")
        tools: list[Any] = []
        if self._readable or read_public:
            tools.append(self._read_tool())
        if self._writable:
            tools.append(self._write_tool())
        if transfer_key is not None:
            tools.append(self._transfer_tool())
        super().__init__(id=id, tools=tools)

    async def read_key(self, caller: CallerSession, key: str) -> str:
        """What ``read_caller_data`` answers: the value as JSON, or why not."""
        protected = caller.protected
        if key not in self._readable and (not self._read_public or key in protected):
            return f"refused: {key!r} is not readable"
        view = caller.metadata()
        if key not in view:
            return f"{key!r} is not set"
        return orjson.dumps(view[key]).decode()

    async def write_key(self, caller: CallerSession, key: str, value: Any) -> str:
        """What ``update_caller_data`` answers: ``ok`` or why the write was refused."""
        if key not in self._writable:
            return f"refused: {key!r} is not writable"
        return await self._write(caller, key, value)

    async def _write(self, caller: CallerSession, key: str, value: Any) -> str:
        try:
            await caller.update({key: value})
        except (MetadataError, StoreError, LookupError, TypeError, ValueError) as exc:
            logger.info(
                "metadata tools: refused a write of %s for participant %s: %s",
                key_label(key),
                key_label(caller.identity),
                type(exc).__name__,
            )
            return f"refused: {_why(exc)}; nothing was changed"
        return f"ok: {key!r} updated"

    async def transfer(self, caller: CallerSession, destination: str) -> str:
        """What ``transfer`` answers: the new route, or why there is none."""
        key = self._transfer_key
        if key is None:
            return "refused: transfers are not enabled"
        if destination not in self._destinations:
            return f"refused: unknown destination; choose one of {list(self._destinations)}"
        answer = await self._write(caller, key, destination)
        if not answer.startswith("ok") or self._router is None:
            return answer
        routed = caller.route_input()
        try:
            route = self._router.route(routed.metadata, attributes=routed.attributes)
        except RoutingError:
            return "ok: saved, but no rule routes this call elsewhere"
        if route.rejected:
            return "ok: saved, but the rules route this call to no agent"
        return f"ok: the {route.agent} agent takes over"

    def _read_tool(self) -> Any:
        keys = sorted(self._readable)
        description = (
            "Read one field of the caller's account data (private to the agent: never "
            f"read it out unless the caller needs it). Readable keys: {keys}"
            + (" and the caller's public fields." if self._read_public else ".")
        )

        async def read_caller_data(context: RunContext[Any], key: str) -> str:
            """Read one key of the caller's session.

            Args:
                key: The key to read.
            """
            return await self.read_key(caller_session(context), key)

        return function_tool(read_caller_data, description=description)

    def _write_tool(self) -> Any:
        description = (
            "Change one field of the caller's account data. Writable keys: "
            f"{sorted(self._writable)}. The result says whether it was saved."
        )

        async def update_caller_data(context: RunContext[Any], key: str, value: str) -> str:
            """Write one key of the caller's session.

            Args:
                key: The key to write.
                value: The new value.
            """
            return await self.write_key(caller_session(context), key, value)

        return function_tool(update_caller_data, description=description)

    def _transfer_tool(self) -> Any:
        description = (
            "Transfer the caller to another department: one of "
            f"{list(self._destinations)}. The routing rules choose who answers."
        )

        async def transfer(context: RunContext[Any], destination: str) -> str:
            """Transfer the call.

            Args:
                destination: Where to transfer the caller.
            """
            return await self.transfer(caller_session(context), destination)

        return function_tool(transfer, description=description)


class SignedToolCall(NamedTuple):
    """POST ``body`` with ``headers`` to the webhook."""

    body: bytes
    headers: dict[str, str]


def sign_tool_call(
    sessions: SessionManager, function: str, call_id: str, arguments: Mapping[str, Any]
) -> SignedToolCall:
    """Sign a call of ``function`` for ``call_id`` (e.g. ``handle.id``): SignalWire's body,
    the (scoped, expiring) tool token in the :data:`TOOL_TOKEN_HEADER` header, never the URL."""
    token = sessions.create_tool_token(function, call_id)
    body = orjson.dumps({"function": function, "call_id": call_id, "argument": dict(arguments)})
    return SignedToolCall(body, {"Content-Type": "application/json", TOOL_TOKEN_HEADER: token})


def verify_tool_call(
    sessions: SessionManager,
    body: bytes | str,
    headers: Mapping[str, str],
    *,
    function: str,
) -> dict[str, Any] | None:
    """The receiving side: the call's body if its token is valid for ``function`` and the
    body's ``call_id``, else None (never raises on bad input). Needs the sender's secret."""
    token = next((v for k, v in headers.items() if k.lower() == TOOL_TOKEN_HEADER.lower()), None)
    if not isinstance(token, str) or not token:
        return None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    call_id, named = payload.get("call_id"), payload.get("function")
    if not isinstance(call_id, str) or not isinstance(named, str):
        return None
    same = hmac.compare_digest(named.encode(), function.encode())
    return payload if same and sessions.validate_tool_token(function, token, call_id) else None
