"""Routing: rules that pick the agent from metadata and participant attributes."""
