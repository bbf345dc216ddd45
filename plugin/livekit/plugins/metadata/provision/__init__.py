"""Calls to LiveKit's server API built from the routing rules (dispatch into existing rooms,
SIP dispatch rules, outbound calls, a simulated inbound call); routing never imports this."""
