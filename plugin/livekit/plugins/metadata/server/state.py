"""What ``create_app`` builds once (:class:`AppState`), and :class:`Refusal`, how any step
refuses a request with a status and a stable error code."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

from ..routing.router import MetadataRouter
from ..sessions.manager import SessionManager
from ..tokens.issuer import TokenIssuer
from .config import AuthorizeHook, Principal, ServerConfig
from .limits import Limits
from .metrics import Metrics

__all__ = ["STATE", "AppState", "Policy", "Refusal", "digest", "unauthorized"]


class Refusal(Exception):
    """A request refused with ``status`` and the JSON body ``{"error": {"code", "message"}}``."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def unauthorized(message: str, challenge: str = "Bearer") -> Refusal:
    return Refusal(401, "unauthorized", message, {"WWW-Authenticate": challenge})


@dataclass(frozen=True)
class Policy:
    """The config's client-facing rules, compiled once."""

    schema: type[BaseModel] | None
    allowed_keys: frozenset[str] | None
    allowed_attr_keys: frozenset[str] | None
    allowed_agents: frozenset[str]
    allowed_room_config: frozenset[str]
    cors_origins: frozenset[str]
    private_keys: frozenset[str]
    """Keys that never go into a token (config ``private_keys``)."""
    service_attr_keys: frozenset[str] = frozenset()
    """Keys in LiveKit's namespaces clients may send (``allowed_service_attribute_keys``)."""


@dataclass
class AppState:
    config: ServerConfig
    issuer: TokenIssuer
    router: MetadataRouter | None
    sessions: SessionManager
    owns_sessions: bool
    limits: Limits
    owns_limits: bool
    authorize: AuthorizeHook | None
    keys: list[tuple[bytes, Principal]]
    anonymous: bool
    policy: Policy
    metrics: Metrics
    openapi: bytes
    operator_digest: bytes | None
    blocked: dict[str, float] = field(default_factory=dict)
    """Peers over the failed-auth limit, until when (this replica's cache of the limit)."""
    readiness_task: asyncio.Future[str | None] | None = None
    """The readiness check in flight (one for all concurrent probes)."""


STATE = web.AppKey("lk_metadata_state", AppState)


def digest(secret: str) -> bytes:
    """The SHA-256 a presented bearer key is compared by (``hmac.compare_digest``)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()
