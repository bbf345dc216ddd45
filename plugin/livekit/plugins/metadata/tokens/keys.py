"""Where the LiveKit API key and secret come from, and the ``livekit-server --dev`` fallback.

One of key and secret without the other is an error, never a fallback to the dev keys.
"""

from __future__ import annotations

import os
from typing import NamedTuple
from urllib.parse import urlsplit

from ..errors import ConfigError

__all__ = [
    "DEV_API_KEY",
    "DEV_API_SECRET",
    "DEV_KEYS_WARNING",
    "MIN_SECRET_BYTES",
    "ApiKeys",
    "check_livekit_url",
    "key_warning",
    "resolve_keys",
    "short_secret_warning",
]

DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"  # noqa: S105 - the public, documented dev-server secret

DEV_KEYS_WARNING = (
    "WARNING: LIVEKIT_API_KEY / LIVEKIT_API_SECRET are not set. Using the LiveKit "
    "dev-server keys (devkey / secret): tokens are only accepted by `livekit-server --dev`. "
    "Do not use this in production."
)

MIN_SECRET_BYTES = 32
"""The shortest HS256 secret PyJWT does not warn about (``InsecureKeyLengthWarning``)."""


class ApiKeys(NamedTuple):
    """A resolved key pair; ``dev`` is true for the ``livekit-server --dev`` fallback."""

    key: str
    secret: str
    dev: bool


def resolve_keys(api_key: str | None = None, api_secret: str | None = None) -> ApiKeys:
    """The key pair from the arguments, else the environment, else the dev keys; else ConfigError."""
    key = api_key or os.environ.get("LIVEKIT_API_KEY") or ""
    secret = api_secret or os.environ.get("LIVEKIT_API_SECRET") or ""
    if not key and not secret:
        return ApiKeys(DEV_API_KEY, DEV_API_SECRET, True)
    if not key:
        raise ConfigError("LiveKit API key is not set: set LIVEKIT_API_KEY or pass --api-key")
    if not secret:
        raise ConfigError(
            "LiveKit API secret is not set: set LIVEKIT_API_SECRET or pass --api-secret"
        )
    return ApiKeys(key, secret, False)


def short_secret_warning(secret: str) -> str | None:
    """One line saying the secret is too short for HS256, or ``None`` (never the secret)."""
    size = len(secret.encode("utf-8", "surrogatepass"))
    if size >= MIN_SECRET_BYTES:
        return None
    return (
        f"warning: the API secret is {size} bytes; HS256 needs at least {MIN_SECRET_BYTES} "
        "(PyJWT's InsecureKeyLengthWarning)"
    )


def key_warning(keys: ApiKeys) -> str | None:
    """The one line every front door says about these keys (the dev pair set on purpose: none)."""
    if keys.dev:
        return DEV_KEYS_WARNING
    if (keys.key, keys.secret) == (DEV_API_KEY, DEV_API_SECRET):
        return None
    return short_secret_warning(keys.secret)


def check_livekit_url(url: str, *, setting: str = "LIVEKIT_URL") -> str:
    """``url`` (stripped) if it is ws/wss/http/https with a host, else a ConfigError naming
    ``setting`` (never the URL: it may hold credentials)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        problem = "it does not parse as a URL"
    else:
        if not parts.scheme or "://" not in url:
            problem = "it has no scheme"
        elif parts.scheme.lower() not in ("ws", "wss", "http", "https"):
            problem = f"its scheme is {parts.scheme!r}"
        elif not host:
            problem = "it has no host"
        else:
            return url.strip()
    raise ConfigError(
        f"{setting} is not a LiveKit URL ({problem}): use ws://, wss://, http:// or https:// "
        "and a host, e.g. ws://127.0.0.1:7880 for `livekit-server --dev`"
    )
