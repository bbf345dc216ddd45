"""The agent side: the only wing that imports ``livekit.agents``."""
