"""Tokens: LiveKit AccessTokens that carry metadata and the agent dispatch."""
