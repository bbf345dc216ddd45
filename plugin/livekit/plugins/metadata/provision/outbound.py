"""Outbound calls routed by the same rules as inbound ones (README: "Routing phone calls").

The rules see the attributes the SIP participant will carry (outbound, ``sip.phoneNumber``
is the callee), so a rule for a number or a country prefix chooses the agent whichever way
the call goes. Sending the requests needs LiveKit's SIP service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from livekit import api

from ..codec import DEFAULT_MAX_METADATA_BYTES, PLUGIN_ATTRIBUTE_PREFIX, validate_attributes
from ..routing.phone import normalize_number
from ..routing.route import Route
from ..routing.router import MetadataRouter
from .dispatch import dispatch_request
from .sip import CALLED, CALLER

__all__ = ["ROUTE_ATTRIBUTE", "RULE_ATTRIBUTE", "OutboundCall", "outbound_call"]

ROUTE_ATTRIBUTE = PLUGIN_ATTRIBUTE_PREFIX + "route"  # on the SIP participant: the agent
RULE_ATTRIBUTE = PLUGIN_ATTRIBUTE_PREFIX + "rule"  # on the SIP participant: the rule


@dataclass(frozen=True)
class OutboundCall:
    """The requests for one outbound call (``dispatch`` the agent, dial the ``participant``)
    and the ``route`` they came from (never a reject route)."""

    route: Route
    dispatch: api.CreateAgentDispatchRequest
    participant: api.CreateSIPParticipantRequest


def _e164(number: str, region: str | None, what: str) -> str:
    e164 = normalize_number(number, region)
    if e164 is None:
        raise ValueError(f"{what} is not a phone number")
    return e164


def outbound_call(
    router: MetadataRouter,
    metadata: Mapping[str, Any],
    *,
    room: str,
    trunk_id: str,
    call_to: str,
    from_number: str | None = None,
    attributes: Mapping[str, str] | None = None,
    participant_identity: str | None = None,
    participant_name: str = "",
    participant_attributes: Mapping[str, str] | None = None,
    wait_until_answered: bool = False,
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
) -> OutboundCall:
    """Route an outbound call and build its agent dispatch and ``CreateSIPParticipantRequest``.

    ``call_to`` (any common form, sent in E.164) and ``from_number`` (the trunk's
    ``sip_number``) are read with the rules' ``phone_region``; ``attributes`` add to them
    for ``when_attributes``. The participant (identity default ``sip-<E.164>``) carries
    ``participant_attributes`` plus :data:`ROUTE_ATTRIBUTE` and :data:`RULE_ATTRIBUTE`.

    Raises:
        ValueError: A number is not a phone number; ``room`` or ``trunk_id`` is empty.
        NoRouteMatched, RoutingError (a reject route), MetadataError, InvalidAttributes.
    """
    if not isinstance(trunk_id, str) or not trunk_id:
        raise ValueError("trunk_id must be a non-empty string")
    region = router.rule_set.phone_region
    callee = _e164(call_to, region, "call_to")
    trunk_number = _e164(from_number, region, "from_number") if from_number else None
    routing_attrs = {**(attributes or {}), CALLER: callee}
    if trunk_number:
        routing_attrs[CALLED] = trunk_number
    route = router.route(metadata, attributes=routing_attrs)
    dispatch = dispatch_request(room, route, max_metadata_bytes=max_metadata_bytes)
    attrs = validate_attributes(
        {
            **(participant_attributes or {}),
            ROUTE_ATTRIBUTE: route.agent,
            RULE_ATTRIBUTE: route.label,
        }
    )
    participant = api.CreateSIPParticipantRequest(
        sip_trunk_id=trunk_id,
        sip_call_to=callee,
        sip_number=trunk_number or "",
        room_name=room,
        participant_identity=participant_identity or f"sip-{callee}",
        participant_name=participant_name,
        participant_attributes=attrs,
        wait_until_answered=wait_until_answered,
    )
    return OutboundCall(route, dispatch, participant)
