"""The agent side: the only wing that imports ``livekit.agents``.

Importing anything under it registers the package's LiveKit ``Plugin``.
"""

from .plugin import register as _register

_register()
