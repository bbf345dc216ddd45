"""The endpoint's refusals that more than one step raises: 429, 503 and an HTTP error's code."""

from __future__ import annotations

import math

from ..errors import MetadataError
from .state import Refusal, unauthorized

__all__ = [
    "HTTP_CODES",
    "hook_refusal",
    "safe_message",
    "share_full",
    "store_full",
    "store_unavailable",
    "too_many",
]

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


def too_many(code: str, message: str, wait: float) -> Refusal:
    retry = str(max(1, math.ceil(wait)))
    return Refusal(429, code, f"{message}; retry later", {"Retry-After": retry})


def _full(code: str, message: str) -> Refusal:
    return Refusal(503, code, message, {"Retry-After": "30"})


def share_full() -> Refusal:
    return _full(
        "store_share_full",
        "this caller holds as many live token sessions as its share allows; retry later",
    )


def store_full() -> Refusal:
    return _full("store_full", "the session store is full; retry later")


def store_unavailable() -> Refusal:
    return Refusal(503, "store_unavailable", "the session store is unavailable; retry later")


def safe_message(exc: Exception) -> str:
    if isinstance(exc, MetadataError):
        return exc.message
    # ValueErrors from our own validation name arguments and limits, never values.
    return str(exc).splitlines()[0][:200] if str(exc) else "invalid request"


def hook_refusal(exc: Exception) -> Refusal | None:
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
