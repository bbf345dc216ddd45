"""The token request, step by step, on the framework-free :class:`EndpointRequest`.

framing (size, UTF-8 JSON) → authorize (the host app's principal, bearer keys or
a user hook; rate limits per principal and peer, failed authentications per
peer) → parse → policy → dispatch choice → reserve a slot under
``max_sessions`` → mint and store → answer. See ``app.py`` for the whole story.
"""

from __future__ import annotations

import contextlib
import hmac
import inspect
import math
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format
from livekit import api
from pydantic import ValidationError

from .._util import key_label
from ..codec import (
    PLUGIN_ATTRIBUTE_PREFIX,
    SESSION_KEY,
    parse_metadata,
    refuse_reserved,
    validate_attributes,
)
from ..errors import (
    InvalidAttributes,
    MetadataError,
    MetadataTooLarge,
    NoRouteMatched,
    ReservedKey,
    SchemaViolation,
    StoreError,
    StoreFull,
)
from ..routing.router import MetadataRouter, Route
from ..tokens.issuer import Dispatch
from ..tokens.session_token import SessionWriter
from .config import AuthorizeHook, Principal, ServerConfig
from .guard import failed_authentication, refuse_if_blocked
from .limits import Admission, Bucket, RedisLimits, Reservation
from .messages import EndpointRequest, EndpointResponse
from .models import TokenRequest
from .placement import (
    choose_identity,
    choose_room,
    refuse_protected_attributes,
    refuse_service_attributes,
    rejoin_target,
    video_grants,
)
from .state import AppState, Policy, Refusal, digest, unauthorized

__all__ = ["HTTP_CODES", "handle_token"]

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}
"""The error code of a plain HTTP status (a refusal that is not the endpoint's own)."""

_STORE_FULL_RETRY_AFTER = 30
_SESSION_FIELDS = frozenset({"session", "session_id", "sessionid", SESSION_KEY.lower()})
_ROOM_CONFIG_FIELDS = frozenset(
    f.name for f in api.RoomConfiguration.DESCRIPTOR.fields if f.name != "agents"
)
_AGENT_FIELDS = frozenset({"deployment", "attributes", "restart_policy"})
_CAMEL_NAMES = {
    "".join(w.capitalize() if i else w for i, w in enumerate(n.split("_"))): n
    for n in TokenRequest.model_fields
}
_ANONYMOUS = Principal(id="anonymous")
_TOKEN_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}


# --------------------------------------------------------------------------- the token handler


@dataclass
class _Parsed:
    """A request that passed the request model and the metadata/attribute checks."""

    room: str | None
    identity: str | None
    name: str | None
    metadata: dict[str, Any]
    attributes: dict[str, str]
    room_config: api.RoomConfiguration | None
    agent_request: api.RoomAgentDispatch | None
    rejoin_token: str | None = None


@dataclass
class _Grant:
    """What the policy step decided: who joins which room, what is stored, what is public."""

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
    """Framing → authorize → parse → policy → dispatch choice → mint → store → answer."""
    log = request.log
    _check_framing(request, state.config)
    principal, buckets = await _authorize(request, state)
    log["principal"] = principal.id
    try:
        parsed = _parse(await request.read(), state)
        target = await _rejoin(parsed, principal, state)
        grant = _apply_policy(parsed, principal, state, target)
        log["room"] = grant.room
        choice = _choose_dispatch(parsed, grant, principal, state)
    except Refusal:
        await _admit(state, buckets, None)  # a refused request counts against its rates too
        raise
    log["agent"] = choice.agent or None
    owner = _session_owner(request, principal)
    share = state.config.session_share(principal)
    limits = state.limits
    if isinstance(limits, RedisLimits) and limits.writes_sessions_of(state.sessions.store):
        reservation = _reservation(state, secrets.token_urlsafe(16), (owner, share))
        token = await _mint_admitted(parsed, grant, choice, state, limits, buckets, reservation)
    else:
        slot = await _admit(state, buckets, secrets.token_urlsafe(16), (owner, share))
        try:
            token = await _mint_and_store(parsed, grant, choice, state)
        except BaseException:
            await _release_session(slot, state, owner)
            raise
    state.metrics.route(choice.agent, choice.source)
    return _answer(token, grant, state)


def _check_framing(request: EndpointRequest, config: ServerConfig) -> None:
    headers = request.headers
    length = _content_length(headers.get("content-length"))
    if length is not None and length > config.max_body_bytes:
        raise Refusal(
            413,
            "body_too_large",
            f"request body is over the limit of {config.max_body_bytes} bytes",
        )
    content_type, charset = _media_type(headers.get("content-type"))
    if content_type != "application/json":
        raise Refusal(
            415, "unsupported_media_type", "send the request as Content-Type: application/json"
        )
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise Refusal(
            415, "unsupported_media_type", "the request body must be UTF-8 (charset=utf-8 or none)"
        )


async def _authorize(request: EndpointRequest, state: AppState) -> tuple[Principal, list[Bucket]]:
    """The principal and the rate buckets its request takes from, or a 401/403/429."""
    peer = request.client or "-"
    refuse_if_blocked(peer, state)
    if request.principal is not None:  # the host app authenticated the caller
        principal, rate_key = request.principal, request.principal.id
    else:
        try:
            principal, rate_key = await _identify(request, state)
        except Refusal as refusal:
            if refusal.status == 401:
                await _failed_authentication(peer, state)
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


def _too_many(code: str, message: str, wait: float) -> Refusal:
    retry = str(max(1, math.ceil(wait)))
    return Refusal(429, code, f"{message}; retry later", {"Retry-After": retry})


def _session_owner(request: EndpointRequest, principal: Principal) -> str:
    """Whose share of the session cap a request uses: the principal; anonymous: the address."""
    if principal is _ANONYMOUS:
        return f"anonymous@{request.client or '-'}"
    return "principal:" + principal.id


def _reservation(state: AppState, slot: str, share: tuple[str, int]) -> Reservation:
    """One more live session under ``max_sessions`` and the owner's ``share``."""
    config = state.config
    return Reservation(slot, config.token_session_ttl(), config.max_sessions, share[0], share[1])


async def _admit(
    state: AppState,
    buckets: list[Bucket],
    slot: str | None,
    share: tuple[str, int] = ("", 0),
) -> str:
    """The request's one limits call: its rate buckets and (``slot``) one more live session.

    A 429 when a bucket is empty, a 503 ``store_full`` when the cap is reached, a
    503 ``store_share_full`` when the owner's ``share`` ``(owner, most live
    sessions)`` is used up (nothing evicted); otherwise the reserved slot (a random
    id of its own, live as long as a token session), to release if minting fails.
    """
    reservation = None if slot is None else _reservation(state, slot, share)
    if not buckets and reservation is None:
        return ""
    try:
        answer = await state.limits.admit(buckets, reservation)
    except StoreError:
        raise _store_unavailable() from None
    _check_admission(answer, state, reserved=slot is not None)
    return slot or ""


def _check_admission(answer: Admission, state: AppState, *, reserved: bool) -> None:
    """The refusal of a request the limits did not admit (429 or 503); else count it."""
    if answer.wait > 0.0:
        raise _too_many("rate_limited", "too many token requests", answer.wait)
    if answer.full:
        state.metrics.refuse("store_full")
        raise _store_full()
    if answer.owner_full:
        state.metrics.refuse("store_share_full")
        raise _share_full()
    if reserved:
        state.metrics.sessions_created += 1


async def _mint_admitted(
    parsed: _Parsed,
    grant: _Grant,
    choice: _Choice,
    state: AppState,
    limits: RedisLimits,
    buckets: list[Bucket],
    reservation: Reservation,
) -> str:
    """Mint, then admit the request and write its session in one script (one Redis node).

    Refused by its rates or the cap, the request writes nothing; minting that
    fails before the write still counts against the rates (as :func:`_admit`
    first would); a failure after the admission releases the reservation.
    """
    step = "mint"

    async def admit_and_write(session_id: str, record: dict[str, Any], ttl: int) -> None:
        nonlocal step
        step = "admit"
        write = state.sessions.token_sessions.prepare(session_id, record, ttl=ttl)
        answer = await limits.admit_write(buckets, reservation, write)
        _check_admission(answer, state, reserved=True)
        step = "admitted"

    try:
        return await _mint_and_store(parsed, grant, choice, state, admit_and_write)
    except BaseException:
        if step == "mint":
            await _admit(state, buckets, None)  # a refused request counts against its rates
        elif step == "admitted":
            await _release_session(reservation.session_id, state, reservation.owner)
        raise


async def _failed_authentication(peer: str, state: AppState) -> None:
    """Count a failed attempt; over the limit, the peer gets 429 until its bucket refills."""
    await failed_authentication(peer, state)


async def _identify(request: EndpointRequest, state: AppState) -> tuple[Principal, str]:
    """The principal and its rate-limit key: the hook's, a bearer key's, or anonymous."""
    if state.authorize is not None:
        principal = await _call_hook(state.authorize, request)
        if principal is not None:
            return principal, principal.id
        if not state.keys and not state.anonymous:
            raise unauthorized("authentication required")
    header = request.headers.get("authorization")
    if header is None:
        if state.anonymous:
            return _ANONYMOUS, f"anonymous@{request.client or '-'}"
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
        refusal = _hook_refusal(exc)
        if refusal is None:
            raise
        raise refusal from None
    if result is not None and not isinstance(result, Principal):
        raise TypeError("authorize hook must return a Principal or None")
    return result


def _parse(raw: bytes, state: AppState) -> _Parsed:
    """The body through :class:`TokenRequest`, then metadata, attributes and room_config."""
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise Refusal(
            400,
            "invalid_json",
            f"request body is not valid JSON (line {exc.lineno}, column {exc.colno})",
        ) from None
    if not isinstance(body, dict):
        raise Refusal(400, "invalid_request", "request body must be a JSON object")
    try:
        req = TokenRequest.model_validate(body)
    except ValidationError as exc:
        raise _request_refusal(exc) from None
    metadata = _client_metadata(req.participant_metadata, state, "participant_metadata")
    attributes = _client_attributes(req.participant_attributes, state)
    room_config, agent_request = _room_config(body, req, state)
    if agent_request is not None and agent_request.metadata:
        metadata.update(
            _client_metadata(agent_request.metadata, state, "room_config.agents[0].metadata")
        )
    return _Parsed(
        room=req.room_name or None,
        identity=req.participant_identity or None,
        name=req.participant_name or None,
        metadata=metadata,
        attributes=attributes,
        room_config=room_config,
        agent_request=agent_request,
        rejoin_token=req.rejoin_token or None,
    )


def _request_refusal(exc: ValidationError) -> Refusal:
    """The first validation error as a 400 naming the field (never its value)."""
    err = exc.errors(include_input=False, include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    head = _CAMEL_NAMES.get(loc[0], loc[0]) if loc else "<root>"
    if head == "room_config":
        where = ".".join(loc[1:]) or "room_config"
        return Refusal(
            400,
            "invalid_room_config",
            f"room_config is not a valid RoomConfiguration: bad value for {key_label(where)}",
        )
    if head == "participant_attributes":
        return Refusal(400, "invalid_attributes", "participant_attributes must map str to str")
    if err["type"] == "extra_forbidden":
        if head in TokenRequest.model_fields:
            return Refusal(400, "invalid_request", f"field {head!r} is given twice")
        if head.lower() in _SESSION_FIELDS or head.startswith(PLUGIN_ATTRIBUTE_PREFIX):
            return Refusal(
                403,
                "session_id_not_allowed",
                "the token session is chosen by the server; a request cannot name one",
            )
        return Refusal(400, "invalid_request", f"unknown request fields: {key_label(loc[0])}")
    if err["type"] == "string_too_long":
        limit = (err.get("ctx") or {}).get("max_length")
        return Refusal(400, "invalid_request", f"{head} is longer than {limit} characters")
    return Refusal(400, "invalid_request", f"{head} must be a string")


def _check_reserved(keys: Iterable[str], what: str) -> None:
    """codec's :func:`refuse_reserved` (no client key in the plugin's namespace), as a 422."""
    try:
        refuse_reserved(keys, what)
    except ReservedKey as exc:
        raise Refusal(422, "reserved_key", exc.message) from None


def _client_metadata(raw: str | None, state: AppState, what: str) -> dict[str, Any]:
    try:
        metadata = parse_metadata(raw, max_bytes=state.config.metadata.max_bytes)
    except MetadataTooLarge as exc:
        raise Refusal(413, "metadata_too_large", f"{what}: {exc.message}") from None
    except MetadataError as exc:
        raise Refusal(400, "invalid_metadata", f"{what}: {exc.message}") from None
    _check_reserved(metadata, what)
    return metadata


def _client_attributes(raw: Mapping[str, str] | None, state: AppState) -> dict[str, str]:
    try:
        attributes = validate_attributes(raw, allow_reserved=True)  # lk.: a 422 of its own
    except InvalidAttributes as exc:
        raise Refusal(400, "invalid_attributes", exc.message) from None
    _check_reserved(attributes, "participant_attributes")
    service = state.policy.service_attr_keys
    refuse_service_attributes(attributes, service)
    allowed = state.policy.allowed_attr_keys
    if allowed is not None:
        extra = [k for k in attributes if k not in allowed and k not in service]
        if extra:
            shown = ", ".join(key_label(k) for k in extra[:10])
            raise Refusal(422, "attribute_key_not_allowed", f"attribute keys not allowed: {shown}")
    return attributes


def _room_config(
    body: Mapping[str, Any], req: TokenRequest, state: AppState
) -> tuple[api.RoomConfiguration | None, api.RoomAgentDispatch | None]:
    """LiveKit's own parse of room_config, then the allowlist of client-settable fields."""
    if req.room_config is None:
        return None, None
    raw = body.get("room_config", body.get("roomConfig"))
    try:
        room_config = json_format.ParseDict(raw, api.RoomConfiguration())
    except Exception as exc:
        m = re.search(r'no field named "([^"]{1,64})"', str(exc))
        hint = f": unknown field {m.group(1)!r}" if m else ""
        raise Refusal(
            400, "invalid_room_config", f"room_config is not a valid RoomConfiguration{hint}"
        ) from None
    allowed = state.policy.allowed_room_config
    for fd, _ in room_config.ListFields():
        if fd.name != "agents" and fd.name not in allowed:
            raise Refusal(
                403, "room_config_not_allowed", f"room_config.{fd.name} may not be set by clients"
            )
    agents = list(room_config.agents)
    if len(agents) > 1:
        raise Refusal(403, "room_config_not_allowed", "at most one agent may be requested")
    if not agents:
        return room_config, None
    for fd, _ in agents[0].ListFields():
        if fd.name in _AGENT_FIELDS and f"agents.{fd.name}" not in allowed:
            raise Refusal(
                403,
                "room_config_not_allowed",
                f"room_config.agents[0].{fd.name} may not be set by clients",
            )
    try:
        validate_attributes(dict(agents[0].attributes))
    except InvalidAttributes as exc:
        raise Refusal(400, "invalid_attributes", exc.message) from None
    _check_reserved(agents[0].attributes, "room_config.agents[0].attributes")
    return room_config, agents[0]


async def _rejoin(parsed: _Parsed, principal: Principal, state: AppState) -> tuple[str, str] | None:
    """The room and identity of a ``rejoin_token`` (None without one); see ``placement``."""
    if parsed.rejoin_token is None:
        return None
    room, identity = await rejoin_target(parsed.rejoin_token, principal, state)
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
    parsed: _Parsed,
    principal: Principal,
    state: AppState,
    target: tuple[str, str] | None = None,
) -> _Grant:
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
        return _Grant(identity, room, public={}, private=merged, video=video)
    protected = frozenset(principal.trusted_metadata).difference(private)
    if not private.intersection(merged):
        return _Grant(identity, room, public=merged, private={}, protected=protected, video=video)
    public = {k: v for k, v in merged.items() if k not in private}
    return _Grant(
        identity,
        room,
        public=public,
        private={k: merged[k] for k in private & merged.keys()},
        protected=protected,
        video=video,
    )


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
    parsed: _Parsed, grant: _Grant, principal: Principal, state: AppState
) -> _Choice:
    """A client-chosen agent only from an allowlist; otherwise the router or the default.

    Routing sees all the metadata (private keys included: it runs here, on the
    server); the job metadata it yields keeps only public keys.
    """
    allowed_for_principal = principal.allowed_agents
    request = parsed.agent_request
    if request is not None and request.agent_name:
        agent = request.agent_name
        allowed = (
            allowed_for_principal
            if allowed_for_principal is not None
            else state.policy.allowed_agents
        )
        if agent not in allowed:
            raise Refusal(403, "agent_not_allowed", "this agent may not be requested")
        return _Choice(_client_dispatch(request, grant.public), agent, "client")
    if state.router is not None:
        route = _route(state.router, grant.metadata)
        if (
            route.agent_name
            and allowed_for_principal is not None
            and not (
                route.agent in allowed_for_principal or route.agent_name in allowed_for_principal
            )
        ):
            raise Refusal(403, "agent_not_allowed", "this caller may not use the routed agent")
        dispatch = _dispatch_from_route(route) if route.agent_name else None
        return _Choice(dispatch, route.agent or "", "router")
    default = state.config.default_agent
    if not default:
        return _Choice(None, "", "none")
    if allowed_for_principal is not None and default not in allowed_for_principal:
        raise Refusal(403, "agent_not_allowed", "this caller may not use this agent")
    return _Choice(Dispatch(agent_name=default, metadata=grant.public), default, "default")


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


def _dispatch_from_route(route: Route) -> Dispatch:
    """The rule's dispatch; ``amint`` leaves private keys out of its job metadata."""
    return Dispatch(
        agent_name=route.agent_name,
        metadata=route.metadata,
        deployment=route.deployment or None,
        attributes=route.attributes or None,
    )


def _room_config_extra(room_config: api.RoomConfiguration | None) -> api.RoomConfiguration | None:
    """The client's allowed room_config fields other than agents (None when there are none)."""
    if room_config is None or all(fd.name == "agents" for fd, _ in room_config.ListFields()):
        return None
    rc = api.RoomConfiguration()
    rc.CopyFrom(room_config)
    del rc.agents[:]
    return rc


async def _release_session(slot: str, state: AppState, owner: str = "") -> None:
    with contextlib.suppress(StoreError):  # else the reservation expires on its own
        await state.limits.release_session(slot, owner)


def _share_full() -> Refusal:
    return Refusal(
        503,
        "store_share_full",
        "this caller holds as many live token sessions as its share allows; retry later",
        {"Retry-After": str(_STORE_FULL_RETRY_AFTER)},
    )


def _store_full() -> Refusal:
    return Refusal(
        503,
        "store_full",
        "the session store is full; retry later",
        {"Retry-After": str(_STORE_FULL_RETRY_AFTER)},
    )


def _store_unavailable() -> Refusal:
    return Refusal(503, "store_unavailable", "the session store is unavailable; retry later")


async def _mint_and_store(
    parsed: _Parsed,
    grant: _Grant,
    choice: _Choice,
    state: AppState,
    write_session: SessionWriter | None = None,
) -> str:
    """Mint, and write the token's own session before the token is handed out.

    ``amint`` creates the session id (never the client), stores public and
    private metadata there with an owner record (through ``write_session`` when
    given), and puts the id into the participant attribute and every dispatch's
    job metadata.
    """
    t0 = time.perf_counter()
    try:
        public = state.issuer.metadata_claim(grant.public) if grant.public else None
        minted = await state.issuer.amint(
            grant.identity,
            grant.room,
            name=parsed.name,
            metadata=public,  # serialized once; a dispatch of the same metadata reuses it
            private_metadata=grant.private or None,
            protected_keys=grant.protected,
            attributes=parsed.attributes or None,
            dispatch=[] if choice.dispatch is None else choice.dispatch,
            can_update_own_metadata=state.config.allow_update_own_metadata,
            grants=grant.video,
            room_config=_room_config_extra(parsed.room_config),
            write_session=write_session,
        )
    except MetadataTooLarge as exc:
        raise Refusal(413, "metadata_too_large", exc.message) from None
    except ReservedKey as exc:
        raise Refusal(422, "reserved_key", exc.message) from None
    except SchemaViolation as exc:
        raise Refusal(422, "schema_violation", exc.message) from None
    except (MetadataError, ValueError) as exc:
        raise Refusal(400, "invalid_request", _safe_message(exc)) from None
    except StoreFull:
        state.metrics.refuse("store_full")
        raise _store_full() from None
    except StoreError:
        raise _store_unavailable() from None
    state.metrics.observe_mint(time.perf_counter() - t0)
    return minted.token


def _safe_message(exc: Exception) -> str:
    if isinstance(exc, MetadataError):
        return exc.message
    # ValueErrors from our own validation name arguments and limits, never values.
    return str(exc).splitlines()[0][:200] if str(exc) else "invalid request"


def _answer(token: str, grant: _Grant, state: AppState) -> EndpointResponse:
    """LiveKit's two fields, and the room and identity the server put in the token."""
    body = {
        "server_url": state.config.server_url,
        "participant_token": token,
        "room_name": grant.room,
        "participant_identity": grant.identity,
    }
    return EndpointResponse(201, dict(_TOKEN_HEADERS), orjson.dumps(body))


def _hook_refusal(exc: Exception) -> Refusal | None:
    """An HTTP 4xx exception of any framework (duck-typed: ``status``/``status_code``)."""
    status = getattr(exc, "status", None)
    if not isinstance(status, int):
        status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or not 400 <= status < 500:
        return None
    reason = getattr(exc, "reason", None) or getattr(exc, "detail", None)
    text = reason if isinstance(reason, str) and reason else None
    if status == 401:
        return unauthorized(text or "authentication required")
    if status == 403:
        return Refusal(403, "forbidden", text or "forbidden")
    return Refusal(status, HTTP_CODES.get(status, "error"), text or "request refused")


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _media_type(value: str | None) -> tuple[str, str | None]:
    """``Content-Type`` as (lower-case media type, charset or None); none: octet-stream."""
    if not value:
        return "application/octet-stream", None
    media, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, val = param.partition("=")
        if name.strip().lower() == "charset":
            charset = val.strip().strip('"')
    return media.strip().lower(), charset
