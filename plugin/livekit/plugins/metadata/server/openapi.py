"""``/openapi.json``: paths, statuses and prose; every schema comes from the pydantic
classes the handler validates with (``models.py``), so the document cannot drift."""

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


_OBJECT = {"content": {"application/json": {"schema": {"type": "object"}}}}


def _post(
    operation_id: str,
    summary: str,
    body: str,
    ok: dict[str, Any],
    errors: dict[int, str],
    retry_after: tuple[int, ...] = (429,),
) -> dict[str, Any]:
    responses = dict(ok)
    for status, text in sorted(errors.items()):
        responses[str(status)] = _json("ErrorBody", text)
        if status in retry_after:
            responses[str(status)]["headers"] = _RETRY_AFTER
    return {
        "operationId": operation_id,
        "summary": summary,
        "security": [{"bearer": []}, {}],
        "requestBody": {"required": False, "content": _json(body, "")["content"]},
        "responses": responses,
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
    routed = {"200": _json("RouteResponse", "The routing decision.")}
    no_route = {422: "No routing rule matches and the rules have no default (no_route)."}
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
                "post": _post(
                    "createToken",
                    "Mint a participant token (LiveKit standard token endpoint).",
                    "TokenRequest",
                    {"201": _json("TokenResponse", "The token and the LiveKit URL to connect to.")},
                    TOKEN_ERRORS,
                    retry_after=(429, 503),
                ),
                "options": {
                    "operationId": "tokenPreflight",
                    "summary": "CORS preflight.",
                    "responses": {
                        "204": {"description": "Allowed (or no Origin given)."},
                        "403": _json("ErrorBody", "The origin is not allowed."),
                    },
                },
            },
            "/route": {
                "post": _post(
                    "route",
                    "The route the rules choose for some metadata and attributes (loopback "
                    "callers, or the metrics key).",
                    "RouteRequest",
                    routed,
                    {**_ROUTING_ERRORS, **no_route},
                )
            },
            "/explain": {
                "post": _post(
                    "explain",
                    "Every rule's verdict and the route, as `lk-metadata route --explain` "
                    "(loopback callers, or the metrics key).",
                    "RouteRequest",
                    {"200": _json("ExplainResponse", "The routing decision.")},
                    _ROUTING_ERRORS,
                )
            },
            "/healthz": _get("health", "Liveness check.", _json("Health", "The server is up.")),
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "summary": "Readiness check: the session store and the limits store answer.",
                    "responses": {
                        "200": {"description": "Ready.", **_OBJECT},
                        "503": {
                            "description": "A store cannot be reached (store_unavailable).",
                            **_OBJECT,
                        },
                    },
                }
            },
            "/metrics": _get(
                "metrics",
                "Prometheus metrics of this replica (text exposition format).",
                {
                    "description": "Metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
            ),
            "/openapi.json": _get(
                "openapi", "This document.", {"description": "The OpenAPI document.", **_OBJECT}
            ),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas["$defs"],
        },
    }
