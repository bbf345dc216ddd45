"""Admission: a request's rate buckets and its slot under ``max_sessions`` and its owner's share,
in one limits call per request."""

from __future__ import annotations

import contextlib

from ..errors import StoreError
from .config import Principal
from .limits import Admission, Bucket, Reservation
from .messages import EndpointRequest
from .refusals import share_full, store_full, store_unavailable, too_many
from .state import AppState

__all__ = [
    "ANONYMOUS",
    "admit",
    "check_admission",
    "make_reservation",
    "release_session",
    "session_owner",
]

ANONYMOUS = Principal(id="anonymous")
"""The principal of an unauthenticated caller (when the config allows them)."""


def session_owner(request: EndpointRequest, principal: Principal) -> str:
    """Whose share of the session cap a request uses: the principal; anonymous: the address."""
    if principal is ANONYMOUS:
        return f"anonymous@{request.client or '-'}"
    return "principal:" + principal.id


def make_reservation(state: AppState, slot: str, share: tuple[str, int]) -> Reservation:
    """One more live session under ``max_sessions`` and the owner's ``share``."""
    config = state.config
    return Reservation(slot, config.token_session_ttl(), config.max_sessions, share[0], share[1])


async def admit(
    state: AppState,
    buckets: list[Bucket],
    slot: str | None,
    share: tuple[str, int] = ("", 0),
) -> str:
    """The request's one limits call: its rate buckets and (``slot``) one more live session
    under the cap and the owner's ``share`` ``(owner, most live sessions)``.

    Returns the reserved slot, to release if minting fails; refusals: :func:`check_admission`.
    """
    reservation = None if slot is None else make_reservation(state, slot, share)
    if not buckets and reservation is None:
        return ""
    try:
        answer = await state.limits.admit(buckets, reservation)
    except StoreError:
        raise store_unavailable() from None
    check_admission(answer, state, reserved=slot is not None)
    return slot or ""


def check_admission(answer: Admission, state: AppState, *, reserved: bool) -> None:
    """The refusal of a request the limits did not admit (429 or 503); else count it."""
    if answer.wait > 0.0:
        raise too_many("rate_limited", "too many token requests", answer.wait)
    if answer.full:
        state.metrics.refuse("store_full")
        raise store_full()
    if answer.owner_full:
        state.metrics.refuse("store_share_full")
        raise share_full()
    if reserved:
        state.metrics.sessions_created += 1


async def release_session(slot: str, state: AppState, owner: str = "") -> None:
    with contextlib.suppress(StoreError):  # else the reservation expires on its own
        await state.limits.release_session(slot, owner)
