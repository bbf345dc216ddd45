"""The failed-authentication limit (``auth_failure_limit`` per client address), shared by
``/token`` and the operator endpoints: once over it, 429 ``auth_rate_limited`` on all."""

from __future__ import annotations

import time

from ..errors import StoreError
from .refusals import store_unavailable, too_many
from .state import AppState

__all__ = ["failed_authentication", "refuse_if_blocked"]

_MAX_BLOCKED_PEERS = 10_000


def refuse_if_blocked(peer: str, state: AppState) -> None:
    """A 429 while ``peer`` is over the failed-authentication limit (this replica's cache)."""
    blocked_until = state.blocked.get(peer)
    if blocked_until is None:
        return
    wait = blocked_until - time.monotonic()
    if wait > 0:
        state.metrics.refuse("auth_limited")
        raise too_many("auth_rate_limited", "too many failed authentications", wait)
    del state.blocked[peer]


async def failed_authentication(peer: str, state: AppState) -> None:
    """Count a failed attempt; over the limit, the peer gets 429 until its bucket refills."""
    state.metrics.refuse("failed_auth")
    limit = state.config.auth_failure_limit
    try:
        wait = await state.limits.hit("authfail:" + peer, limit.rate, limit.burst)
    except StoreError:
        raise store_unavailable() from None
    if wait > 0.0:
        blocked = state.blocked
        if len(blocked) >= _MAX_BLOCKED_PEERS:
            blocked.pop(next(iter(blocked)))
        blocked[peer] = time.monotonic() + wait
        state.metrics.refuse("auth_limited")
        raise too_many("auth_rate_limited", "too many failed authentications", wait)
