"""The package logger: it logs keys, sizes, hashes and reasons, never values or secrets."""

from __future__ import annotations

import logging

__all__ = ["logger"]

logger = logging.getLogger("livekit.plugins.metadata")
