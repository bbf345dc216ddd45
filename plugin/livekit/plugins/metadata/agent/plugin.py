"""The LiveKit ``Plugin`` record of this package, registered when the agent wing is imported
(the rest of the package stays free of ``livekit.agents``)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import warnings

from jwt.warnings import InsecureKeyLengthWarning
from livekit.agents import Plugin

from ..log import logger
from ..version import __version__

__all__ = ["DEV_KEYS_NOTE", "MetadataPlugin", "quiet_dev_keys", "register"]

DEV_KEYS_NOTE = (
    "LIVEKIT_API_KEY / LIVEKIT_API_SECRET are the livekit-server --dev keys (devkey / secret): "
    "fine on this machine, never in production"
)
"""What a worker says, once, when it runs with the dev-server keys."""

_quieted = False
_SAID = "LK_METADATA_DEV_KEYS_SAID"

_PACKAGE = "livekit.plugins.metadata"


class MetadataPlugin(Plugin):
    def __init__(self) -> None:
        super().__init__(_PACKAGE, __version__, _PACKAGE, logger)


def quiet_dev_keys() -> bool:
    """With the dev-server keys in the environment, silence PyJWT's per-token warning and log
    :data:`DEV_KEYS_NOTE` once, in the worker's first process. True if they are in use."""
    global _quieted
    from ..tokens.keys import DEV_API_KEY, DEV_API_SECRET

    dev = (os.environ.get("LIVEKIT_API_KEY"), os.environ.get("LIVEKIT_API_SECRET")) == (
        DEV_API_KEY,
        DEV_API_SECRET,
    )
    if not dev or _quieted:
        return dev
    _quieted = True
    warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)
    if multiprocessing.parent_process() is None and not os.environ.get(_SAID):
        logger.warning(DEV_KEYS_NOTE)
        os.environ[_SAID] = "1"  # inherited by the job processes the worker starts
    return True


def register() -> bool:
    """Register the record unless it already is, or off the main thread (LiveKit refuses it
    there; the worker's own import does it). True if this call registered it."""
    quiet_dev_keys()
    if any(p.package == _PACKAGE for p in Plugin.registered_plugins):
        return False
    if threading.current_thread() is not threading.main_thread():
        logger.debug("plugin record not registered: imported off the main thread")
        return False
    Plugin.register_plugin(MetadataPlugin())
    return True
