"""The routing playground: a page at ``/playground`` and its JSON calls ``/route`` and ``/explain``.

The page (``static/``) works offline; it loads LiveKit's web SDK (``playground_sdk_url``)
only to join a room. ``/route`` and ``/explain`` take the ``/token`` rate buckets and
answer loopback callers (naming a loopback ``Host``) or the ``metrics_key``. Answers carry
rule names, agents, metadata *keys* and value types, never a metadata value.
"""

from __future__ import annotations

import functools
import hmac
import html
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..codec import parse_metadata, validate_attributes
from ..errors import MetadataError, MetadataTooLarge, NoRouteMatched, StoreError
from ..routing.formatting import format_explain, format_route, route_summary
from ..routing.route import Route
from ..routing.router import MetadataRouter
from .config import ServerConfig, is_loopback
from .guard import failed_authentication, refuse_if_blocked
from .limits import Bucket
from .messages import EndpointRequest, EndpointResponse
from .parsing import check_framing
from .refusals import store_unavailable, too_many
from .state import AppState, Refusal, digest, unauthorized

__all__ = [
    "PLAYGROUND_ENDPOINTS",
    "PLAYGROUND_POST",
    "ExplainResponse",
    "RouteRequest",
    "RouteResponse",
    "RouteSummary",
    "RuleVerdict",
    "handle_playground",
    "playground_enabled",
    "playground_routes",
]

STATIC = Path(__file__).with_name("static")
PLAYGROUND_POST = frozenset({"route", "explain"})
PLAYGROUND_ENDPOINTS = PLAYGROUND_POST | {"playground", "playground.js", "playground.css"}

_ASSETS = {
    "playground.js": ("playground.js", "text/javascript; charset=utf-8"),
    "playground.css": ("playground.css", "text/css; charset=utf-8"),
}
_STATIC_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}


class RouteRequest(BaseModel):
    """What to route: participant metadata and attributes, as a caller would send them."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    metadata: dict[str, Any] | str | None = None
    """The participant metadata: a JSON object, or the JSON string LiveKit carries."""
    attributes: dict[str, str] | None = None
    """Participant attributes for ``when_attributes`` (``sip.phoneNumber``...)."""


class RouteSummary(BaseModel):
    """The route the rules chose (job metadata *keys* only)."""

    agent: str | None
    agent_name: str | None
    rule: str = Field(description="The rule's name, rules[i], default or fallback.")
    rule_index: int | None
    rejected: bool
    default: bool
    deployment: str | None
    attributes: dict[str, str]
    job_metadata_keys: list[str]
    text: str = Field(description="The route as `lk-metadata route` prints it.")


class RouteResponse(BaseModel):
    """``POST /route``."""

    route: RouteSummary


class RuleVerdict(BaseModel):
    """One rule (or the default) and why it matched or not."""

    index: int | None
    name: str | None
    label: str
    target: str
    matched: bool
    selected: bool
    failed: str | None = Field(description="The first condition that failed (types, no values).")
    line: str = Field(description="This rule's line of `lk-metadata route --explain`.")


class ExplainResponse(BaseModel):
    """``POST /explain``: every rule's verdict and the route (None: no rule matched)."""

    route: RouteSummary | None
    trace: list[RuleVerdict]
    text: str = Field(description="The trace as `lk-metadata route --explain` prints it.")


def playground_enabled(config: ServerConfig) -> bool:
    return config.playground if config.playground is not None else is_loopback(config.host)


def playground_routes(config: ServerConfig) -> dict[str, str]:
    """Paths to add to the endpoint's routing table (the page only when enabled)."""
    routes = {"/route": "route", "/explain": "explain"}
    if playground_enabled(config):
        routes["/playground"] = "playground"
        routes.update({f"/playground/{name}": name for name in _ASSETS})
    return routes


async def handle_playground(
    endpoint: str, request: EndpointRequest, state: AppState
) -> EndpointResponse:
    """Answer one playground request (``endpoint``: one of :data:`PLAYGROUND_ENDPOINTS`)."""
    method = request.method
    if endpoint in PLAYGROUND_POST:
        if method != "POST":
            raise Refusal(405, "method_not_allowed", "use POST", {"Allow": "POST"})
        return await _json_call(endpoint, request, state)
    if method not in ("GET", "HEAD"):
        raise Refusal(405, "method_not_allowed", "use GET", {"Allow": "GET, HEAD"})
    config = state.config
    if endpoint == "playground":
        headers = {
            **_STATIC_HEADERS,
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": _csp(config),
            "X-Frame-Options": "DENY",
        }
        return EndpointResponse(
            200, headers, _page(config.path.lstrip("/"), config.playground_sdk_url)
        )
    name, content_type = _ASSETS[endpoint]
    return EndpointResponse(200, {**_STATIC_HEADERS, "Content-Type": content_type}, _asset(name))


async def _json_call(endpoint: str, request: EndpointRequest, state: AppState) -> EndpointResponse:
    check_framing(request, state.config)  # /token's: body size, JSON in UTF-8
    caller = await _caller(request, state)
    await _admit(caller, request, state)
    metadata, attributes = _parse(await request.read(), state)
    router = state.router
    if router is None:
        raise Refusal(404, "no_rules", "routing is off on this endpoint (rules: none)")
    if endpoint == "route":
        try:
            route = router.route(metadata, attributes=attributes)
        except NoRouteMatched:
            raise Refusal(422, "no_route", "no routing rule matches this metadata") from None
        return _ok({"route": _summary(route)})
    return _ok(_explain(router, metadata, attributes))


def _explain(
    router: MetadataRouter, metadata: dict[str, Any], attributes: dict[str, str]
) -> dict[str, Any]:
    trace = router.explain(metadata, attributes=attributes)
    text = format_explain(trace)
    lines = text.splitlines()
    verdicts = [
        {
            "index": t.index,
            "name": t.name,
            "label": t.label,
            "target": t.target,
            "matched": t.matched,
            "selected": t.selected,
            "failed": None if t.failed is None else str(t.failed),
            "line": lines[i] if i < len(lines) else "",
        }
        for i, t in enumerate(trace)
    ]
    route = None
    if any(t.selected for t in trace):
        route = _summary(router.route(metadata, attributes=attributes))
    return {"route": route, "trace": verdicts, "text": text}


def _summary(route: Route) -> dict[str, Any]:
    return {**route_summary(route), "text": format_route(route)}


def _ok(body: dict[str, Any]) -> EndpointResponse:
    return EndpointResponse(200, dict(_JSON_HEADERS), orjson.dumps(body))


async def _caller(request: EndpointRequest, state: AppState) -> str:
    """The rate-limit key of an allowed caller: loopback (no key needed) or the operator."""
    peer = request.client or "-"
    refuse_if_blocked(peer, state)
    header = request.headers.get("authorization")
    if header is None and is_loopback(peer) and _loopback_host(request.headers.get("host")):
        return "anonymous@" + peer
    expected = state.operator_digest
    if expected is None:
        raise Refusal(
            403,
            "loopback_only",
            "this endpoint answers loopback callers only (or set metrics_key)",
        )
    scheme, _, presented = (header or "").partition(" ")
    matches = hmac.compare_digest(digest(presented.strip()), expected)
    if scheme.lower() != "bearer" or not matches:
        await failed_authentication(peer, state)
        raise unauthorized("this endpoint needs the metrics bearer key")
    return "operator"


def _loopback_host(host: str | None) -> bool:
    """The ``Host`` header names a loopback host (a rebound DNS name does not)."""
    if not host:
        return True
    name = urlsplit("//" + host).hostname
    return name is not None and is_loopback(name)


async def _admit(caller: str, request: EndpointRequest, state: AppState) -> None:
    """One credit from the buckets a ``/token`` request of this caller takes from."""
    config = state.config
    limits = (
        ("principal:" + caller, config.rate_limit),
        ("peer:" + (request.client or "-"), config.peer_rate_limit),
    )
    buckets = [Bucket(key, limit.rate, limit.burst) for key, limit in limits if limit is not None]
    if not buckets:
        return
    try:
        answer = await state.limits.admit(buckets)
    except StoreError:
        raise store_unavailable() from None
    if answer.wait > 0.0:
        raise too_many("rate_limited", "too many requests", answer.wait)


def _parse(raw: bytes, state: AppState) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise Refusal(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Refusal(400, "invalid_request", "request body must be a JSON object")
    try:
        req = RouteRequest.model_validate(body)
    except ValidationError as exc:
        loc = exc.errors(include_input=False, include_url=False)[0]["loc"]
        field = str(loc[0]) if loc else "<root>"
        if field not in RouteRequest.model_fields:
            raise Refusal(400, "invalid_request", "unknown request fields") from None
        raise Refusal(400, "invalid_request", f"{field} has the wrong type") from None
    raw_md = req.metadata
    max_bytes = state.config.metadata.max_bytes
    try:
        text = orjson.dumps(raw_md).decode() if isinstance(raw_md, dict) else raw_md
        metadata = parse_metadata(text, max_bytes=max_bytes)
    except MetadataTooLarge as exc:
        raise Refusal(413, "metadata_too_large", exc.message) from None
    except MetadataError as exc:
        raise Refusal(400, "invalid_metadata", exc.message) from None
    except (TypeError, orjson.JSONEncodeError):
        raise Refusal(400, "invalid_metadata", "metadata is not a JSON object") from None
    try:
        attributes = validate_attributes(req.attributes, allow_reserved=True)
    except MetadataError as exc:
        raise Refusal(400, "invalid_attributes", exc.message) from None
    return metadata, attributes


@functools.cache
def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


@functools.lru_cache(maxsize=8)
def _page(token_path: str, sdk_url: str | None) -> bytes:
    page = _asset("playground.html").decode("utf-8")
    page = page.replace("{{token_path}}", html.escape(token_path, quote=True))
    page = page.replace("{{sdk_url}}", html.escape(sdk_url or "", quote=True))
    return page.encode("utf-8")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _csp(config: ServerConfig) -> str:
    """Scripts and styles from this endpoint (and the SDK's origin); LiveKit for joining."""
    sdk = _origin(config.playground_sdk_url or "")
    livekit = _origin(config.server_url)
    http = livekit.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    return (
        f"default-src 'none'; script-src 'self' {sdk}".rstrip()
        + "; style-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; "
        + f"connect-src 'self' {livekit} {http}; "
        + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
