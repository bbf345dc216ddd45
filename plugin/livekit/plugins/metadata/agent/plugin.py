"""The LiveKit ``Plugin`` record of this package, registered when the agent wing is imported.

LiveKit workers list their plugins through ``Plugin.registered_plugins``. The
package itself stays free of ``livekit.agents`` (so tokens and the CLI start at
once); everything under ``agent/`` runs inside a worker, so importing that wing
registers the record, once.
"""

from __future__ import annotations

import threading

from livekit.agents import Plugin

from ..log import logger
from ..version import __version__

__all__ = ["MetadataPlugin", "register"]

_PACKAGE = "livekit.plugins.metadata"


class MetadataPlugin(Plugin):
    """The LiveKit plugin record for ``livekit-plugins-metadata``."""

    def __init__(self) -> None:
        super().__init__(_PACKAGE, __version__, _PACKAGE, logger)


def register() -> bool:
    """Register the record unless it already is; True if this call registered it.

    LiveKit only accepts registrations on the main thread; an import from
    another thread (a thread-executor job) leaves it to the worker's own import
    and says so in the debug log instead of failing the job.
    """
    if any(p.package == _PACKAGE for p in Plugin.registered_plugins):
        return False
    if threading.current_thread() is not threading.main_thread():
        logger.debug("plugin record not registered: imported off the main thread")
        return False
    Plugin.register_plugin(MetadataPlugin())
    return True
