"""Provision: calls to LiveKit's server API built from the routing rules.

Agent dispatch into existing rooms (:mod:`.dispatch`), SIP dispatch rules kept in
sync with the rules (:mod:`.sip`), outbound calls (:mod:`.outbound`) and a simulated
inbound call (:mod:`.sip_call`). Routing never imports this wing.
"""
