"""The token request, step by step (:func:`handle_token`), on an :class:`EndpointRequest`."""

from __future__ import annotations

import hmac
import inspect
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from livekit import api
from pydantic import ValidationError

from .._util import key_label
from ..errors import (
    MetadataError,
    MetadataTooLarge,
    NoRouteMatched,
    ReservedKey,
    StoreError,
    StoreFull,
)
from ..routing.router import MetadataRouter, Route
from ..tokens.issuer import Dispatch
from ..tokens.session_token import SessionWriter
from . import admission, parsing
from .admission import ANONYMOUS
from .config import AuthorizeHook, Principal
from .guard import failed_authentication, refuse_if_blocked
from .limits import Bucket, RedisLimits, Reservation
from .messages import EndpointRequest, EndpointResponse
from .parsing import ParsedRequest
from .placement import (
    choose_identity,
    choose_room,
    refuse_protected_attributes,
    rejoin_target,
    video_grants,
)
from .refusals import HTTP_CODES, hook_refusal, safe_message, store_full, store_unavailable
from .state import AppState, Policy, Refusal, digest, unauthorized

__all__ = ["HTTP_CODES", "PolicyDecision", "handle_token"]

_TOKEN_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}


@dataclass
class PolicyDecision:
    """The policy step's decision (not a LiveKit grant): who joins which room, what is
    stored, what is public, and the join grant to narrow."""

    identity: str
    room: str
    public: dict[str, Any]
    """What the token may carry (and the store holds)."""
    private: dict[str, Any]
    """What only the token's session in the store holds."""
    protected: frozenset[str] = frozenset()
    """Public keys the server decided (trusted keys shown in the token)."""
    video: api.VideoGrants | None = None
    """The principal's narrowed join grant (None: LiveKit's default)."""

    @property
    def metadata(self) -> dict[str, Any]:
        """Everything, as the router and the agent see it."""
        return {**self.public, **self.private} if self.private else self.public


@dataclass
class _Choice:
    """The dispatch step's outcome; the session reference is added when minting."""

    dispatch: Dispatch | api.RoomAgentDispatch | None
    agent: str
    source: str


async def handle_token(request: EndpointRequest, state: AppState) -> EndpointResponse:
    """Framing → authorize → parse → rejoin → policy → dispatch choice → admission → mint
    and store → answer."""
    log = request.log
    parsing.check_framing(request, state.config)
    principal, buckets = await _authorize(request, state)
    log["principal"] = principal.id
    try:
        parsed = parsing.parse(await request.read(), state)
        rejoin = parsed.rejoin_token
        target = None if rejoin is None else await _rejoin(rejoin, parsed, principal, state)
        decision = _apply_policy(parsed, principal, state, target)
        log["room"] = decision.room
        choice = _choose_dispatch(parsed, decision, principal, state)
    except Refusal:  # a refused request counts against its rates too
        await admission.admit(state, buckets, None)
        raise
    log["agent"] = choice.agent or None
    owner = admission.session_owner(request, principal)
    share = state.config.session_share(principal)
    limits = state.limits
    if isinstance(limits, RedisLimits) and limits.writes_sessions_of(state.sessions.store):
        reservation = admission.make_reservation(state, secrets.token_urlsafe(16), (owner, share))
        token = await _mint_admitted(parsed, decision, choice, state, limits, buckets, reservation)
    else:
        slot = await admission.admit(state, buckets, secrets.token_urlsafe(16), (owner, share))
        try:
            token = await _mint_and_store(parsed, decision, choice, state)
        except BaseException:
            await admission.release_session(slot, state, owner)
            raise
    state.metrics.route(choice.agent, choice.source)
    return _answer(token, decision, state)


async def _authorize(request: EndpointRequest, state: AppState) -> tuple[Principal, list[Bucket]]:
    """The principal and the rate buckets its request takes from, or a 401/403/429."""
    peer = request.client or "-"
    refuse_if_blocked(peer, state)
    principal = request.principal  # set when the host app authenticated the caller
    try:
        if principal is None and state.authorize is not None:  # the hook, then bearer keys
            principal = await _call_hook(state.authorize, request)
            if principal is None and not state.keys and not state.anonymous:
                raise unauthorized("authentication required")
        if principal is not None:
            rate_key = principal.id
        else:
            principal, rate_key = _bearer(request, state)
    except Refusal as refusal:
        if refusal.status == 401:
            await failed_authentication(peer, state)  # over its limit: a 429
        raise
    config = state.config
    buckets = []
    limit = principal.rate_limit or config.rate_limit
    if limit is not None:
        buckets.append(Bucket("principal:" + rate_key, limit.rate, limit.burst))
    if config.peer_rate_limit is not None:
        peer_limit = config.peer_rate_limit
        buckets.append(Bucket("peer:" + peer, peer_limit.rate, peer_limit.burst))
    return principal, buckets


async def _mint_admitted(
    parsed: ParsedRequest,
    decision: PolicyDecision,
    choice: _Choice,
    state: AppState,
    limits: RedisLimits,
    buckets: list[Bucket],
    reservation: Reservation,
) -> str:
    """Mint, then admit the request and write its session in one script (one Redis node).

    Refused, the request writes nothing; minting that fails before the write still
    counts against the rates; a failure after the admission releases the reservation.
    """
    step = "mint"

    async def admit_and_write(session_id: str, record: dict[str, Any], ttl: int) -> None:
        nonlocal step
        step = "admit"
        write = state.sessions.token_sessions.prepare(session_id, record, ttl=ttl)
        answer = await limits.admit_write(buckets, reservation, write)
        admission.check_admission(answer, state, reserved=True)
        step = "admitted"

    try:
        return await _mint_and_store(parsed, decision, choice, state, admit_and_write)
    except BaseException:
        if step == "mint":  # a refused request counts against its rates
            await admission.admit(state, buckets, None)
        elif step == "admitted":
            await admission.release_session(reservation.session_id, state, reservation.owner)
        raise


def _bearer(request: EndpointRequest, state: AppState) -> tuple[Principal, str]:
    """The principal of the request's bearer key, or anonymous (when allowed)."""
    header = request.headers.get("authorization")
    if header is None:
        if state.anonymous:
            return ANONYMOUS, f"anonymous@{request.client or '-'}"
        raise unauthorized("a bearer key is required")
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise unauthorized("use 'Authorization: Bearer <key>'")
    presented_digest = digest(presented)
    found: Principal | None = None
    for stored, principal in state.keys:  # no early exit: every key is compared
        if hmac.compare_digest(presented_digest, stored) and found is None:
            found = principal
    if found is None:
        raise unauthorized("invalid bearer key", 'Bearer error="invalid_token"')
    return found, found.id


async def _call_hook(hook: AuthorizeHook, request: EndpointRequest) -> Principal | None:
    """The hook gets the framework's request (``native``); an HTTP error it raises
    (aiohttp's ``HTTPForbidden``, Starlette's ``HTTPException``...) becomes the JSON error."""
    try:
        result = hook(request.native if request.native is not None else request)
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:
        refusal = hook_refusal(exc)
        if refusal is None:
            raise
        raise refusal from None
    if result is not None and not isinstance(result, Principal):
        raise TypeError("authorize hook must return a Principal or None")
    return result


async def _rejoin(
    token: str, parsed: ParsedRequest, principal: Principal, state: AppState
) -> tuple[str, str]:
    """The room and identity of a ``rejoin_token``; see ``placement``."""
    room, identity = await rejoin_target(token, principal, state)
    if (parsed.room is not None and parsed.room != room) or (
        parsed.identity is not None and parsed.identity != identity
    ):
        raise Refusal(
            400,
            "rejoin_conflict",
            "a rejoin_token decides the room and identity; leave out room_name and "
            "participant_identity, or send the ones it holds",
        )
    return room, identity


def _apply_policy(
    parsed: ParsedRequest,
    principal: Principal,
    state: AppState,
    target: tuple[str, str] | None = None,
) -> PolicyDecision:
    """Key allowlist and schema, trusted keys on top, who joins which room, privacy.

    ``target`` is a rejoin's room and identity; otherwise ``placement`` chooses
    (server-chosen unless the principal lets the client choose).
    """
    client = parsed.metadata
    merged = {**client, **principal.trusted_metadata} if principal.trusted_metadata else client
    _check_metadata_policy(client, merged, state.policy)
    private = state.policy.private_keys | principal.private_keys()
    refuse_protected_attributes(parsed.attributes, private.union(principal.trusted_metadata))
    if target is not None:
        room, identity = target
    else:
        identity = choose_identity(parsed.identity, principal)
        room = choose_room(parsed.room, principal)
    video = video_grants(principal, room)
    if state.config.reference_mode:
        return PolicyDecision(identity, room, public={}, private=merged, video=video)
    protected = frozenset(principal.trusted_metadata).difference(private)
    public, hidden = merged, {}
    if private.intersection(merged):
        public = {k: v for k, v in merged.items() if k not in private}
        hidden = {k: merged[k] for k in private & merged.keys()}
    return PolicyDecision(identity, room, public, hidden, protected, video)


def _check_metadata_policy(
    client: Mapping[str, Any], merged: dict[str, Any], policy: Policy
) -> None:
    """The client's keys against the allowlist; the merged metadata against the schema."""
    if policy.allowed_keys is not None:
        extra = [k for k in client if k not in policy.allowed_keys]
        if extra:
            shown = ", ".join(key_label(k) for k in extra[:10])
            raise Refusal(422, "metadata_key_not_allowed", f"metadata keys not allowed: {shown}")
    if policy.schema is not None:
        try:
            policy.schema.model_validate(merged)
        except ValidationError as exc:
            fields = [
                ".".join(str(p) for p in err["loc"]) or "<root>"
                for err in exc.errors(include_input=False, include_url=False)
            ]
            shown = ", ".join(key_label(f) for f in fields[:10])
            raise Refusal(
                422,
                "schema_violation",
                f"metadata does not match {policy.schema.__name__}: {shown}",
            ) from None


def _choose_dispatch(
    parsed: ParsedRequest, decision: PolicyDecision, principal: Principal, state: AppState
) -> _Choice:
    """A client-chosen agent only from an allowlist; otherwise the router (on all the
    metadata, private keys included; its job metadata keeps public keys) or the default."""
    mine = principal.allowed_agents
    request = parsed.agent_request
    if request is not None and request.agent_name:
        agent = request.agent_name
        if agent not in (state.policy.allowed_agents if mine is None else mine):
            raise Refusal(403, "agent_not_allowed", "this agent may not be requested")
        return _Choice(_client_dispatch(request, decision.public), agent, "client")
    if state.router is not None:
        route = _route(state.router, decision.metadata)
        if not route.agent_name:
            return _Choice(None, route.agent or "", "router")
        if mine is not None and route.agent not in mine and route.agent_name not in mine:
            raise Refusal(403, "agent_not_allowed", "this caller may not use the routed agent")
        return _Choice(_dispatch_from_route(route, decision), route.agent or "", "router")
    default = state.config.default_agent
    if not default:
        return _Choice(None, "", "none")
    if mine is not None and default not in mine:
        raise Refusal(403, "agent_not_allowed", "this caller may not use this agent")
    return _Choice(Dispatch(agent_name=default, metadata=decision.public), default, "default")


def _route(router: MetadataRouter, metadata: Mapping[str, Any]) -> Route:
    try:
        route = router.route(metadata)
    except NoRouteMatched:
        raise Refusal(422, "no_route", "no routing rule matches this metadata") from None
    if route.rejected:
        raise Refusal(403, "route_rejected", "the routing rules refuse this request")
    return route


def _client_dispatch(
    request: api.RoomAgentDispatch, public: dict[str, Any]
) -> api.RoomAgentDispatch:
    """The client's own ``RoomAgentDispatch``, its job metadata replaced by the checked one."""
    rad = api.RoomAgentDispatch()
    rad.CopyFrom(request)
    rad.metadata = orjson.dumps(public).decode("utf-8")
    return rad


def _dispatch_from_route(route: Route, decision: PolicyDecision) -> Dispatch:
    """The rule's dispatch, private keys left out of its job metadata; job metadata equal
    to the public metadata is passed as that dict (``amint`` reuses its claim's text)."""
    job = route.metadata
    if decision.private and job:
        job = {k: v for k, v in job.items() if k not in decision.private}
    if _same_items(job, decision.public):
        job = decision.public
    return Dispatch(
        agent_name=route.agent_name,
        metadata=job,
        deployment=route.deployment or None,
        attributes=route.attributes or None,
    )


def _same_items(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same keys in the same order, each with the very same value object."""
    return len(a) == len(b) and all(
        ka == kb and va is vb for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
    )


def _room_config_extra(room_config: api.RoomConfiguration | None) -> api.RoomConfiguration | None:
    """The client's allowed room_config fields other than agents (None when there are none)."""
    if room_config is None or all(fd.name == "agents" for fd, _ in room_config.ListFields()):
        return None
    rc = api.RoomConfiguration()
    rc.CopyFrom(room_config)
    del rc.agents[:]
    return rc


async def _mint_and_store(
    parsed: ParsedRequest,
    decision: PolicyDecision,
    choice: _Choice,
    state: AppState,
    write_session: SessionWriter | None = None,
) -> str:
    """Mint (``amint``: a session per token, written before the token is handed out)."""
    t0 = time.perf_counter()
    try:
        public = state.issuer.metadata_claim(decision.public) if decision.public else None
        minted = await state.issuer.amint(
            decision.identity,
            decision.room,
            name=parsed.name,
            metadata=public,  # serialized once; a dispatch of the same metadata reuses it
            private_metadata=decision.private or None,
            protected_keys=decision.protected,
            attributes=parsed.attributes or None,
            dispatch=[] if choice.dispatch is None else choice.dispatch,
            can_update_own_metadata=state.config.allow_update_own_metadata,
            grants=decision.video,
            room_config=_room_config_extra(parsed.room_config),
            write_session=write_session,
        )
    except MetadataTooLarge as exc:
        raise Refusal(413, "metadata_too_large", exc.message) from None
    except ReservedKey as exc:
        raise Refusal(422, "reserved_key", exc.message) from None
    except (MetadataError, ValueError) as exc:
        raise Refusal(400, "invalid_request", safe_message(exc)) from None
    except StoreFull:
        state.metrics.refuse("store_full")
        raise store_full() from None
    except StoreError:
        raise store_unavailable() from None
    state.metrics.observe_mint(time.perf_counter() - t0)
    return minted.token


def _answer(token: str, decision: PolicyDecision, state: AppState) -> EndpointResponse:
    """LiveKit's two fields, and the room and identity the server put in the token."""
    body = {
        "server_url": state.config.server_url,
        "participant_token": token,
        "room_name": decision.room,
        "participant_identity": decision.identity,
    }
    return EndpointResponse(201, dict(_TOKEN_HEADERS), orjson.dumps(body))
