"""A simulated inbound phone call for ``lk-metadata sip call`` (whose help says what is not
simulated): :func:`plan_call` picks the dispatch LiveKit's SIP service would use, and
:func:`place_call` joins a fresh room as a participant of kind ``sip`` with that dispatch,
waits for the agent's ``route`` and hangs up."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from livekit import api, rtc

from ..errors import DispatchError, RoutingError
from ..routing.phone import normalize_number
from ..routing.router import MetadataRouter
from ..tokens.issuer import TokenIssuer
from .sip import CALLED, CALLER, desired_dispatch_rules

__all__ = [
    "CallPlan",
    "CallResult",
    "check_reachable",
    "match_dispatch_rule",
    "place_call",
    "plan_call",
]

_AGENT = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
_POLL = 0.05


@dataclass(frozen=True)
class CallPlan:
    """Who calls (``identity``, ``attributes``), the ``room``, and the ``dispatch`` LiveKit
    would create it with (``source``: where that came from, for people)."""

    room: str
    identity: str
    attributes: dict[str, str]
    dispatch: api.RoomAgentDispatch
    source: str


@dataclass
class CallResult:
    """The ``agent`` that joined a call, its ``route`` and ``route.rule`` attributes (``None``:
    none in time) and all its ``attributes``."""

    room: str
    agent: str | None = None
    route: str | None = None
    rule: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


def match_dispatch_rule(
    rules: Sequence[api.SIPDispatchRuleInfo],
    called: str | None,
    caller: str | None,
    *,
    trunk_id: str | None = None,
) -> api.SIPDispatchRuleInfo | None:
    """The dispatch rule LiveKit would pick for a call, or ``None``: of those whose trunks,
    ``numbers`` and ``inbound_numbers`` (E.164) are empty or include the call's, the most
    specific (called and caller, called, caller, catch-all)."""
    fits = [
        r
        for r in rules
        if (not r.trunk_ids or trunk_id in r.trunk_ids)
        and (not r.numbers or called in r.numbers)
        and (not r.inbound_numbers or caller in r.inbound_numbers)
    ]
    return max(fits, key=lambda r: 2 * bool(r.numbers) + bool(r.inbound_numbers), default=None)


def plan_call(
    router: MetadataRouter | None,
    *,
    to: str,
    caller: str | None = None,
    headers: Mapping[str, str] | None = None,
    trunk_id: str | None = None,
    agent: str | None = None,
    room_prefix: str = "call-",
) -> CallPlan:
    """The room, SIP participant and dispatch of a simulated call to ``to`` from ``caller``
    (``None``: a hidden number); ``headers`` become ``sip.h.<name>``.

    The dispatch is an explicit ``agent``'s, else that of the dispatch rule ``sip sync``
    creates for these numbers, else the rules' route (what a catch-all dispatch rule of
    yours would send). RoutingError: neither ``router`` nor ``agent``, or a reject route.
    """
    attributes = {CALLED: to, "sip.callID": "SCL_" + secrets.token_urlsafe(9)}
    attributes["sip.callStatus"] = "active"
    if caller:
        attributes[CALLER] = caller
    if trunk_id:
        attributes["sip.trunkID"] = trunk_id
    for name, value in (headers or {}).items():
        attributes[name if name.startswith("sip.h.") else f"sip.h.{name.lower()}"] = value
    # LiveKit names the room <prefix>_<caller>_<random>; the caller's number is left out
    # here, as room names end up in the worker's logs.
    room = f"{room_prefix}{'anonymous' if not caller else 'caller'}_{secrets.token_urlsafe(6)}"
    identity = f"sip_{caller}" if caller else f"sip_anonymous_{secrets.token_hex(3)}"
    if agent:
        dispatch = api.RoomAgentDispatch(agent_name=agent)
        return CallPlan(room, identity, attributes, dispatch, "--agent")
    if router is None:
        raise RoutingError("a simulated call needs --rules FILE or --agent NAME")
    region = router.rule_set.phone_region
    wanted, _ = desired_dispatch_rules(
        router, trunk_ids=[trunk_id] if trunk_id else (), room_prefix=room_prefix
    )
    rule = match_dispatch_rule(
        wanted,
        normalize_number(to, region),
        normalize_number(caller, region) if caller else None,
        trunk_id=trunk_id,
    )
    if rule is not None:
        source = f"dispatch rule {rule.name}, as `sip sync` creates it"
        return CallPlan(room, identity, attributes, rule.room_config.agents[0], source)
    route = router.route({}, attributes=attributes)
    if route.rejected:
        raise RoutingError(
            f"the routing rules reject this call ({route.label}): no agent would answer"
        )
    dispatch = api.RoomAgentDispatch(
        agent_name=route.agent_name,
        deployment=route.deployment or "",
        attributes=dict(route.attributes),
        metadata=route.metadata_json(),
    )
    source = (
        f"the rules' route, {route.label}: no dispatch rule from `sip sync` covers these "
        "numbers; for real calls a catch-all dispatch rule of yours must"
    )
    return CallPlan(room, identity, attributes, dispatch, source)


async def _wait_for(check: Callable[[], Any], deadline: float) -> Any:
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(_POLL)


def _agent(room: rtc.Room) -> rtc.RemoteParticipant | None:
    return next((p for p in room.remote_participants.values() if p.kind == _AGENT), None)


async def place_call(
    url: str,
    api_key: str,
    api_secret: str,
    plan: CallPlan,
    *,
    wait: float = 30.0,
    on_step: Callable[[str], None] | None = None,
) -> CallResult:
    """Join ``plan.room`` as the SIP caller, wait ``wait`` seconds for the agent, then for its
    route, and hang up (delete the room); ``on_step`` gets one line per step. DispatchError
    when the server could not be reached or refused the join."""
    say = on_step or (lambda line: None)
    token = TokenIssuer(api_key, api_secret).mint(
        plan.identity,
        plan.room,
        name=f"Phone {plan.attributes.get(CALLER, 'anonymous')}",
        attributes=plan.attributes,
        dispatch=[plan.dispatch],
        kind="sip",
    )
    await check_reachable(url)
    room = rtc.Room()
    try:
        await room.connect(url, token)
    except rtc.ConnectError as exc:
        if "401" in str(exc):  # matched, never echoed: the SDK's text holds the token
            raise DispatchError(
                "LiveKit refused the caller's token (HTTP 401): set LIVEKIT_API_KEY and "
                "LIVEKIT_API_SECRET to a key pair from the server's `keys:` "
                "(`livekit-server --dev`: devkey / secret)"
            ) from None
        raise DispatchError(
            "could not join LiveKit as the caller: is `livekit-server --dev` running, and "
            "do LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET point at it?"
        ) from None
    try:
        say(f"joined room {plan.room} as {plan.identity} (participant kind sip)")
        agent = await _wait_for(lambda: _agent(room), time.monotonic() + wait)
        if agent is None:
            return CallResult(plan.room)
        say(f"agent joined: {agent.identity}")
        await _wait_for(lambda: agent.attributes.get("route"), time.monotonic() + wait)
        attrs = dict(agent.attributes)
        route = attrs.get("route") or None
        return CallResult(plan.room, agent.identity, route, attrs.get("route.rule") or None, attrs)
    finally:
        await room.disconnect()
        await _hang_up(url, api_key, api_secret, plan.room)


async def check_reachable(url: str, *, timeout: float = 3.0) -> None:
    """DispatchError (host, port and the fix) at once when nothing answers at the URL,
    where the SDK would retry for seconds, logging each attempt."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme in ("wss", "https") else "http"
    where = parts.netloc.rsplit("@", 1)[-1]
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(f"{scheme}://{where}/") as resp,
        ):
            await resp.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        raise DispatchError(
            f"cannot reach LiveKit at {where}: start `livekit-server --dev`, or set "
            "LIVEKIT_URL to your server's URL"
        ) from None


async def _hang_up(url: str, api_key: str, api_secret: str, room: str) -> None:
    """End the call as the SIP service does when the caller hangs up: delete the room."""
    with contextlib.suppress(Exception):  # best effort: the room empties out on its own
        async with api.LiveKitAPI(url, api_key, api_secret) as lkapi:
            await asyncio.wait_for(
                lkapi.room.delete_room(api.DeleteRoomRequest(room=room)), timeout=5
            )
