"""``/openapi.json``, generated from the request and response models in ``models.py``.

Only the paths, statuses and prose live here; every schema comes from the
pydantic classes the handler validates with, so a field the server accepts is a
field the document lists.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from ..version import __version__
from .models import ErrorBody, Health, TokenRequest, TokenResponse
from .playground import ExplainResponse, RouteRequest, RouteResponse

__all__ = ["TOKEN_ERRORS", "openapi_document"]

TOKEN_ERRORS: dict[int, str] = {
    400: "Malformed JSON, fields, metadata, attributes or room_config.",
    401: "Missing or invalid credentials.",
    403: "Not allowed: agent, identity, room, room_config field, route, origin, or a "
    "rejoin_token that is invalid, too old or whose session is gone (rejoin_refused).",
    413: "Request body or metadata over the size limit.",
    415: "Content-Type is not application/json with a UTF-8 charset.",
    422: "Metadata violates the schema, the key allowlist or the reserved lk-metadata. "
    "namespace; an attribute key in LiveKit's namespaces (service_attribute_key) or naming "
    "a trusted or private key (protected_attribute_key); or no route matched.",
    429: "Rate limit exceeded for this principal or peer.",
    500: "Internal error (no details are disclosed).",
    503: "The session store is unavailable or full (store_full, with Retry-After), or the "
    "caller holds its share of the live sessions (store_share_full, with Retry-After).",
}
"""Every status ``POST /token`` can answer besides 201, with what it means."""

_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}}}
_MODELS: tuple[tuple[type[BaseModel], JsonSchemaMode], ...] = (
    (TokenRequest, "validation"),
    (TokenResponse, "serialization"),
    (ErrorBody, "serialization"),
    (Health, "serialization"),
    (RouteRequest, "validation"),
    (RouteResponse, "serialization"),
    (ExplainResponse, "serialization"),
)
_ROUTING_ERRORS: dict[int, str] = {
    400: "Malformed JSON, fields, metadata or attributes.",
    401: "A wrong or missing metrics bearer key (callers not on loopback).",
    403: "Not on loopback and no metrics_key is configured (loopback_only).",
    404: "Routing is off on this endpoint (rules: none).",
    413: "Request body or metadata over the size limit.",
    415: "Content-Type is not application/json with a UTF-8 charset.",
    429: "Rate limit exceeded (the same buckets as the token endpoint), or too many "
    "failed authentications.",
    500: "Internal error (no details are disclosed).",
    503: "The limits store is unavailable.",
}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _token_operation() -> dict[str, Any]:
    responses: dict[str, Any] = {
        "201": _json("TokenResponse", "The token and the LiveKit URL to connect to.")
    }
    for status, text in TOKEN_ERRORS.items():
        responses[str(status)] = _json("ErrorBody", text)
        if status in (429, 503):
            responses[str(status)]["headers"] = _RETRY_AFTER
    return {
        "operationId": "createToken",
        "summary": "Mint a participant token (LiveKit standard token endpoint).",
        "security": [{"bearer": []}, {}],
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/TokenRequest"}}
            },
        },
        "responses": responses,
    }


def _routing_operation(operation_id: str, summary: str, ok: str, no_route: bool) -> dict[str, Any]:
    """``POST /route`` and ``POST /explain`` (the routing playground's calls)."""
    responses: dict[str, Any] = {"200": _json(ok, "The routing decision.")}
    errors = dict(_ROUTING_ERRORS)
    if no_route:
        errors[422] = "No routing rule matches and the rules have no default (no_route)."
    for status, text in sorted(errors.items()):
        responses[str(status)] = _json("ErrorBody", text)
        if status == 429:
            responses[str(status)]["headers"] = _RETRY_AFTER
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/RouteRequest"}}}
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "security": [{"bearer": []}, {}],
            "requestBody": {"required": False, "content": body},
            "responses": responses,
        }
    }


def _get(operation_id: str, summary: str, ok: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "responses": {"200": ok, "401": _json("ErrorBody", "A bearer key is required.")},
        }
    }


def openapi_document(path: str = "/token") -> dict[str, Any]:
    """The OpenAPI 3.1 description of the token endpoint (at ``path``) and its companions."""
    _, schemas = models_json_schema(_MODELS, ref_template="#/components/schemas/{model}")
    text = {"content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "livekit-plugins-metadata token endpoint",
            "version": __version__,
            "description": (
                "Mints LiveKit access tokens carrying public participant metadata, a "
                "per-token session reference and the routed agent dispatch, in LiveKit's "
                "standard token-endpoint format."
            ),
        },
        "paths": {
            path: {
                "post": _token_operation(),
                "options": {
                    "operationId": "tokenPreflight",
                    "summary": "CORS preflight.",
                    "responses": {
                        "204": {"description": "Allowed (or no Origin given)."},
                        "403": _json("ErrorBody", "The origin is not allowed."),
                    },
                },
            },
            "/route": _routing_operation(
                "route",
                "The route the rules choose for some metadata and attributes (loopback "
                "callers, or the metrics key).",
                "RouteResponse",
                no_route=True,
            ),
            "/explain": _routing_operation(
                "explain",
                "Every rule's verdict and the route, as `lk-metadata route --explain` "
                "(loopback callers, or the metrics key).",
                "ExplainResponse",
                no_route=False,
            ),
            "/healthz": _get("health", "Liveness check.", _json("Health", "The server is up.")),
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "summary": "Readiness check: the session store and the limits store answer.",
                    "responses": {
                        "200": {
                            "description": "Ready.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "503": {
                            "description": "A store cannot be reached (store_unavailable).",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                    },
                }
            },
            "/metrics": _get(
                "metrics",
                "Prometheus metrics of this replica (text exposition format).",
                {"description": "Metrics.", **text},
            ),
            "/openapi.json": _get(
                "openapi",
                "This document.",
                {
                    "description": "The OpenAPI document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            ),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas["$defs"],
        },
    }
