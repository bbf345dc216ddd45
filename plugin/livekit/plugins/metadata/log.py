"""The package logger.

Nothing this package logs contains a metadata value, a token or a secret: only
keys, sizes, hashes and reasons.
"""

from __future__ import annotations

import logging

__all__ = ["logger"]

logger = logging.getLogger("livekit.plugins.metadata")
